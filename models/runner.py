"""ONNX Runtime sessions: provider choice, threads, batching, one session per model per process.

This module knows how to *run* a graph, not what a model means; analyzers own their pre- and
post-processing. Sessions are cached per (model sha256, provider, threads) for the whole process,
so every ``Screener`` shares them; creating one costs tens to hundreds of milliseconds.
"""

from __future__ import annotations

import pathlib
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from models import graph_build
from models.errors import ModelLoadError
from models.pinning import verified_path

Provider = Literal["auto", "cpu", "cuda", "openvino"]

_ORT_NAMES: dict[str, str] = {
    "cuda": "CUDAExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
_AUTO_ORDER = ("cuda", "openvino", "cpu")


def resolve_provider(requested: str) -> list[str]:
    """ORT provider list for ``requested``: 'auto' takes the first available of CUDA, OpenVINO,
    CPU; an explicit choice that this onnxruntime build lacks is an error, not a silent CPU run."""
    available = set(ort.get_available_providers())
    if requested == "auto":
        for name in _AUTO_ORDER:
            if _ORT_NAMES[name] in available:
                chosen = _ORT_NAMES[name]
                break
    else:
        if requested not in _ORT_NAMES:
            raise ModelLoadError(f"unknown provider {requested!r}; use auto, cpu, cuda or openvino")
        chosen = _ORT_NAMES[requested]
        if chosen not in available:
            have = ", ".join(sorted(available))
            package = "onnxruntime-gpu" if requested == "cuda" else "onnxruntime-openvino"
            raise ModelLoadError(
                f"provider {requested} is not available in this onnxruntime (has: {have}); "
                f'install {package} or set provider = "cpu"'
            )
    providers = [chosen]
    if chosen != _ORT_NAMES["cpu"]:
        providers.append(_ORT_NAMES["cpu"])  # for ops the accelerator does not implement
    return providers


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class ModelSpec(Protocol):
    """What the runner needs to know about a model; ``registry.ModelManifest`` is one.

    A protocol rather than the manifest class so this module imports neither pydantic nor the
    registry (bench/bench_onnx.py runs it with only numpy and onnxruntime installed).
    """

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def file(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def free_dims(self) -> bool: ...
    @property
    def inputs(self) -> Sequence[_Named]: ...
    @property
    def preprocessing(self) -> Mapping[str, Any]: ...
    @property
    def postprocessing(self) -> Mapping[str, Any]: ...


class ModelSession:
    """One loaded model: ``run`` feeds named inputs, ``run_batched`` splits a large batch."""

    def __init__(
        self,
        manifest: ModelSpec,
        session: ort.InferenceSession,
        sha256: str,
        path: pathlib.Path | None = None,
        options: Callable[[], ort.SessionOptions] | None = None,
    ) -> None:
        self.manifest = manifest
        self.session = session
        self.sha256 = sha256
        self.path = path
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self.providers = list(session.get_providers())
        self._options = options or ort.SessionOptions
        self._derived: dict[str, ModelSession] = {}
        self._derived_lock = threading.Lock()

    def derived(
        self,
        variant: str,
        build: Callable[[pathlib.Path], bytes],
        tune: Callable[[ort.SessionOptions], None] | None = None,
    ) -> ModelSession:
        """A sibling session for a graph that an analyzer builds from this model's verified file
        (same weights, other structure, e.g. Silero VAD over a whole sequence), created once with
        the same providers and options, which ``tune`` may adjust for that graph. It keeps this
        model's manifest and sha256 as provenance. ``build`` errors propagate, so the caller can
        fall back to this session."""
        with self._derived_lock:
            cached = self._derived.get(variant)
            if cached is not None:
                return cached
            if self.path is None:
                raise ModelLoadError(f"{self.manifest.name}: no model file to build {variant!r} from")
            source = build(self.path)
            options = self._options()
            if tune is not None:
                tune(options)
            try:
                session = ort.InferenceSession(source, sess_options=options, providers=self.providers)
            except Exception as exc:  # onnxruntime raises several unrelated exception types
                raise ModelLoadError(f"onnxruntime cannot load {variant!r} built from {self.path}: {exc}") from exc
            loaded = ModelSession(self.manifest, session, self.sha256, self.path, self._options)
            self._derived[variant] = loaded
            return loaded

    def run(self, feeds: Mapping[str, Any]) -> list[npt.NDArray[Any]]:
        return list(self.session.run(self.output_names, dict(feeds)))

    def run_batched(
        self,
        name: str,
        batch: npt.NDArray[Any],
        batch_size: int,
        extra: Mapping[str, Any] | None = None,
    ) -> list[npt.NDArray[Any]]:
        """Run ``batch`` (first axis = items) through input ``name`` in slices of ``batch_size``
        and concatenate each output along the first axis. Bounds memory on long inputs."""
        if batch.shape[0] == 0:
            raise ValueError("empty batch")
        parts: list[list[npt.NDArray[Any]]] = []
        for start in range(0, batch.shape[0], max(1, batch_size)):
            feeds = {name: batch[start : start + batch_size], **(extra or {})}
            parts.append(self.run(feeds))
        return [np.concatenate([p[i] for p in parts], axis=0) for i in range(len(parts[0]))]


def free_dims(path: pathlib.Path) -> bytes:
    """The model with every fixed input/output dim made symbolic (needs the ``onnx`` package)."""
    try:
        import onnx  # optional dependency, only for fixed-shape models
    except ImportError as exc:
        raise ModelLoadError(
            f"{path.name} has fixed input sizes and needs the 'onnx' package to be resized: pip install onnx"
        ) from exc
    model = onnx.load(str(path))
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    # initializers listed as inputs block constant folding and trigger a warning per tensor
    real_inputs = [i for i in graph.input if i.name not in initializers]
    del graph.input[:]
    graph.input.extend(real_inputs)
    for value in list(graph.input) + list(graph.output):
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            dim.dim_param = f"{value.name}_d{axis}"
    del graph.value_info[:]
    return bytes(model.SerializeToString())


class OnnxRunner:
    """Creates (once) and hands out sessions for manifests, with one provider/thread policy."""

    _cache: ClassVar[dict[tuple[str, tuple[str, ...], int | None], ModelSession]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, provider: str = "auto", threads: int | None = None) -> None:
        self.provider = provider
        self.threads = threads
        self._providers: list[str] | None = None

    @property
    def providers(self) -> list[str]:
        if self._providers is None:
            self._providers = resolve_provider(self.provider)
        return self._providers

    def session_options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no per-initializer warnings in logs
        # The CPU arena keeps the peak of every run (DNSMOS: ~115 MB for 9 s windows) for the life of
        # the process; without it the agent stays within its RSS budget at the same speed (measured).
        options.enable_cpu_mem_arena = False
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        return options

    def load(self, manifest: ModelSpec, cache_dir: pathlib.Path) -> ModelSession:
        """The process-wide session for ``manifest`` (verified file, created on first use)."""
        providers = tuple(self.providers)
        key = (manifest.sha256, providers, self.threads)
        path = verified_path(  # cheap after the first call: stat + memo
            pathlib.Path(cache_dir) / manifest.file,
            manifest.sha256,
            manifest.name,
            manifest.version,
        )
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                return cached
            source: bytes | str = graph_build.build("free-dims", str(path)) if manifest.free_dims else str(path)
            try:
                session = ort.InferenceSession(source, sess_options=self.session_options(), providers=list(providers))
            except Exception as exc:  # onnxruntime raises several unrelated exception types
                raise ModelLoadError(f"onnxruntime cannot load {manifest.name} from {path}: {exc}") from exc
            loaded = ModelSession(manifest, session, manifest.sha256, path, self.session_options)
            _check_interface(loaded, [t.name for t in manifest.inputs])
            self._cache[key] = loaded
            return loaded


def _check_interface(loaded: ModelSession, expected: Sequence[str]) -> None:
    if not expected:
        return
    missing = [name for name in expected if name not in loaded.input_names]
    if missing:
        raise ModelLoadError(
            f"model {loaded.manifest.name} has inputs {loaded.input_names}, but its manifest "
            f"expects {list(expected)}: wrong file or wrong manifest"
        )
