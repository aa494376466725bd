"""Real-time factor of the shipped audio ONNX models run bare with onnxruntime on this CPU
(Silero VAD from the silero-vad wheel, DNSMOS P.835 from the speechmos wheel): the floor
the project's audio pre-annotation and QC path is measured against. Model files are
extracted from the wheels with `pip download --no-deps` (see README.md in this folder)."""
import sys, time, numpy as np, onnxruntime as ort
d = sys.argv[1] if len(sys.argv) > 1 else ".cache/baseline-models"
so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
rng = np.random.default_rng(0)
secs = 60
audio16 = (rng.standard_normal(16000 * secs) * 0.05).astype(np.float32)

vad = ort.InferenceSession(f"{d}/silero_vad.onnx", so, providers=["CPUExecutionProvider"])
state = np.zeros((2, 1, 128), np.float32); sr = np.array(16000, np.int64)
ctx = np.zeros(64, np.float32)
t = time.perf_counter()
for i in range(0, len(audio16) - 512 + 1, 512):
    chunk = np.concatenate([ctx, audio16[i:i + 512]])[None, :]
    out, state = vad.run(None, {"input": chunk, "state": state, "sr": sr})
    ctx = chunk[0, -64:]
el = time.perf_counter() - t
print(f"silero-vad onnx, 1 thread, 32 ms chunks: {secs}s audio in {el:.2f}s -> RTF {el/secs:.4f} ({secs/el:.0f}x real time)")

mos = ort.InferenceSession(f"{d}/sig_bak_ovr.onnx", so, providers=["CPUExecutionProvider"])
n = 144160; hop = 16000; wins = [audio16[i:i + n] for i in range(0, len(audio16) - n + 1, hop)]
t = time.perf_counter()
for w in wins: mos.run(None, {"input_1": w[None, :]})
el = time.perf_counter() - t
print(f"dnsmos sig_bak_ovr onnx, 1 thread, 9.01 s windows hop 1 s: {secs}s audio in {el:.2f}s -> RTF {el/secs:.4f}")
t = time.perf_counter()
wins2 = [audio16[i:i + n] for i in range(0, len(audio16) - n + 1, n)]
for w in wins2: mos.run(None, {"input_1": w[None, :]})
el = time.perf_counter() - t
print(f"dnsmos, non-overlapping windows: {secs}s audio in {el:.2f}s -> RTF {el/secs:.4f}")
