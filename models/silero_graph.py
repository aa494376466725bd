"""Silero VAD rebuilt as one sequence graph: every chunk of a take in a single onnxruntime call.

Why: the published graph scores one 32 ms chunk per call. A 10 s take is 313 calls, and profiling
showed two costs, both avoidable: per-call executor overhead (the graph is a tree of ``If``
branches with ~130 nodes) and convolutions that onnxruntime runs as one small GEMM per batch
item with 1-4 output columns. Only the LSTM depends on the previous chunk; the STFT and the
convolutional encoder see one 576-sample frame each and can run for all chunks at once, and the
ONNX ``LSTM`` op runs a whole sequence inside one kernel.

The rebuilt graph reads the model's own weights from the verified file and computes the same
function, with every convolution written as a matrix product over all frames (large GEMMs):

    frames [T, B, 576] → reflect-pad 64 → 256-sample windows, hop 128 → STFT basis (MatMul)
    → magnitude → encoder convs (im2col MatMul + ReLU) → LSTM over T → ReLU → linear → sigmoid
    → probs [T, B], plus the final (h, c) state

``build_sequence_model`` raises ``SequenceGraphError`` when the file does not have the structure
it expects (a different Silero generation); ``models.vad`` compares the two graphs on a probe
signal. Either failure makes ``models.vad`` fall back to chunk-by-chunk calls. The daemon runs
this module in a child process (``models.graph_build``), never importing onnx itself.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.errors import ModelLoadError

VAD_RATE = 16000
FRAME = 576  # 64 samples of context + 512 new samples
STFT_RIGHT_PAD = 64  # the model reflect-pads each frame on the right before its STFT

F32 = npt.NDArray[np.float32]


class SequenceGraphError(ModelLoadError):
    """The Silero file cannot be rebuilt as a sequence graph (unknown structure or mismatch)."""


def _subgraphs(node: onnx.NodeProto) -> Iterator[tuple[str, onnx.GraphProto]]:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.name, attr.g


def _walk(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for _, sub in _subgraphs(node):
            yield from _walk(sub)


def _branch_16k(model: onnx.ModelProto) -> onnx.GraphProto:
    """The branch of the top-level ``If(sr == K)`` that runs for 16 kHz input."""
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node if n.op_type == "Constant"}
    for node in model.graph.node:
        if node.op_type != "Equal" or "sr" not in node.input:
            continue
        other = [i for i in node.input if i != "sr"]
        if len(other) != 1 or other[0] not in consts:
            continue
        rate = int(consts[other[0]])
        for branch_if in model.graph.node:
            if branch_if.op_type == "If" and branch_if.input[0] == node.output[0]:
                wanted = "then_branch" if rate == VAD_RATE else "else_branch"
                return dict(_subgraphs(branch_if))[wanted]
    raise SequenceGraphError("no If(sr == ...) node at the top of the graph")


class _Weights:
    """The named tensors and conv attributes of the 16 kHz branch."""

    def __init__(self, branch: onnx.GraphProto) -> None:
        self.tensors: dict[str, F32] = {}
        for node in _walk(branch):
            if node.op_type == "Constant" and node.attribute and node.attribute[0].type == onnx.AttributeProto.TENSOR:
                # names look like 'If_0_then_branch__Inline_0__encoder.0.reparam_conv.weight'
                key = node.output[0].rsplit("__", 1)[-1]
                self.tensors[key] = np.asarray(numpy_helper.to_array(node.attribute[0].t))
        self.convs: dict[str, dict[str, list[int]]] = {}
        for node in _walk(branch):
            if node.op_type == "Conv" and len(node.input) > 1:
                key = node.input[1].rsplit("__", 1)[-1]
                attrs: dict[str, list[int]] = {}
                for a in node.attribute:
                    if a.type == onnx.AttributeProto.INTS:
                        attrs[a.name] = list(a.ints)
                    elif a.type == onnx.AttributeProto.INT:
                        attrs[a.name] = [a.i]
                self.convs[key] = attrs

    def get(self, key: str) -> F32:
        if key not in self.tensors:
            raise SequenceGraphError(f"tensor {key!r} not found in the 16 kHz branch")
        return self.tensors[key].astype(np.float32)

    def conv(self, key: str) -> tuple[int, int]:
        """(stride, symmetric pad) of the Conv that uses weight ``key``."""
        attrs = self.convs.get(key)
        if attrs is None:
            raise SequenceGraphError(f"no Conv node uses {key!r}")
        pads = attrs.get("pads", [0, 0])
        if len(pads) != 2 or pads[0] != pads[1] or attrs.get("dilations", [1]) != [1] or attrs.get("group", [1]) != [1]:
            raise SequenceGraphError(f"conv {key!r} has unsupported attributes {attrs}")
        return attrs.get("strides", [1])[0], pads[0]


class _Builder:
    """Appends nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, value: npt.NDArray[np.generic], hint: str = "c") -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def ints(self, *values: int) -> str:
        return self.const(np.array(values, dtype=np.int64), "i")

    def op(
        self, op_type: str, inputs: list[str], outputs: int = 1, out: list[str] | None = None, **attrs: Any
    ) -> list[str]:
        names = out or [self.name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, **attrs))
        return names

    def one(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        return self.op(op_type, inputs, **attrs)[0]

    def slice(self, x: str, start: int, end: int, axis: int, step: int = 1) -> str:
        return self.one("Slice", [x, self.ints(start), self.ints(end), self.ints(axis), self.ints(step)])

    def conv_matmul(self, x: str, length: int, weight: F32, bias: F32, stride: int, pad: int) -> tuple[str, int]:
        """1-D conv + ReLU on ``x`` laid out [N, length, C_in] as im2col MatMul → [N, L_out, C_out]."""
        c_out, c_in, k = weight.shape
        if pad:
            x = self.one("Pad", [x, self.ints(0, pad, 0, 0, pad, 0)])
        out_len = (length + 2 * pad - k) // stride + 1
        if out_len < 1:
            raise SequenceGraphError(f"conv over {length} steps with kernel {k} leaves no output")
        taps = [self.slice(x, j, j + stride * (out_len - 1) + 1, axis=1, step=stride) for j in range(k)]
        stacked = self.one("Concat", taps, axis=2) if k > 1 else taps[0]
        matrix = weight.transpose(2, 1, 0).reshape(k * c_in, c_out)  # row j*C_in + c ↔ weight[:, c, j]
        y = self.one("Add", [self.one("MatMul", [stacked, self.const(matrix, "w")]), self.const(bias, "b")])
        return self.one("Relu", [y]), out_len


def build_sequence_model(path: pathlib.Path) -> bytes:
    """The sequence graph for the Silero VAD file at ``path`` (serialized ONNX)."""
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and others
        raise SequenceGraphError(f"cannot parse {path.name}: {exc}") from exc
    w = _Weights(_branch_16k(model))
    b = _Builder()

    # STFT as windows × basis: filter 256, hop 128 over the reflect-padded 640-sample frame
    basis = w.get("stft.forward_basis_buffer")  # [2 * bins, 1, filter]
    stride, _ = w.conv("stft.forward_basis_buffer")
    filt = basis.shape[2]
    padded_len = FRAME + STFT_RIGHT_PAD
    if filt % stride or padded_len % stride or basis.shape[0] % 2:
        raise SequenceGraphError(f"STFT filter {filt} / hop {stride} do not tile a {padded_len}-sample frame")
    blocks, per_window = padded_len // stride, filt // stride
    windows = blocks - per_window + 1
    flat = b.one("Reshape", ["frames", b.ints(-1, FRAME)])
    padded = b.one("Pad", [flat, b.ints(0, 0, 0, STFT_RIGHT_PAD)], mode="reflect")
    tiles = b.one("Reshape", [padded, b.ints(-1, blocks, stride)])
    shifted = [b.slice(tiles, j, j + windows, axis=1) for j in range(per_window)]
    frames = b.one("Concat", shifted, axis=2)  # [N, windows, filter]
    spectrum = b.one("MatMul", [frames, b.const(basis[:, 0, :].T.copy(), "basis")])
    bins = basis.shape[0] // 2
    real, imag = b.slice(spectrum, 0, bins, axis=2), b.slice(spectrum, bins, 2 * bins, axis=2)
    power = b.one("Add", [b.one("Mul", [real, real]), b.one("Mul", [imag, imag])])
    x, length = b.one("Sqrt", [power]), windows

    layer = 0
    while f"encoder.{layer}.reparam_conv.weight" in w.tensors:
        key = f"encoder.{layer}.reparam_conv"
        stride, pad = w.conv(f"{key}.weight")
        x, length = b.conv_matmul(x, length, w.get(f"{key}.weight"), w.get(f"{key}.bias"), stride, pad)
        layer += 1
    if layer == 0 or length != 1:
        raise SequenceGraphError(f"expected an encoder that reduces a frame to 1 step, got {layer} layers, {length}")

    # LSTM cell weights (PyTorch gate order i, f, g, o) → ONNX LSTM (i, o, f, c)
    w_ih, w_hh = w.get("decoder.rnn.weight_ih"), w.get("decoder.rnn.weight_hh")
    hidden = w_hh.shape[1]
    order = np.r_[0:hidden, 3 * hidden : 4 * hidden, hidden : 3 * hidden]
    lstm_b = np.concatenate([w.get("decoder.rnn.bias_ih")[order], w.get("decoder.rnn.bias_hh")[order]])[None]
    seq_shape = b.one("Concat", [b.slice(b.one("Shape", ["frames"]), 0, 2, axis=0), b.ints(hidden)], axis=0)
    features = b.one("Reshape", [x, seq_shape])  # [T, B, hidden]
    y, _, _ = b.op(
        "LSTM",
        [
            features,
            b.const(w_ih[order][None], "W"),
            b.const(w_hh[order][None], "R"),
            b.const(lstm_b, "B"),
            "",
            "h0",
            "c0",
        ],
        out=[b.name("y"), "hN", "cN"],
        hidden_size=hidden,
    )
    dec_w, dec_b = w.get("decoder.decoder.2.weight"), w.get("decoder.decoder.2.bias")  # [1, hidden, 1], [1]
    relu = b.one("Relu", [b.one("Squeeze", [y, b.ints(1)])])
    logits = b.one("Add", [b.one("MatMul", [relu, b.const(dec_w[:, :, 0].T.copy(), "dec")]), b.const(dec_b, "decb")])
    b.op("Squeeze", [b.one("Sigmoid", [logits]), b.ints(2)], out=["probs"])

    graph = helper.make_graph(
        b.nodes,
        "silero_vad_sequence",
        [
            helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["T", "B", FRAME]),
            helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, "B", hidden]),
            helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, "B", hidden]),
        ],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["T", "B"]),
            helper.make_tensor_value_info("hN", TensorProto.FLOAT, [1, "B", hidden]),
            helper.make_tensor_value_info("cN", TensorProto.FLOAT, [1, "B", hidden]),
        ],
        b.inits,
    )
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=16)
    built = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", max(opset, 14))], ir_version=model.ir_version
    )
    built.producer_name = "fieldcap.silero_graph"
    try:
        onnx.checker.check_model(built)
    except onnx.checker.ValidationError as exc:
        raise SequenceGraphError(f"rebuilt graph is invalid: {exc}") from exc
    return bytes(built.SerializeToString())
