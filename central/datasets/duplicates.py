"""Uniqueness: identical media (same sha256) and near-duplicate images (perceptual difference hash).

The dHash of an image is 64 bits: the grey image shrunk to 9×8 pixels, one bit per horizontal
neighbour pair (is the left pixel brighter?). Resampling and re-encoding barely change it, so two
frames of an unchanged scene are a few bits apart. 16-bit thermal frames are stretched to 8 bits
between their own minimum and maximum first, so a warm object counts, not the absolute level.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from central.datasets.samples import Sample

DEFAULT_MAX_BITS = 4  # Hamming distance (of 64 bits) up to which two images count as near-duplicates


def dhash(path: Path) -> int | None:
    """The 64-bit difference hash of an image file; None if it cannot be decoded."""
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        return None
    if img.ndim == 3:
        img = cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2GRAY)
    if img.dtype != np.uint8:
        lo, hi = float(img.min()), float(img.max())
        img = np.zeros(img.shape, np.uint8) if hi <= lo else ((img - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    small = cv2.resize(img, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, :-1] > small[:, 1:]).flatten()
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def identical(samples: Sequence[Sample]) -> dict[str, Any]:
    """Captures whose media has the same sha256 as an earlier capture's."""
    groups: dict[str, list[str]] = defaultdict(list)
    for s in samples:
        if s.blob is not None:
            groups[s.blob.sha256].append(s.key)
    dups = {sha: keys for sha, keys in groups.items() if len(keys) > 1}
    extra = sum(len(k) - 1 for k in dups.values())
    with_media = sum(len(k) for k in groups.values())
    return {
        "samples_with_media": with_media,
        "distinct_media": len(groups),
        "duplicate_groups": len(dups),
        "duplicate_samples": extra,
        "duplicate_share": extra / with_media if with_media else 0.0,
        "examples": [sorted(k) for _, k in sorted(dups.items())][:10],
    }


def near_duplicates(samples: Sequence[Sample], blob_path: Any, max_bits: int = DEFAULT_MAX_BITS) -> dict[str, Any]:
    """Pairs of distinct images (per modality) whose dHashes differ in at most ``max_bits`` bits."""
    by_modality: dict[str, list[tuple[str, int]]] = defaultdict(list)
    seen: set[str] = set()
    failed = 0
    for s in samples:
        if s.blob is None or not s.blob.media_type.startswith("image/") or s.blob.sha256 in seen:
            continue
        seen.add(s.blob.sha256)
        path = blob_path(s)
        h = dhash(path) if path is not None and path.is_file() else None
        if h is None:
            failed += 1
            continue
        by_modality[s.modality].append((s.key, h))
    pairs: list[tuple[str, str, int]] = []
    for items in by_modality.values():
        hashes = np.array([h for _, h in items], dtype=np.uint64)
        for i in range(len(items) - 1):
            xor = np.bitwise_xor(hashes[i + 1 :], hashes[i])
            dist = np.array([int(x).bit_count() for x in xor], dtype=np.int64)
            for j in np.nonzero(dist <= max_bits)[0]:
                pairs.append((items[i][0], items[i + 1 + int(j)][0], int(dist[j])))
    involved = {k for a, b, _ in pairs for k in (a, b)}
    hashed = sum(len(v) for v in by_modality.values())
    return {
        "images_hashed": hashed,
        "undecodable": failed,
        "max_bits": max_bits,
        "near_duplicate_pairs": len(pairs),
        "near_duplicate_images": len(involved),
        "near_duplicate_share": len(involved) / hashed if hashed else 0.0,
        "examples": [list(p) for p in sorted(pairs)[:10]],
    }
