"""Model registry: manifests, fetching models out of pinned PyPI wheels, sha256 pinning.

A model is a manifest (``models/manifests/NAME.toml``, or ``<cache>/manifests/NAME.toml`` for a
site's own models) naming a file in the cache directory and the sha256 it must have. ``fetch``
downloads the pinned wheel with ``pip download --no-deps`` (only the wheel: the package is never
installed, so torch and friends never come along), extracts the one member, checks its sha256 and
moves it into the cache atomically. Nothing is downloaded at run time: a missing or altered file is
an error whose message is the command that fixes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Iterable
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.errors import FetchError, ManifestError, ModelMissing, ModelTampered
from models.pinning import fix_command, sha256_file, verified_path

BUILTIN_MANIFESTS = pathlib.Path(__file__).with_name("manifests")
CHUNK = 1 << 20  # copy buffer


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(description="Tensor name in the ONNX graph.")
    shape: list[int | str] = Field(description="Dimensions; strings name free dimensions.")
    dtype: str = Field("float32", description="Element type.")
    doc: str = Field("", description="What the tensor holds.")


class WheelSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    package: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.!+_-]+$",
        description="Pinned requirement 'name==version' of the wheel that ships the model.",
    )
    member: str = Field(min_length=1, description="Path of the model file inside the wheel.")


class FileSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: pathlib.Path = Field(description="Local file to copy into the cache (a site's model).")


class DetectorSpec(BaseModel):
    """How to read a YOLO-style detector's output."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal["yolov8", "yolov5"] = Field(
        description="yolov8: [1, 4+C, N] (cx, cy, w, h, class scores); "
        "yolov5: [1, N, 5+C] (cx, cy, w, h, objectness, class scores)."
    )
    labels: list[str] = Field(min_length=1, description="Class names in output order.")
    input_width: int = Field(640, ge=8, le=8192, description="Network input width in pixels.")
    input_height: int = Field(640, ge=8, le=8192, description="Network input height in pixels.")
    score_threshold: float = Field(0.25, ge=0, le=1, description="Minimum class score kept.")
    iou_threshold: float = Field(0.45, ge=0, le=1, description="Non-maximum suppression IoU.")
    max_detections: int = Field(300, ge=1, le=10000, description="Detections kept per image.")


class ModelManifest(BaseModel):
    """One model: where it comes from, what it must hash to, how to feed it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", description="Registry name.")
    version: str = Field(min_length=1, description="Model version recorded with every result.")
    kind: Literal["vad", "dnsmos", "centerface", "detector", "ocr-det", "ocr-rec", "other"] = Field(
        description="Which analyzer knows how to use it."
    )
    description: str = Field("", description="What the model does.")
    license: str = Field(min_length=1, description="SPDX licence of the model file.")
    file: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="File name in the cache.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Pinned sha256 of the file.")
    source: WheelSource | FileSource | None = Field(None, description="Where fetch gets it.")
    free_dims: bool = Field(False, description="Make fixed input/output dims free at load time.")
    inputs: list[TensorSpec] = Field(default_factory=list, description="Model inputs.")
    outputs: list[TensorSpec] = Field(default_factory=list, description="Model outputs.")
    preprocessing: dict[str, Any] = Field(default_factory=dict, description="Input preparation.")
    postprocessing: dict[str, Any] = Field(default_factory=dict, description="Output decoding.")
    detector: DetectorSpec | None = Field(None, description="Output layout of a detector.")


@dataclasses.dataclass(frozen=True)
class ModelStatus:
    """State of one model in a cache directory."""

    name: str
    version: str
    license: str
    path: pathlib.Path
    state: Literal["ok", "present", "missing", "tampered"]
    detail: str = ""


def default_cache_dir() -> pathlib.Path:
    """The model cache of the CLI, the daemon and the demo alike.

    ``$FIELDCAP_MODEL_DIR``, else ``$XDG_CACHE_HOME/fieldcap/models``, else
    ``~/.cache/fieldcap/models``.
    """
    env = os.environ.get("FIELDCAP_MODEL_DIR")
    if env:
        return pathlib.Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and pathlib.Path(xdg).is_absolute():  # the XDG spec ignores a relative value
        return pathlib.Path(xdg) / "fieldcap" / "models"
    return pathlib.Path.home() / ".cache" / "fieldcap" / "models"


def _cache(cache_dir: pathlib.Path | None) -> pathlib.Path:
    return pathlib.Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _read_manifest(path: pathlib.Path) -> ModelManifest:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc}") from exc
    try:
        return ModelManifest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors())
        raise ManifestError(f"{path}: {problems}") from exc


def load_manifests(cache_dir: pathlib.Path | None = None) -> dict[str, ModelManifest]:
    """Built-in manifests plus the site's own under ``<cache>/manifests``; names are unique."""
    found: dict[str, ModelManifest] = {}
    origin: dict[str, pathlib.Path] = {}
    dirs = [BUILTIN_MANIFESTS, _cache(cache_dir) / "manifests"]
    for folder in dirs:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.toml")):
            manifest = _read_manifest(path)
            if manifest.name in found:
                raise ManifestError(
                    f"{path}: model name {manifest.name!r} is already defined in {origin[manifest.name]}"
                )
            found[manifest.name] = manifest
            origin[manifest.name] = path
    return found


def get_manifest(name: str, cache_dir: pathlib.Path | None = None) -> ModelManifest:
    manifests = load_manifests(cache_dir)
    if name not in manifests:
        known = ", ".join(sorted(manifests)) or "none"
        raise ManifestError(f"unknown model {name!r} (known: {known})")
    return manifests[name]


def model_path(manifest: ModelManifest, cache_dir: pathlib.Path | None = None) -> pathlib.Path:
    """Path of a verified model file; ModelMissing / ModelTampered name the fix."""
    path = _cache(cache_dir) / manifest.file
    return verified_path(path, manifest.sha256, manifest.name, manifest.version)


def _status(manifest: ModelManifest, cache: pathlib.Path, check_hash: bool) -> ModelStatus:
    path = cache / manifest.file
    status = ModelStatus(manifest.name, manifest.version, manifest.license, path, "ok")
    if not path.exists():
        return dataclasses.replace(status, state="missing", detail=fix_command(manifest.name))
    if not check_hash:
        return dataclasses.replace(status, state="present")
    try:
        model_path(manifest, cache)
    except ModelTampered as exc:
        return dataclasses.replace(status, state="tampered", detail=str(exc))
    return status


def _select(names: Iterable[str] | None, cache: pathlib.Path) -> list[ModelManifest]:
    manifests = load_manifests(cache)
    if not names:
        return list(manifests.values())
    chosen = []
    for name in names:
        if name not in manifests:
            known = ", ".join(sorted(manifests))
            raise ManifestError(f"unknown model {name!r} (known: {known})")
        chosen.append(manifests[name])
    return chosen


def list_models(cache_dir: pathlib.Path | None = None) -> list[ModelStatus]:
    """Every known model and whether its file is present (no hashing: cheap)."""
    cache = _cache(cache_dir)
    return [_status(m, cache, check_hash=False) for m in _select(None, cache)]


def verify(names: Iterable[str] | None = None, cache_dir: pathlib.Path | None = None) -> list[ModelStatus]:
    """Hash the cached files of ``names`` (all models when empty) against their manifests."""
    cache = _cache(cache_dir)
    return [_status(m, cache, check_hash=True) for m in _select(names, cache)]


def _fsync_dir(folder: pathlib.Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _install(manifest: ModelManifest, stream: IO[bytes], cache: pathlib.Path, origin: str) -> None:
    """Copy ``stream`` into the cache as the model file iff its sha256 is the pinned one."""
    target = cache / manifest.file
    partial = cache / f".{manifest.file}.{os.getpid()}.partial"
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            while block := stream.read(CHUNK):
                digest.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if actual != manifest.sha256:
            raise ModelTampered(
                f"{origin} gives {manifest.name} with sha256 {actual}, but the manifest pins "
                f"{manifest.sha256}: refusing to install it "
                "(the source changed or the pin is wrong)"
            )
        partial.replace(target)
        _fsync_dir(cache)
    finally:
        partial.unlink(missing_ok=True)


def _download_wheel(package: str, into: pathlib.Path) -> pathlib.Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":none:",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        # the wheel is never installed, only unzipped: its Python bound does not apply
        # (rapidocr-onnxruntime 1.4.4 declares <3.13)
        "--ignore-requires-python",
        "--quiet",
        "-d",
        str(into),
        package,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FetchError(f"pip download {package} failed: {exc}") from exc
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise FetchError(f"pip download {package} failed (is PyPI reachable?): {tail}")
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"pip download {package} gave {len(wheels)} wheels, expected exactly 1")
    return wheels[0]


def _fetch_from_wheel(group: list[ModelManifest], package: str, cache: pathlib.Path) -> None:
    with tempfile.TemporaryDirectory(prefix="fieldcap-fetch-") as tmp:
        wheel = _download_wheel(package, pathlib.Path(tmp))
        try:
            archive = zipfile.ZipFile(wheel)
        except zipfile.BadZipFile as exc:
            raise FetchError(f"{wheel.name} from {package} is not a valid wheel: {exc}") from exc
        with archive:
            for manifest in group:
                assert isinstance(manifest.source, WheelSource)
                member = manifest.source.member
                try:
                    stream = archive.open(member)
                except KeyError:
                    raise FetchError(
                        f"{wheel.name} has no {member}: the manifest of {manifest.name} is wrong"
                    ) from None
                with stream:
                    _install(manifest, stream, cache, f"{package}:{member}")


def fetch(
    names: Iterable[str] | None = None,
    cache_dir: pathlib.Path | None = None,
    *,
    force: bool = False,
) -> list[ModelStatus]:
    """Put verified copies of ``names`` (all models when empty) into the cache.

    Files already present with the right hash are kept unless ``force``. Each wheel is downloaded
    once even when it ships several models.
    """
    cache = _cache(cache_dir)
    chosen = _select(names, cache)
    cache.mkdir(parents=True, exist_ok=True)
    todo: list[ModelManifest] = []
    for manifest in chosen:
        if not force and _status(manifest, cache, check_hash=True).state == "ok":
            continue
        todo.append(manifest)
    by_package: dict[str, list[ModelManifest]] = {}
    for manifest in todo:
        source = manifest.source
        if isinstance(source, WheelSource):
            by_package.setdefault(source.package, []).append(manifest)
        elif isinstance(source, FileSource):
            try:
                with source.path.expanduser().open("rb") as stream:
                    _install(manifest, stream, cache, str(source.path))
            except OSError as exc:
                raise FetchError(f"cannot read {source.path} for {manifest.name}: {exc}") from exc
        else:
            raise ModelMissing(
                f"model {manifest.name} has no source to fetch from: copy the file to {cache / manifest.file}"
            )
    for package, group in by_package.items():
        _fetch_from_wheel(group, package, cache)
    return [_status(m, cache, check_hash=True) for m in chosen]


def copy_into_cache(manifest: ModelManifest, src: pathlib.Path, cache_dir: pathlib.Path) -> None:
    """Install a local file for ``manifest`` (verified like a fetch); used for site models."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with src.open("rb") as stream:
        _install(manifest, stream, cache_dir, str(src))


__all__ = [
    "DetectorSpec",
    "FileSource",
    "ModelManifest",
    "ModelStatus",
    "TensorSpec",
    "WheelSource",
    "copy_into_cache",
    "default_cache_dir",
    "fetch",
    "get_manifest",
    "list_models",
    "load_manifests",
    "model_path",
    "sha256_file",
    "verify",
]
