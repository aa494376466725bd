"""DNSMOS P.835 run in time tiles: the same scores in a third of the activation memory.

Why: the published graph turns one 9 s window into a 900 x 161 log-power spectrogram and runs
four 3x3 convolutions at full resolution, 128 and 64 channels wide. The live activations reach
~110 MB per window, which alone is almost half the agent's 250 MB RSS budget. The graph ends in a
global *max* pool, and max is decomposable: the trunk (convolutions and 2x2 max pools) can run
on overlapping slices of the spectrogram's time axis, each slice cropped to the rows whose
receptive field it holds completely, and the max over the slices' maxima is the max over the
whole map. So the file is split into three graphs that share its weights:

    features  audio [N, 144160] → spectrogram [N, 1, 900, 161]   (small: 0.6 MB per window)
    trunk     spectrogram rows [N, 1, T, 161] → map [N, C, T/8, F]   (run per tile)
    head      pooled [N, C] → raw scores [N, 3]

Tiling is exact, not an approximation: a tile starts on a multiple of 8 frames (the three
pools' combined stride), so its pooling grid is the full map's grid, and carries ``HALO`` frames
of context on each side (the trunk's receptive field reaches 18 frames beyond an output row's 8
frames), so every kept row sees the same inputs as in the full graph. Tiles are clipped at the
window's ends, where the trunk zero-pads exactly as the full graph does. tests/models compare
the tiled scores with the published graph's.

``build`` raises ``TileGraphError`` when the file does not have that structure (another DNSMOS
generation); ``models.dnsmos`` then runs the published graph whole. The daemon calls ``build`` in
a child process (``models.graph_build``), so onnx is imported only there.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from models.errors import ModelLoadError

if TYPE_CHECKING:
    import onnx

STRIDE = 8  # three 2x2 max pools
HALO = 24  # frames of context per side: the receptive field needs 18, rounded up to STRIDE
# Output rows per tile (the 112-row map of a 9 s window), the default of ``[qc] dnsmos_tile_rows``.
# Smaller tiles hold less but recompute more halo. ``models.dnsmos`` keeps the trunk's activations in
# onnxruntime's arena, which grows in regions of 1, 2, 4, 8, 16 MB: up to 6 rows (19 tiles of <= 96
# frames) it settles at ~15 MB for ~1.8x the whole graph's CPU; 8 to 19 rows take the next region
# (~32 MB), 19 rows (6 tiles) for ~1.2x; 23 rows one more. 6 keeps the agent's peak RSS clear of its
# 250 MB budget on every machine we ran the soak on (bench/bench_qc.py, bench/soak.py, BENCHMARKS.md).
ROWS_PER_TILE = 6
VARIANTS = ("dnsmos-features", "dnsmos-trunk", "dnsmos-head")

F32 = npt.NDArray[np.float32]


class TileGraphError(ModelLoadError):
    """The DNSMOS file cannot be split into features / trunk / head graphs."""


def _boundaries(model: onnx.ModelProto) -> tuple[str, str, str, str]:
    """(audio input, spectrogram, trunk map, pooled) tensor names, found by structure: the
    spectrogram feeds the first 3x3 Conv, the pooled vector comes out of the only ReduceMax,
    whose input is (a transpose of) the trunk map."""
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    convs = [
        n
        for n in graph.node
        if n.op_type == "Conv" and any(a.name == "kernel_shape" and list(a.ints) == [3, 3] for a in n.attribute)
    ]
    reduces = [n for n in graph.node if n.op_type == "ReduceMax"]
    if not convs or len(reduces) != 1 or len(graph.input) != 1:
        raise TileGraphError("expected 3x3 convolutions ending in one global ReduceMax")
    spectrogram = convs[0].input[0]
    pooled = reduces[0].output[0]
    trunk_map = reduces[0].input[0]
    before = producers.get(trunk_map)
    if before is not None and before.op_type == "Transpose":  # NCHW → NHWC for the reduce
        perm = [list(a.ints) for a in before.attribute if a.name == "perm"]
        if perm != [[0, 2, 3, 1]]:
            raise TileGraphError(f"unexpected transpose {perm} before the global max pool")
        trunk_map = before.input[0]
    elif any(a.name == "axes" and list(a.ints) != [2, 3] for a in reduces[0].attribute):
        raise TileGraphError("the global max pool does not reduce an NCHW map over H and W")
    allowed = {"Conv", "Relu", "MaxPool"}
    trunk_ops = _ops_between(producers, spectrogram, trunk_map)
    if not trunk_ops <= allowed:
        raise TileGraphError(f"trunk has ops {sorted(trunk_ops - allowed)} that tiling cannot split")
    return graph.input[0].name, spectrogram, trunk_map, pooled


def _ops_between(producers: dict[str, onnx.NodeProto], start: str, end: str) -> set[str]:
    ops: set[str] = set()
    stack, seen = [end], set()
    while stack:
        name = stack.pop()
        if name == start or name in seen or name not in producers:
            continue
        seen.add(name)
        node = producers[name]
        ops.add(node.op_type)
        stack.extend(i for i in node.input if i)
    return ops


def _extract(path: pathlib.Path, variant: str) -> onnx.ModelProto:
    import onnx.helper  # only the graph-building child process loads onnx
    import onnx.utils

    model = onnx.load(str(path))
    audio, spectrogram, trunk_map, pooled = _boundaries(model)
    ends = {
        "dnsmos-features": ([audio], [spectrogram]),
        "dnsmos-trunk": ([spectrogram], [trunk_map]),
        "dnsmos-head": ([pooled], [o.name for o in model.graph.output]),
    }[variant]
    known = {v.name for v in model.graph.value_info} | {v.name for v in model.graph.input}
    for name, rank in ((spectrogram, 4), (trunk_map, 4), (pooled, 2)):  # inference misses some
        if name not in known:
            model.graph.value_info.append(
                onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [None] * rank)
            )
    try:
        part = onnx.utils.Extractor(model).extract_model(*ends)
    except Exception as exc:  # onnx raises several exception types for a graph it cannot cut
        raise TileGraphError(f"cannot extract {variant}: {exc}") from exc
    # every dim free: the trunk takes any number of frames, the head any batch
    for value in list(part.graph.input) + list(part.graph.output):
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            dim.dim_param = f"{value.name}_d{axis}"
    del part.graph.value_info[:]
    part.producer_name = "fieldcap dnsmos_tiles"
    return part


def build(path: pathlib.Path, variant: str) -> bytes:
    """Serialized ``variant`` graph (one of ``VARIANTS``) cut from the DNSMOS file at ``path``."""
    import onnx.checker  # only the graph-building child process loads onnx

    part = _extract(path, variant)
    try:
        onnx.checker.check_model(part)
    except onnx.checker.ValidationError as exc:
        raise TileGraphError(f"{variant} is not a valid graph: {exc}") from exc
    return bytes(part.SerializeToString())


def tiles(frames: int, rows_per_tile: int = ROWS_PER_TILE) -> list[tuple[int, int, int, int]]:
    """(first frame, last frame + 1, first kept row, last kept row + 1) per tile, rows relative
    to the tile's own output, covering the ``frames // STRIDE`` rows of the full map once."""
    rows = frames // STRIDE
    plan = []
    for r0 in range(0, rows, rows_per_tile):
        r1 = min(rows, r0 + rows_per_tile)
        start = max(0, r0 * STRIDE - HALO)
        end = frames if r1 == rows else min(frames, r1 * STRIDE + HALO)
        plan.append((start, end, r0 - start // STRIDE, r1 - start // STRIDE))
    return plan


def pooled_max(run_trunk: Callable[[F32], F32], spectrogram: F32, rows_per_tile: int = ROWS_PER_TILE) -> F32:
    """Global max of the trunk map over ``spectrogram`` [N, 1, T, F], tile by tile;
    ``run_trunk`` maps a [N, 1, t, F] slice to its [N, C, t // 8, F'] map."""
    best: F32 | None = None
    for start, end, k0, k1 in tiles(spectrogram.shape[2], rows_per_tile):
        part = np.ascontiguousarray(spectrogram[:, :, start:end, :])
        fmap = run_trunk(part)[:, :, k0:k1, :]
        tile_max = fmap.max(axis=(2, 3))
        best = tile_max if best is None else np.maximum(best, tile_max)
    if best is None:
        raise ValueError("spectrogram has fewer frames than one pooled row")
    return best.astype(np.float32, copy=False)
