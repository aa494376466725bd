"""``fieldcap report``: the dataset card — ``report.json``, ``report.html`` and ``plots/*.png``.

The JSON holds every indicator (see ``indicators``) plus what the central store holds per record
kind, so a pipeline can gate on it; the HTML shows the same numbers with the plots for people.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from central.blobs import BlobTree
from central.datasets import indicators, plots
from central.datasets.errors import DatasetError
from central.datasets.samples import Sample, load_samples
from central.datasets.selection import Filters, select, unknown_values
from central.store import CentralStore


@dataclass(frozen=True, slots=True)
class ReportOptions:
    filters: Filters = field(default_factory=Filters)
    name: str | None = None
    license: str | None = None
    description: str | None = None
    scripts_dir: Path | None = None
    near_duplicate_bits: int = 4


def store_counts(store: CentralStore) -> dict[str, Any]:
    with store._tx() as cur:
        kinds = store._exec(cur, "SELECT kind, COUNT(*) FROM records GROUP BY kind ORDER BY kind").fetchall()
        blobs = store._exec(cur, "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM blobs").fetchone()
        dead = store._exec(cur, "SELECT COUNT(*) FROM dead_letters").fetchone()
    return {
        "records": {str(k): int(n) for k, n in kinds},
        "blobs": int(blobs[0]),
        "blob_bytes": int(blobs[1]),
        "dead_letters": int(dead[0]),
    }


def build_report(store: CentralStore, blobs: BlobTree, out: Path, options: ReportOptions) -> dict[str, Any]:
    """Compute the indicators for the selected samples and write the card into ``out``."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"--out {out}: is a file; give a directory")
    if options.scripts_dir is not None and not options.scripts_dir.is_dir():
        raise DatasetError(f"--scripts {options.scripts_dir}: not a directory of prompt scripts")
    everything = load_samples(store)
    unknown = unknown_values(everything, options.filters)
    if unknown:
        raise DatasetError(f"{unknown[0]}: no sample in the store has it; check the spelling")
    samples = select(everything, options.filters)

    def blob_path(s: Sample) -> Path | None:
        return None if s.blob is None else blobs.path_for(s.blob.sha256)

    ind = indicators.compute(
        samples,
        blob_path,
        scripts_dir=options.scripts_dir,
        license=options.license,
        description=options.description,
        near_duplicate_bits=options.near_duplicate_bits,
    )
    report = {
        "name": options.name,
        "filters": options.filters.as_dict(),
        "store": {**store_counts(store), "invalid_records": everything.invalid},
        **ind,
    }
    out.mkdir(parents=True, exist_ok=True)
    report["plots"] = plots.draw_all(ind, samples, out / "plots") if samples else []
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True, allow_nan=False) + "\n")
    (out / "report.html").write_text(render_html(report), encoding="utf-8")
    return report


# ---------------------------------------------------------------------------- HTML


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "–"
    return html.escape(str(value))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(report: dict[str, Any], name: str) -> str:
    return f'<img src="plots/{html.escape(name)}" alt="{html.escape(name)}">' if name in report["plots"] else ""


def render_html(r: dict[str, Any]) -> str:
    parts = [f"<h1>{html.escape(r['name'] or 'fieldcap dataset card')}</h1>"]
    acc = r["accessibility"]
    parts.append(
        f"<p>{r['samples']} samples ({', '.join(f'{k}: {v}' for k, v in r['modalities'].items())}). "
        f"License: {_fmt(acc['license'])}. Filters: {html.escape(json.dumps(r['filters']))}</p>"
    )
    if acc["description"]:
        parts.append(f"<p>{html.escape(acc['description'])}</p>")
    parts.append("<h2>Store</h2>" + _table(["record kind", "records"], sorted(r["store"]["records"].items())))
    comp = r["completeness"]
    parts.append("<h2>Completeness</h2>")
    parts.append(
        _table(
            ["field", "applicable", "missing", "share missing"],
            [(k, v["applicable"], v["missing"], v["share"]) for k, v in comp["missing_fields"].items()],
        )
    )
    if comp["coverage"]:
        parts.append(
            _table(
                ["session", "script", "round", "targets", "accepted", "coverage", "target source"],
                [
                    (
                        c["session_id"],
                        c["script"],
                        c["round"],
                        c["targets"],
                        c["accepted"],
                        c["coverage"],
                        c["target_source"],
                    )
                    for c in comp["coverage"]
                ],
            )
            + _img(r, "coverage.png")
        )
    uni = r["uniqueness"]
    parts.append(
        "<h2>Uniqueness</h2>"
        + _table(
            ["indicator", "value"],
            [
                ("samples with media", uni["identical"]["samples_with_media"]),
                ("identical media (extra copies)", uni["identical"]["duplicate_samples"]),
                ("images hashed (dHash)", uni["near_duplicates"]["images_hashed"]),
                (
                    f"near-duplicate pairs (≤ {uni['near_duplicates']['max_bits']} bits)",
                    uni["near_duplicates"]["near_duplicate_pairs"],
                ),
                ("images in a near-duplicate pair", uni["near_duplicates"]["near_duplicate_images"]),
            ],
        )
    )
    parts.append(
        "<h2>Balance</h2>"
        + _table(
            ["dimension", "groups", "imbalance (max/min)", "normalized entropy"],
            [(k, v["groups"], v["imbalance_ratio"], v["normalized_entropy"]) for k, v in r["balance"].items()],
        )
        + "".join(_img(r, f"balance_{k}.png") for k in r["balance"])
    )
    parts.append(
        "<h2>Accuracy proxies (QC)</h2>"
        + _table(
            ["profile", "samples", "pass", "review", "fail", "pass rate"],
            [
                (
                    p,
                    a["samples"],
                    a["verdicts"].get("pass", 0),
                    a["verdicts"].get("review", 0),
                    a["verdicts"].get("fail", 0),
                    a["pass_rate"],
                )
                for p, a in r["accuracy"].items()
            ],
        )
        + _img(r, "qc_verdicts.png")
    )
    for p, a in r["accuracy"].items():
        parts.append(
            f"<h3>{html.escape(p)}</h3>"
            + _table(
                ["metric", "count", "mean", "p5", "p50", "p95"],
                [(m, d["count"], d["mean"], d["p5"], d["p50"], d["p95"]) for m, d in a["metrics"].items()],
            )
            + _table(["top reason", "samples"], a["top_reasons"])
            + _img(r, f"qc_metrics_{p}.png")
        )
    lat = r["timeliness"]["latency_s"]
    parts.append(
        "<h2>Timeliness</h2>"
        + _table(
            ["capture → central (s)", "count", "p50", "p90", "p99", "max"],
            [("all devices", lat["count"], lat["p50"], lat.get("p90"), lat.get("p99"), lat["max"])],
        )
        + _img(r, "latency.png")
    )
    tr = r["traceability"]
    parts.append(
        f"<h2>Traceability</h2><p>{tr['full_lineage']} of {r['samples']} samples have full lineage "
        f"({100 * tr['share']:.1f}%).</p>"
        + _table(["lineage field", "samples lacking it"], sorted(tr["missing"].items()))
        + _img(r, "traceability.png")
    )
    parts.append(
        "<h2>Accessibility</h2>"
        + _table(["check", "met"], sorted(acc["checks"].items()))
        + _table(["media type", "samples"], sorted(acc["media_types"].items()))
    )
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}img{max-width:100%;display:block}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>fieldcap dataset card</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
