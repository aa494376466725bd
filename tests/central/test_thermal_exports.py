"""Thermal frames survive every export: the pixel values read back with each format's own reader
equal the ones the device captured (the 16-bit PNG blob in the central store, decoded by OpenCV)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from .conftest import export, sql


def captured(demo: Path) -> dict[str, NDArray[np.uint16]]:
    """Every thermal capture's pixels by sample key, read straight from the blob tree."""
    rows = sql(
        demo,
        "SELECT device || '/' || record_id, blob_sha256 FROM records WHERE kind = 'capture'"
        " AND json_extract(body, '$.body.modality') = 'thermal'",
    )
    out = {}
    for key, sha in rows:
        img = cv2.imread(str(demo / "blobs" / "sha256" / sha[:2] / sha[2:4] / sha), cv2.IMREAD_UNCHANGED)
        assert img is not None and img.dtype == np.uint16 and img.ndim == 2
        out[key] = img
    assert out, "the demo records a sim-thermal stream"
    return out


def test_webdataset_carries_exact_npy_and_a_false_colour_preview(demo: Path, tmp_path: Path) -> None:
    wds = pytest.importorskip("webdataset")
    frames = captured(demo)
    out = tmp_path / "wds"
    export(demo, out, "webdataset")
    seen = 0
    for s in wds.WebDataset(sorted(str(p) for p in out.glob("shards/*.tar")), shardshuffle=False):
        if s["__key__"] not in frames:
            continue
        seen += 1
        raw = np.load(io.BytesIO(s["npy"]), allow_pickle=False)
        assert raw.dtype == np.dtype("<u2")
        np.testing.assert_array_equal(raw, frames[s["__key__"]])
        preview = cv2.imdecode(np.frombuffer(s["preview.png"], np.uint8), cv2.IMREAD_UNCHANGED)
        assert preview.dtype == np.uint8 and preview.shape == (*raw.shape, 3)
        hot = np.unravel_index(int(np.argmax(raw)), raw.shape)
        cold = np.unravel_index(int(np.argmin(raw)), raw.shape)
        # inferno: the hottest pixel is near-white yellow, the coldest near-black
        assert int(preview[hot].sum()) > 500 and int(preview[cold].sum()) < 60
        meta = json.loads(s["json"])
        assert meta["media"] == f"{s['__key__']}.npy" and meta["preview"] == f"{s['__key__']}.preview.png"
        assert "png" not in s  # no 16-bit PNG that decoders would squash to 8 bits
    assert seen == len(frames)


def test_label_studio_shows_a_preview_and_links_the_raw_frame(demo: Path, tmp_path: Path) -> None:
    frames = captured(demo)
    out = tmp_path / "ls"
    prefix = "/data/local-files/?d="
    export(demo, out, "labelstudio")
    tasks = json.loads((out / "labelstudio" / "image" / "tasks.json").read_text())
    thermal = {t["data"]["fieldcap_key"]: t["data"] for t in tasks if t["data"]["modality"] == "thermal"}
    assert set(thermal) == set(frames)
    for key, data in thermal.items():
        shown = out / data["image"].removeprefix(prefix)
        raw = out / data["thermal_raw"].removeprefix(prefix)
        assert shown.name.endswith(".preview.png") and raw.suffix == ".png"
        np.testing.assert_array_equal(cv2.imread(str(raw), cv2.IMREAD_UNCHANGED), frames[key])
        preview = cv2.imread(str(shown), cv2.IMREAD_UNCHANGED)
        assert preview.dtype == np.uint8 and preview.shape == (*frames[key].shape, 3)


def test_hugging_face_thermal_config_decodes_to_the_captured_values(demo: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    frames = captured(demo)
    out = tmp_path / "hf"
    export(demo, out, "hf")
    ds = datasets.load_dataset(str(out), "thermal", split="train", cache_dir=str(tmp_path / "cache"))
    assert len(ds) == len(frames)
    for row in ds:
        pixels = np.asarray(row["image"])
        assert pixels.shape == frames[row["key"]].shape
        np.testing.assert_array_equal(pixels.astype(np.int64), frames[row["key"]].astype(np.int64))


def test_mcap_raw_image_mono16_is_the_captured_frame(demo: Path, tmp_path: Path) -> None:
    from mcap.reader import make_reader

    frames = captured(demo)
    out = tmp_path / "mcap"
    export(demo, out, "mcap")
    got: list[NDArray[np.uint16]] = []
    keys: list[str] = []
    for path in sorted(out.glob("mcap/*/*.mcap")):
        with path.open("rb") as fh:
            for schema, _channel, message in make_reader(fh).iter_messages():
                body = json.loads(message.data)
                if schema is not None and schema.name == "foxglove.RawImage":
                    assert body["encoding"] == "mono16" and body["step"] == 2 * body["width"]
                    raw = np.frombuffer(base64.b64decode(body["data"]), dtype="<u2")
                    got.append(raw.reshape(body["height"], body["width"]))
                elif schema is not None and schema.name == "fieldcap.Sample" and body["modality"] == "thermal":
                    keys.append(body["key"])
    assert len(got) == len(keys) == len(frames)
    for key, raw in zip(keys, got, strict=True):  # media then sample row, capture by capture
        np.testing.assert_array_equal(raw, frames[key])
