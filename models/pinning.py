"""sha256 pinning of model files: the check every load goes through.

Kept free of pydantic and the rest of the package so the ONNX runner (and ``bench/bench_onnx.py``
on a bare GPU machine) can use it with only numpy and onnxruntime installed.
"""

from __future__ import annotations

import hashlib
import pathlib
import threading

from models.errors import ModelMissing, ModelTampered

CHUNK = 1 << 20

_verified: dict[tuple[str, int, int, str], bool] = {}
_verified_lock = threading.Lock()


def fix_command(name: str) -> str:
    return f"run: fieldcap models fetch {name}"


def sha256_file(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def verified_path(path: pathlib.Path, sha256: str, name: str, version: str) -> pathlib.Path:
    """``path`` if it exists and hashes to ``sha256``; ModelMissing / ModelTampered name the fix.

    The hash is computed once per process per file version (path, size, mtime).
    """
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ModelMissing(f"model {name} {version} is not in {path.parent}: {fix_command(name)}") from None
    key = (str(path), stat.st_size, stat.st_mtime_ns, sha256)
    with _verified_lock:
        if _verified.get(key):
            return path
    actual = sha256_file(path)
    if actual != sha256:
        raise ModelTampered(
            f"model file {path} has sha256 {actual[:16]}…, expected {sha256[:16]}… "
            f"(modified or corrupt): {fix_command(name)} --force"
        )
    with _verified_lock:
        _verified[key] = True
    return path
