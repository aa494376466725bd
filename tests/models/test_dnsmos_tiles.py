"""DNSMOS in time tiles (models/dnsmos_tiles.py) gives the published graph's scores."""

from __future__ import annotations

import pathlib
import types
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest

from models import dnsmos, dnsmos_tiles, resample
from models.screener import Screener


@pytest.mark.parametrize("rows_per_tile", [4, dnsmos_tiles.ROWS_PER_TILE])
@pytest.mark.parametrize("frames", [8, 64, 223, 224, 500, 900, 1801])
def test_tiles_cover_every_row_once_with_context(frames: int, rows_per_tile: int) -> None:
    rows = frames // dnsmos_tiles.STRIDE
    covered: list[int] = []
    for start, end, k0, k1 in dnsmos_tiles.tiles(frames, rows_per_tile):
        assert start % dnsmos_tiles.STRIDE == 0 and 0 <= start < end <= frames
        first, last = start // dnsmos_tiles.STRIDE + k0, start // dnsmos_tiles.STRIDE + k1
        covered.extend(range(first, last))
        # every kept row has 18 frames of real context on both sides, or the window's edge
        assert first * dnsmos_tiles.STRIDE - start >= 18 or start == 0
        assert end - last * dnsmos_tiles.STRIDE >= 18 or end == frames
        assert k1 <= (end - start) // dnsmos_tiles.STRIDE
    assert covered == list(range(rows))


def test_tiled_scores_equal_the_published_graph(
    full_screener: Screener, speech: Callable[[str], npt.NDArray[np.float32]], material: types.SimpleNamespace
) -> None:
    session = full_screener.session("dnsmos")
    assert dnsmos.tiled_sessions(session) is not None
    en, zh = speech("en"), speech("zh")
    n = min(len(en), len(zh))
    take = np.stack([material.mix(en[:n], 15, "pink"), material.mix(zh[:n], 5, "white")], axis=1)
    audio16 = resample.to_16k(np.tile(take, (8, 1)).astype(np.float32), material.rate)  # > 2 windows
    tiled = dnsmos.score(session, audio16)
    whole = ort.InferenceSession(str(session.path), providers=["CPUExecutionProvider"])
    for ch, scores in enumerate(tiled):
        batch = dnsmos.windows(np.clip(audio16[:, ch], -1, 1))
        assert batch.shape[0] >= 2
        (raw,) = whole.run(None, {whole.get_inputs()[0].name: batch})
        post = session.manifest.postprocessing
        expected = [float(np.mean(np.polyval(post[k], raw[:, i]))) for i, k in enumerate(("sig", "bak", "ovrl"))]
        assert [scores.sig, scores.bak, scores.ovrl] == pytest.approx(expected, abs=1e-4)


def test_a_graph_without_the_structure_is_refused(model_dir: pathlib.Path) -> None:
    with pytest.raises(dnsmos_tiles.TileGraphError, match="ReduceMax"):
        dnsmos_tiles.build(model_dir / "centerface.onnx", "dnsmos-trunk")
