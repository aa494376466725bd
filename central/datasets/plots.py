"""The dataset card's PNG plots (matplotlib, Agg backend: no display needed on a server).

Every plot has labelled axes with units, shows percentages beside counts, and draws a reference
line (the even share, the target, the QC threshold in force) so a reader can judge it without the
tables. A plot with nothing to show, or a single bar, is not drawn: the card says why instead
(``Plots.notes``), so an empty or one-bar picture never passes for information.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.extras import require
from central.datasets.indicators import latency_s
from central.datasets.samples import Sample

MAX_BARS = 30
MAX_METRICS = 9
UNITS = (
    ("_dbfs", "dBFS"),
    ("_db", "dB"),
    ("_lufs", "LUFS"),
    ("_ms", "ms"),
    ("_s", "s"),
    ("_c_per_s", "°C/s"),
    ("_c", "°C"),
    ("_hz", "Hz"),
    ("_ratio", "share, 0–1"),
)


@dataclass
class Plots:
    """The files drawn and, by section, why a plot is missing or what to keep in mind reading it."""

    files: list[str] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)

    def note(self, section: str, text: str) -> None:
        self.notes.setdefault(section, []).append(text)


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


def file_name(prefix: str, text: str) -> str:
    """A plot file name for a device-chosen name (a QC profile): safe characters only, and a short
    hash when any had to go, so two hostile names never share a file or escape ``plots/``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:60].lstrip(".")
    if safe != text:
        safe += "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{prefix}{safe}.png"


def unit_of(metric: str) -> str:
    """The unit a metric's name ends with ('snr_db' → 'dB'), '' when it names none."""
    for suffix, unit in UNITS:
        if metric.endswith(suffix):
            return unit
    return ""


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "–"


def _bar_labels(ax: Any, values: Sequence[float], total: float) -> None:
    for i, v in enumerate(values):
        ax.annotate(
            f" {v:g} ({_pct(v, total)})", (v, i), va="center", fontsize=8, xycoords="data", annotation_clip=False
        )


def balance(ind: dict[str, Any], out: Path, plots: Plots) -> None:
    plt = _pyplot()
    for dim, data in ind["balance"].items():
        counts = {k: v for k, v in data["counts"].items() if v > 0}
        if not counts:
            plots.note("balance", f"per {dim}: nothing to show (no sample has a {dim})")
            continue
        if len(counts) == 1:
            ((only, n),) = counts.items()
            plots.note("balance", f"per {dim}: all {n} samples have one {dim} ({only}); no plot")
            continue
        items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_BARS]
        total = sum(counts.values())
        names, values = [k for k, _ in items][::-1], [v for _, v in items][::-1]
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(items) + 1.6))
        ax.barh(names, values, color="#4c72b0")
        _bar_labels(ax, values, total)
        even = total / len(counts)
        ax.axvline(even, color="#555555", linestyle="--", linewidth=1, label=f"even share ({even:.3g} samples)")
        ax.set_xlim(0, max(values) * 1.3)
        ax.set_xlabel("samples (count; % of the selection)")
        ax.set_ylabel(dim)
        ax.set_title(f"balance per {dim}: {len(counts)} groups, {total} samples")
        ax.legend(loc="lower right", fontsize=8)
        if len(counts) > MAX_BARS:
            plots.note("balance", f"per {dim}: the plot shows the {MAX_BARS} largest of {len(counts)} groups")
        plots.files.append(_save(fig, out, f"balance_{dim}.png"))


def qc_pass_rates(ind: dict[str, Any], out: Path, plots: Plots) -> None:
    acc = ind["accuracy"]
    if not acc:
        plots.note("accuracy", "QC verdicts: no selected sample has a QC verdict; no plot")
        return
    plt = _pyplot()
    profiles = sorted(acc)
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(profiles) + 1.8))
    left = [0.0] * len(profiles)
    for verdict, color in (("pass", "#55a868"), ("review", "#dd8452"), ("fail", "#c44e52")):
        shares = [100 * acc[p]["verdicts"].get(verdict, 0) / acc[p]["samples"] for p in profiles]
        ax.barh(profiles, shares, left=left, color=color, label=verdict)
        for i, (x, w) in enumerate(zip(left, shares, strict=True)):
            if w >= 8:
                ax.text(x + w / 2, i, f"{w:.0f}%", ha="center", va="center", fontsize=8, color="white")
        left = [a + b for a, b in zip(left, shares, strict=True)]
    judged = sum(a["samples"] for a in acc.values())
    passed = sum(a["verdicts"].get("pass", 0) for a in acc.values())
    overall = 100 * passed / judged
    ax.axvline(overall, color="black", linestyle="--", linewidth=1, label=f"all profiles: {overall:.0f}% pass")
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of the profile's screened samples")
    ax.set_ylabel("QC profile")
    ax.set_title(f"QC verdicts per profile ({judged} samples screened)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=4)
    if len(profiles) == 1:
        plots.note("accuracy", f"QC verdicts: one profile only ({profiles[0]}); the bar splits its verdicts")
    plots.files.append(_save(fig, out, "qc_verdicts.png"))


def profile_limits(profile: str, version: str | None) -> dict[str, tuple[str, float]]:
    """The built-in profile's thresholds by metric name (``min_snr_db`` → ``snr_db``), only when the
    verdicts were made with exactly that profile (its fingerprint is their ``profile_version``)."""
    from models.settings import BUILTIN_PROFILES

    known = BUILTIN_PROFILES.get(profile)
    if known is None or version != known.fingerprint():
        return {}
    out: dict[str, tuple[str, float]] = {}
    for key, value in known.model_dump().items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            for side in ("min", "max"):
                if key.startswith(f"{side}_"):
                    out[key.removeprefix(f"{side}_")] = (side, float(value))
    return out


def qc_metrics(samples: Sequence[Sample], out: Path, plots: Plots) -> None:
    plt = _pyplot()
    values: dict[str, dict[str, list[float]]] = {}
    versions: dict[str, set[str]] = {}
    for s in samples:
        if s.verdict is None:
            continue
        versions.setdefault(str(s.profile), set()).add(str(s.verdict.get("profile_version")))
        for k, v in (s.verdict.get("metrics") or {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                values.setdefault(str(s.profile), {}).setdefault(k, []).append(float(v))
    for profile, metrics in sorted(values.items()):
        chosen = [k for k in sorted(metrics) if len(set(metrics[k])) > 1][:MAX_METRICS]
        flat = sorted(k for k in metrics if len(set(metrics[k])) <= 1)
        if flat:
            plots.note(f"qc_{profile}", f"not plotted, one value only: {', '.join(flat)}")
        if not chosen:
            continue
        used = versions[profile]
        limits = profile_limits(profile, next(iter(used))) if len(used) == 1 else {}
        cols = min(3, len(chosen))
        rows = -(-len(chosen) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.7 * rows), squeeze=False)
        for ax in axes.flat[len(chosen) :]:
            ax.set_visible(False)
        for ax, name in zip(axes.flat, chosen, strict=False):
            data = metrics[name]
            ax.hist(data, bins=20, color="#4c72b0")
            unit = unit_of(name)
            ax.set_xlabel(f"{name} ({unit})" if unit else name, fontsize=8)
            ax.set_ylabel("samples", fontsize=8)
            ax.tick_params(labelsize=7)
            if name in limits:
                side, limit = limits[name]
                bad = sum(1 for v in data if (v < limit if side == "min" else v > limit))
                ax.axvline(limit, color="#c44e52", linestyle="--", linewidth=1)
                ax.set_title(f"{side} {limit:g}: {_pct(bad, len(data))} beyond", fontsize=8)
            else:
                median = sorted(data)[len(data) // 2]
                ax.axvline(median, color="#555555", linestyle=":", linewidth=1)
                ax.set_title(f"median {median:.3g} (dotted)", fontsize=8)
        fig.suptitle(f"QC metrics: {profile} ({len(next(iter(metrics.values())))} samples)")
        if not limits:
            plots.note(
                f"qc_{profile}",
                "dotted lines are medians: the thresholds of this profile version are not known centrally",
            )
        else:
            plots.note(f"qc_{profile}", "red dashed lines are the profile's thresholds (built-in, same fingerprint)")
        plots.files.append(_save(fig, out, file_name("qc_metrics_", profile)))


def latency(samples: Sequence[Sample], out: Path, plots: Plots) -> None:
    values = sorted(v for v in (latency_s(s) for s in samples) if v is not None)
    if len(values) < 2:
        plots.note("timeliness", "latency: fewer than two samples with a capture and arrival time; no plot")
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.hist(values, bins=30, color="#8172b3")
    for q, style in ((50, ":"), (90, "--")):
        v = values[min(len(values) - 1, int(len(values) * q / 100))]
        ax.axvline(v, color="black", linestyle=style, linewidth=1, label=f"p{q}: {v:.3g} s")
    ax.set_xlabel("seconds from capture to central store (s)")
    ax.set_ylabel("samples")
    ax.set_title(f"timeliness ({len(values)} samples)")
    ax.legend(fontsize=8)
    plots.files.append(_save(fig, out, "latency.png"))


def traceability(ind: dict[str, Any], out: Path, plots: Plots) -> None:
    tr = ind["traceability"]
    total = ind["samples"]
    fields = [f for f in tr["required"] if tr["missing"].get(f, 0)]
    if not fields:
        plots.note("traceability", f"every one of the {total} samples has full lineage; no plot")
        return
    plt = _pyplot()
    lacking = [100 * tr["missing"][f] / total for f in fields]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(fields) + 1.6))
    ax.barh(fields[::-1], lacking[::-1], color="#c44e52")
    for i, f in enumerate(fields[::-1]):
        ax.annotate(
            f" {tr['missing'][f]} ({_pct(tr['missing'][f], total)})", (lacking[::-1][i], i), va="center", fontsize=8
        )
    ax.axvline(0, color="black", linewidth=1)
    ax.set_xlim(0, 115)
    ax.set_xlabel("% of samples lacking the lineage field (target: 0%)")
    ax.set_ylabel("lineage field")
    ax.set_title(f"lineage: {tr['full_lineage']} of {total} samples complete ({_pct(tr['full_lineage'], total)})")
    if len(fields) == 1:
        plots.note("traceability", f"one lineage field is missing anywhere: {fields[0]}")
    plots.files.append(_save(fig, out, "traceability.png"))


def coverage(ind: dict[str, Any], out: Path, plots: Plots) -> None:
    rows = ind["completeness"]["coverage"]
    if not rows:
        plots.note("coverage", "no scripted (booth) session in the selection; no coverage plot")
        return
    if len(rows) == 1:
        r = rows[0]
        plots.note(
            "coverage",
            f"one session only: {r['covered']} of {r['cells']} item × microphone cells covered"
            f" ({_pct(r['covered'], r['cells'])}); no plot",
        )
        return
    plt = _pyplot()
    shown = rows[:MAX_BARS]
    labels = [f"{r['session_id'][:12]} r{r['round']}" for r in shown][::-1]
    shares = [100 * r["coverage"] for r in shown][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(shown) + 1.6))
    ax.barh(labels, shares, color="#55a868")
    for i, r in enumerate(shown[::-1]):
        ax.annotate(f" {r['covered']}/{r['cells']}", (shares[i], i), va="center", fontsize=8)
    ax.axvline(100, color="black", linestyle="--", linewidth=1, label="target: every cell")
    ax.set_xlim(0, 115)
    ax.set_xlabel("% of item × microphone cells covered (as `fieldcap coverage`)")
    ax.set_ylabel("session, round")
    ax.set_title("script coverage")
    ax.legend(fontsize=8, loc="lower right")
    plots.files.append(_save(fig, out, "coverage.png"))


def draw_all(ind: dict[str, Any], samples: Sequence[Sample], out: Path) -> Plots:
    plots = Plots()
    if not samples:
        plots.note("selection", "no sample matches the filters; nothing to plot")
        return plots
    balance(ind, out, plots)
    qc_pass_rates(ind, out, plots)
    latency(samples, out, plots)
    coverage(ind, out, plots)
    qc_metrics(samples, out, plots)
    traceability(ind, out, plots)
    return plots
