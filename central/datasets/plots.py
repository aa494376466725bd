"""The dataset card's PNG plots (matplotlib, Agg backend: no display needed on a server).

Each function draws one figure from the indicators (and, for distributions, the samples) and
returns the file name it wrote, or None when there is nothing to draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.extras import require
from central.datasets.indicators import latency_s
from central.datasets.samples import Sample

MAX_BARS = 30
MAX_METRICS = 9


def _pyplot() -> Any:
    matplotlib = require("matplotlib", "central", "the dataset card's plots")
    matplotlib.use("Agg")
    return require("matplotlib.pyplot", "central", "the dataset card's plots")


def _save(fig: Any, out: Path, name: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out / name, dpi=100, metadata={"Software": None})
    _pyplot().close(fig)
    return name


def balance(ind: dict[str, Any], out: Path) -> list[str]:
    plt = _pyplot()
    names = []
    for dim, data in ind["balance"].items():
        counts = data["counts"]
        if not counts:
            continue
        items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_BARS]
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(items) + 1.2))
        ax.barh([k for k, _ in items][::-1], [v for _, v in items][::-1], color="#4c72b0")
        ax.set_xlabel("samples")
        ax.set_title(f"balance per {dim}")
        names.append(_save(fig, out, f"balance_{dim}.png"))
    return names


def qc_pass_rates(ind: dict[str, Any], out: Path) -> str | None:
    acc = ind["accuracy"]
    if not acc:
        return None
    plt = _pyplot()
    profiles = sorted(acc)
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(profiles) + 1.5))
    left = [0] * len(profiles)
    for verdict, color in (("pass", "#55a868"), ("review", "#dd8452"), ("fail", "#c44e52")):
        values = [acc[p]["verdicts"].get(verdict, 0) for p in profiles]
        ax.barh(profiles, values, left=left, color=color, label=verdict)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_xlabel("samples")
    ax.set_title("QC verdicts per profile")
    ax.legend()
    return _save(fig, out, "qc_verdicts.png")


def qc_metrics(samples: Sequence[Sample], out: Path) -> list[str]:
    plt = _pyplot()
    values: dict[str, dict[str, list[float]]] = {}
    for s in samples:
        if s.verdict is None:
            continue
        for k, v in (s.verdict.get("metrics") or {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                values.setdefault(str(s.profile), {}).setdefault(k, []).append(float(v))
    names = []
    for profile, metrics in sorted(values.items()):
        chosen = [k for k in sorted(metrics) if len(set(metrics[k])) > 1][:MAX_METRICS]
        if not chosen:
            continue
        cols = min(3, len(chosen))
        rows = -(-len(chosen) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
        for ax in axes.flat[len(chosen) :]:
            ax.set_visible(False)
        for ax, name in zip(axes.flat, chosen, strict=False):
            ax.hist(metrics[name], bins=20, color="#4c72b0")
            ax.set_title(name, fontsize=9)
        fig.suptitle(f"QC metrics: {profile}")
        names.append(_save(fig, out, f"qc_metrics_{profile}.png"))
    return names


def latency(samples: Sequence[Sample], out: Path) -> str | None:
    values = [v for v in (latency_s(s) for s in samples) if v is not None]
    if not values:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.hist(values, bins=30, color="#8172b3")
    ax.set_xlabel("seconds from capture to central store")
    ax.set_ylabel("samples")
    ax.set_title("timeliness")
    return _save(fig, out, "latency.png")


def traceability(ind: dict[str, Any], out: Path) -> str:
    plt = _pyplot()
    tr = ind["traceability"]
    fields = tr["required"]
    lacking = [tr["missing"].get(f, 0) for f in fields]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(fields) + 1.2))
    ax.barh(fields[::-1], lacking[::-1], color="#c44e52")
    ax.set_xlabel("samples lacking the field")
    ax.set_title(f"lineage: {tr['full_lineage']} of {ind['samples']} samples complete")
    return _save(fig, out, "traceability.png")


def coverage(ind: dict[str, Any], out: Path) -> str | None:
    rows = ind["completeness"]["coverage"]
    if not rows:
        return None
    plt = _pyplot()
    labels = [f"{r['session_id'][:12]} r{r['round']}" for r in rows][:MAX_BARS]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 1.2))
    ax.barh(labels[::-1], [100 * r["coverage"] for r in rows][:MAX_BARS][::-1], color="#55a868")
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of script items with an accepted take")
    ax.set_title("script coverage")
    return _save(fig, out, "coverage.png")


def draw_all(ind: dict[str, Any], samples: Sequence[Sample], out: Path) -> list[str]:
    names = balance(ind, out)
    names += [n for n in (qc_pass_rates(ind, out), latency(samples, out), coverage(ind, out)) if n]
    names += qc_metrics(samples, out)
    names.append(traceability(ind, out))
    return names
