"""``--format hf``: Parquet shards that Hugging Face ``datasets`` loads, one config per modality.

Layout: ``data/CONFIG/train-NNNNN-of-NNNNN.parquet`` and a ``README.md`` whose YAML header lists
the configs (``visible``, ``thermal``, ``audio``, ``sensor``, ``other``), so
``load_dataset(DIR, "visible")`` works. Media bytes are embedded as ``{bytes, path}`` structs that
the Parquet schema metadata declares as ``Image`` / ``Audio`` features; annotations are a list of
structs; QC metrics, capture metadata and lineage are JSON strings (their keys differ by modality).
Parquet is written with fixed options by one pyarrow version, so the bytes are reproducible.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.extras import require
from central.datasets.plan import ExportContext, sample_row, text_spec
from central.datasets.samples import Sample, extension
from central.datasets.snapshot import FileSpec, fingerprint
from central.datasets.versions import canonical_json
from central.datasets.webdataset import shard_groups

CONFIGS = {"visible": "image", "thermal": "image", "audio": "audio", "sensor": "readings"}

ANNOTATION_FIELDS = (
    ("record_id", "string"),
    ("kind", "string"),
    ("label", "string"),
    ("score", "float64"),
    ("t_start_s", "float64"),
    ("t_end_s", "float64"),
    ("geometry", "json"),
    ("model", "string"),
    ("model_version", "string"),
    ("model_sha256", "string"),
    ("source", "string"),
)
READING_FIELDS = (
    ("seq", "int64"),
    ("t_mono_ns", "int64"),
    ("t_utc_ns", "int64"),
    ("name", "string"),
    ("value", "float64"),
)


def config_of(s: Sample) -> str:
    return s.modality if s.modality in CONFIGS else "other"


def _pyarrow() -> tuple[Any, Any]:
    """pyarrow and pyarrow.parquet (imported on use; they ship no type information)."""
    feature = "Parquet export"
    return require("pyarrow", "central", feature), require("pyarrow.parquet", "central", feature)


def _schema(media_column: str) -> Any:
    pa, _ = _pyarrow()

    ann = pa.struct([(n, pa.float64() if t == "float64" else pa.string()) for n, t in ANNOTATION_FIELDS])
    fields = [
        ("key", pa.string()),
        ("device", pa.string()),
        ("record_id", pa.string()),
        ("stream", pa.string()),
        ("kind", pa.string()),
        ("media_type", pa.string()),
        ("sha256", pa.string()),
        ("t_start_utc_ns", pa.int64()),
        ("duration_s", pa.float64()),
        ("session_id", pa.string()),
        ("item_id", pa.string()),
        ("take", pa.int64()),
        ("verdict", pa.string()),
        ("profile", pa.string()),
        ("labels", pa.list_(pa.string())),
        ("annotation_source", pa.string()),
        ("annotations", pa.list_(ann)),
        ("qc", pa.string()),
        ("meta", pa.string()),
        ("environment", pa.string()),
        ("lineage", pa.string()),
    ]
    if media_column == "readings":
        reading = pa.struct(
            [
                (n, pa.int64() if t == "int64" else pa.float64() if t == "float64" else pa.string())
                for n, t in READING_FIELDS
            ]
        )
        fields.append(("readings", pa.list_(reading)))
    else:
        fields.append((media_column, pa.struct([("bytes", pa.binary()), ("path", pa.string())])))
    schema = pa.schema(fields)
    features = {f.name: _feature(f.type) for f in schema}
    if media_column in ("image", "audio"):
        features[media_column] = {"_type": media_column.capitalize()}
    meta = {"huggingface": json.dumps({"info": {"features": features}}, sort_keys=True)}
    return schema.with_metadata(meta)


def _feature(t: Any) -> dict[str, Any]:
    """The ``datasets`` feature description of an Arrow type (the subset used here)."""
    pa, _ = _pyarrow()

    if pa.types.is_list(t):
        return {"feature": _feature(t.value_type), "_type": "List"}
    if pa.types.is_struct(t):
        return {t.field(i).name: _feature(t.field(i).type) for i in range(t.num_fields)}
    names = {pa.string(): "string", pa.int64(): "int64", pa.float64(): "float64", pa.binary(): "binary"}
    return {"dtype": names[t], "_type": "Value"}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _row(s: Sample, media_column: str, ctx: ExportContext) -> dict[str, Any]:
    row = sample_row(s, None)
    out: dict[str, Any] = {
        k: row[k]
        for k in (
            "key",
            "device",
            "record_id",
            "stream",
            "kind",
            "media_type",
            "sha256",
            "t_start_utc_ns",
            "duration_s",
            "session_id",
            "item_id",
            "take",
            "labels",
            "annotation_source",
        )
    }
    out["session_id"] = None if out["session_id"] is None else str(out["session_id"])
    out["item_id"] = None if out["item_id"] is None else str(out["item_id"])
    out["take"] = out["take"] if isinstance(out["take"], int) else None
    out["verdict"], out["profile"] = s.verdict_name, s.profile
    out["annotations"] = [
        {
            n: (
                _number(a.get(n))
                if t == "float64"
                else canonical_json(a.get(n))
                if t == "json"
                else None
                if a.get(n) is None
                else str(a.get(n))
            )
            for n, t in ANNOTATION_FIELDS
        }
        for a in row["annotations"]
    ]
    for name in ("qc", "meta", "environment", "lineage"):
        out[name] = canonical_json(row[name])
    if media_column == "readings":
        out["readings"] = [
            dict(zip([n for n, _ in READING_FIELDS], r, strict=False))
            for r in row.get("readings") or []
            if isinstance(r, list) and len(r) == len(READING_FIELDS)
        ]
    elif s.blob is not None:
        out[media_column] = {
            "bytes": ctx.blobs.local_path(s.blob.sha256).read_bytes(),
            "path": f"{s.record_id}.{extension(s.blob.media_type)}",
        }
    else:
        out[media_column] = None
    return out


def _shard_spec(ctx: ExportContext, path: str, media_column: str, group: list[Sample]) -> FileSpec:
    def write(dest: Path) -> None:
        pa, pq = _pyarrow()
        schema = _schema(media_column)
        table = pa.Table.from_pylist([_row(s, media_column, ctx) for s in group], schema=schema)
        pq.write_table(
            table,
            dest,
            compression="zstd",
            compression_level=3,
            row_group_size=1024,
            use_dictionary=True,
            write_statistics=True,
            version="2.6",
        )

    inputs = [canonical_json(sample_row(s, None)) for s in group]
    size = sum(s.blob.size if s.blob else 1024 for s in group)
    return FileSpec(path, fingerprint("hf", path, media_column, inputs), write, size)


def _readme(configs: list[str], ctx: ExportContext, counts: dict[str, int]) -> str:
    lines = ["---", "configs:"]
    for name in configs:
        lines += [f"- config_name: {name}", "  data_files:", "  - split: train", f"    path: data/{name}/*.parquet"]
    if ctx.options.license:
        lines.append(f"license: {json.dumps(ctx.options.license)}")
    # The version's name stays in the manifest only: the same data under two names is one version.
    lines += ["---", "", "# fieldcap dataset", ""]
    if ctx.options.description:
        lines += [ctx.options.description, ""]
    lines += [
        "Exported by `fieldcap export --format hf` from a fieldcap central store.",
        "",
        "| config | samples |",
        "|---|---|",
    ]
    lines += [f"| {name} | {counts[name]} |" for name in configs]
    lines += [
        "",
        "Every row has a `lineage` column (JSON): device, driver, settings in force, clock health,",
        "session, take, QC profile version and the model (name, version, sha256) behind each annotation.",
        "`annotation_source` says whether `annotations` is the machine's or a human-reviewed version.",
        "",
    ]
    return "\n".join(lines)


def plan(samples: Sequence[Sample], ctx: ExportContext) -> list[FileSpec]:
    by_config: dict[str, list[Sample]] = {}
    for s in samples:
        by_config.setdefault(config_of(s), []).append(s)
    specs: list[FileSpec] = []
    for name in sorted(by_config):
        media_column = CONFIGS.get(name, "media")
        groups = shard_groups(by_config[name], ctx.options.shard_bytes)
        for i, group in enumerate(groups):
            path = f"data/{name}/train-{i:05d}-of-{len(groups):05d}.parquet"
            specs.append(_shard_spec(ctx, path, media_column, group))
    configs = sorted(by_config)
    counts = {k: len(v) for k, v in by_config.items()}
    text = _readme(configs, ctx, counts)
    specs.append(text_spec("README.md", lambda: text, text))
    return specs
