"""``fieldcap report``: the dataset card — ``report.json``, ``report.html`` and ``plots/*.png``.

The JSON holds every indicator (see ``indicators``), the annotation consistency (``consistency``),
the headline and what the central store holds per record kind, so a pipeline can gate on it; the
HTML (``templates/report.html.j2``, autoescaped: every string in it may have come from a device)
shows the same numbers with the plots.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.extras import require
from central.blobs import BlobBackend
from central.datasets import booth_coverage, indicators, plots
from central.datasets.consistency import consistency
from central.datasets.errors import DatasetError
from central.datasets.headline import headline, human_bytes
from central.datasets.samples import Sample
from central.datasets.selection import Filters, load_for, select, unknown_values
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


def build_report(store: CentralStore, blobs: BlobBackend, out: Path, options: ReportOptions) -> dict[str, Any]:
    """Compute the indicators for the selected samples and write the card into ``out``."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"--out {out}: is a file; give a directory")
    if options.scripts_dir is not None and not options.scripts_dir.is_dir():
        raise DatasetError(f"--scripts {options.scripts_dir}: not a directory of prompt scripts")
    everything = load_for(store, options.filters)
    unknown = unknown_values(everything, options.filters)
    if unknown:
        raise DatasetError(f"{unknown[0]}: no sample in the store has it; check the spelling")
    samples = select(everything, options.filters)

    def blob_path(s: Sample) -> Path | None:
        return None if s.blob is None else blobs.local_path(s.blob.sha256)

    ind = indicators.compute(
        samples,
        blob_path,
        coverage=booth_coverage.session_coverage(store, samples, options.scripts_dir),
        license=options.license,
        description=options.description,
        near_duplicate_bits=options.near_duplicate_bits,
    )
    report = {
        "headline": headline(samples),
        "name": options.name,
        "filters": options.filters.as_dict(),
        "store": {**store_counts(store), "invalid_records": everything.invalid},
        **ind,
        "consistency": card_consistency(samples),
    }
    out.mkdir(parents=True, exist_ok=True)
    drawn = plots.draw_all(ind, samples, out / "plots")
    report["plots"], report["plot_notes"] = drawn.files, drawn.notes
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True, allow_nan=False) + "\n")
    (out / "report.html").write_text(render_html(report), encoding="utf-8")
    return report


def card_consistency(samples: list[Sample]) -> dict[str, Any]:
    """The card's consistency section: agreement per label, per annotator pair and per model
    version, and how many tasks still disagree (the list itself is ``fieldcap agreement``'s)."""
    result = consistency(samples, 0.0)
    open_ = [d for d in result.pop("disagreements") if not d["adjudicated"]]
    result["open_disagreements"] = len(open_)
    return result


# ---------------------------------------------------------------------------- HTML


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "–" if value is None else ("yes" if value else "no")
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _percent(value: Any) -> str:
    return "–" if not isinstance(value, int | float) else f"{100 * value:.1f}%"


def render_html(report: dict[str, Any]) -> str:
    """The card as HTML: a Jinja2 template with autoescaping, so a device-chosen string (a modality,
    a stream or profile name, a QC reason) is shown as text and never runs as markup."""
    jinja2 = require("jinja2", "central", "the dataset card")
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("central.datasets", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _number
    env.filters["pct"] = _percent
    env.filters["bytes"] = human_bytes
    env.globals["plot_file"] = plots.file_name
    env.filters["canonical"] = lambda v: json.dumps(v, sort_keys=True, ensure_ascii=False)
    text: str = env.get_template("report.html.j2").render(r=report)
    return text
