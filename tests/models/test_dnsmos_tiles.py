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


def _rss_mb() -> float:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_the_trunk_arena_settles(full_screener: Screener) -> None:
    """The trunk keeps its activations in onnxruntime's arena (no page faults per tile); scoring
    more windows, of other lengths and levels, must not grow it."""
    parts = dnsmos.tiled_sessions(full_screener.session("dnsmos"))
    assert parts is not None
    features, trunk, _head = parts
    options = trunk.session.get_session_options()
    assert options.enable_cpu_mem_arena and not options.enable_mem_pattern
    assert not features.session.get_session_options().enable_cpu_mem_arena  # the runner's default elsewhere
    rng = np.random.default_rng(7)

    def some_audio(seconds: float) -> npt.NDArray[np.float32]:
        return (rng.standard_normal((int(seconds * 16000), 1)) * rng.uniform(0.001, 0.5)).astype(np.float32)

    dnsmos.score(full_screener.session("dnsmos"), some_audio(20))  # the arena grows to its working size
    settled = _rss_mb()
    for seconds in (9.5, 30, 4, 18, 27, 2, 45):
        dnsmos.score(full_screener.session("dnsmos"), some_audio(seconds))
    assert _rss_mb() - settled < 6, f"RSS grew from {settled:.0f} MB to {_rss_mb():.0f} MB"


def test_the_tile_rows_setting_reaches_scoring_and_changes_no_score(
    model_dir: pathlib.Path, speech: Callable[[str], npt.NDArray[np.float32]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``[qc] dnsmos_tile_rows`` trades memory for CPU only: the tiles it asks for are the ones run,
    and the scores are those of the default tiles."""
    from models.settings import QcSettings

    take = speech("en")[:, None]
    default = Screener(model_dir=model_dir).audio(take, 48000).metrics
    seen: list[int] = []
    pooled_max = dnsmos_tiles.pooled_max

    def spy(
        run: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]],
        spectrogram: npt.NDArray[np.float32],
        rows: int = 0,
    ) -> npt.NDArray[np.float32]:
        seen.append(rows)
        return pooled_max(run, spectrogram, rows)

    monkeypatch.setattr(dnsmos_tiles, "pooled_max", spy)
    wide = Screener(QcSettings(dnsmos_tile_rows=19), model_dir=model_dir).audio(take, 48000).metrics
    assert seen and set(seen) == {19}
    for key in ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak"):
        assert wide[key] == pytest.approx(default[key], abs=2e-3), key
