"""Annotation consistency over samples: annotator vs annotator, per task, label and pair, and
machine vs human per model version — what ``fieldcap agreement`` lists and the dataset card shows.

An annotation set is split into what it says: labels (classes and the labels of boxes and
segments), boxes, time segments and a transcript. Two sets of one task are compared measure by
measure (``agreement``): label Jaccard, box agreement (matched IoU), segment overlap (matched
temporal IoU) and boundary deviation, transcript CER/WER (the alphabetically first annotator as
reference). A task's *disagreement* is 1 minus its weakest agreement (1 - CER for transcripts),
the largest over its annotator pairs. Only each annotator's newest set counts; adjudications are
the resolution, not a rating.

Label kappas rate a label's presence per task over the double-annotated tasks of the modalities
where the label is used: Cohen's kappa when exactly two annotators did all of them, else Fleiss'.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

from central.datasets.agreement import (
    Box,
    Segment,
    as_box,
    boundary_deviation,
    box_iou,
    cer,
    cohen_kappa,
    fleiss_kappa,
    matched_agreement,
    segment_iou,
    wer,
)
from central.datasets.samples import Sample
from central.datasets.versions import ADJUDICATOR, newest_by_annotator


@dataclass(frozen=True)
class Parts:
    labels: frozenset[str]
    boxes: tuple[tuple[str, Box], ...] = ()
    segments: tuple[tuple[str, Segment], ...] = ()
    transcript: str | None = None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def parts(annotations: Iterable[dict[str, Any]]) -> Parts:
    """What an annotation set says; malformed entries (from a device) are left out, never fatal."""
    labels: set[str] = set()
    boxes: list[tuple[str, Box]] = []
    segments: list[tuple[str, Segment]] = []
    texts: list[str] = []
    for ann in annotations:
        if not isinstance(ann, dict):
            continue
        label = ann.get("label")
        if not isinstance(label, str) or not label:
            continue
        if ann.get("kind") == "transcript":
            texts.append(label)
            continue
        labels.add(label)
        box = as_box(ann.get("geometry"))
        start, end = _num(ann.get("t_start_s")), _num(ann.get("t_end_s"))
        if box is not None:
            boxes.append((label, box))
        elif start is not None and end is not None and end >= start:
            segments.append((label, Segment(start, end)))
    return Parts(frozenset(labels), tuple(boxes), tuple(segments), "\n".join(texts) if texts else None)


def compare(a: Parts, b: Parts) -> dict[str, float | None]:
    """The measures that apply to two sets of one task, plus ``disagreement`` (0 = identical)."""
    out: dict[str, float | None] = {}
    scores: list[float] = []
    if a.labels or b.labels:
        jaccard = len(a.labels & b.labels) / len(a.labels | b.labels)
        out["labels"] = jaccard
        scores.append(jaccard)
    if a.boxes or b.boxes:
        boxes = matched_agreement(a.boxes, b.boxes, box_iou)
        out["box_iou"] = boxes
        scores.append(boxes)
    if a.segments or b.segments:
        overlap = matched_agreement(a.segments, b.segments, segment_iou)
        out["segment_overlap"] = overlap
        out["boundary_s"] = boundary_deviation(a.segments, b.segments)
        scores.append(overlap)
    if a.transcript is not None or b.transcript is not None:
        chars = cer(a.transcript or "", b.transcript or "")
        out["cer"] = chars
        out["wer"] = wer(a.transcript or "", b.transcript or "")
        scores.append(1.0 - min(1.0, chars))
    out["disagreement"] = 1.0 - min(scores) if scores else 0.0
    return out


@dataclass
class Task:
    sample: Sample
    raters: dict[str, Parts]  # annotator -> newest set's parts
    pairs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def disagreement(self) -> float:
        return max((float(p["disagreement"]) for p in self.pairs), default=0.0)

    @property
    def adjudicated(self) -> bool:
        return any(h.role == ADJUDICATOR for h in self.sample.human_sets)

    def as_dict(self) -> dict[str, Any]:
        s = self.sample
        return {
            "key": s.key,
            "modality": s.modality,
            "annotators": sorted(self.raters),
            "disagreement": round(self.disagreement, 6),
            "pairs": self.pairs,
            "adjudicated": self.adjudicated,
            "chosen": None if s.human is None else s.human.provenance(),
        }


def multi_annotated(samples: Sequence[Sample]) -> list[Task]:
    """Tasks that two or more annotators annotated, each pair compared."""
    tasks = []
    for s in samples:
        newest = newest_by_annotator(s.human_sets)
        if len(newest) < 2:
            continue
        t = Task(s, {who: parts(h.annotations) for who, h in sorted(newest.items())})
        for a, b in itertools.combinations(sorted(t.raters), 2):
            measures = compare(t.raters[a], t.raters[b])
            t.pairs.append({"a": a, "b": b, **{k: _round(v) for k, v in measures.items()}})
        tasks.append(t)
    return tasks


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 6)


def _label_universe(tasks: Sequence[Task]) -> dict[str, set[str]]:
    """Labels used, by modality (a face label says nothing about an audio task)."""
    out: dict[str, set[str]] = {}
    for t in tasks:
        for p in t.raters.values():
            out.setdefault(t.sample.modality, set()).update(p.labels)
    return out


def label_kappas(tasks: Sequence[Task]) -> dict[str, dict[str, Any]]:
    """Per label: kappa of its presence over the tasks of its modalities (see the module doc)."""
    universe = _label_universe(tasks)
    out: dict[str, dict[str, Any]] = {}
    for label in sorted(set().union(*universe.values()) if universe else set()):
        items = [t for t in tasks if label in universe.get(t.sample.modality, set())]
        raters = {r for t in items for r in t.raters}
        votes = [[label in t.raters[r].labels for r in sorted(t.raters)] for t in items]
        agree = sum(len(set(v)) == 1 for v in votes) / len(votes)
        if len(raters) == 2 and all(len(t.raters) == 2 for t in items):
            first, second = sorted(raters)
            kappa = cohen_kappa(
                [label in t.raters[first].labels for t in items], [label in t.raters[second].labels for t in items]
            )
            method = "cohen"
        else:
            kappa = fleiss_kappa([[sum(v), len(v) - sum(v)] for v in votes])
            method = "fleiss"
        out[label] = {"method": method, "kappa": _round(kappa), "tasks": len(items), "observed": round(agree, 6)}
    return out


def _mean(values: Iterable[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return round(fmean(got), 6) if got else None


def pair_agreement(tasks: Sequence[Task]) -> list[dict[str, Any]]:
    """Per annotator pair: pooled and per-label Cohen's kappa over shared tasks, mean measures."""
    universe = _label_universe(tasks)
    by_pair: dict[tuple[str, str], list[tuple[Task, dict[str, Any]]]] = {}
    for t in tasks:
        for p in t.pairs:
            by_pair.setdefault((p["a"], p["b"]), []).append((t, p))
    out = []
    for (a, b), shared in sorted(by_pair.items()):
        pooled_a: list[bool] = []
        pooled_b: list[bool] = []
        per_label: dict[str, tuple[list[bool], list[bool]]] = {}
        for t, _ in shared:
            for label in sorted(universe.get(t.sample.modality, set())):
                va, vb = label in t.raters[a].labels, label in t.raters[b].labels
                pooled_a.append(va)
                pooled_b.append(vb)
                xs = per_label.setdefault(label, ([], []))
                xs[0].append(va)
                xs[1].append(vb)
        measures = [p for _, p in shared]
        out.append(
            {
                "a": a,
                "b": b,
                "tasks": len(shared),
                "kappa": _round(cohen_kappa(pooled_a, pooled_b)),
                "labels": {k: _round(cohen_kappa(*v)) for k, v in sorted(per_label.items())},
                **{
                    m: _mean(p.get(m) for p in measures)
                    for m in ("box_iou", "segment_overlap", "boundary_s", "cer", "wer", "disagreement")
                },
            }
        )
    return out


def machine_vs_human(samples: Sequence[Sample]) -> list[dict[str, Any]]:
    """Per model version: how the machine's annotations agree with the human set exports use."""
    groups: dict[tuple[str, str], list[tuple[Parts, Parts]]] = {}
    for s in samples:
        if s.human is None or not s.machine_annotations:
            continue
        human = parts(s.human.annotations)
        by_model: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for ann in s.machine_annotations:
            by_model.setdefault((str(ann.get("model")), str(ann.get("model_version"))), []).append(ann)
        for model_key, anns in by_model.items():
            groups.setdefault(model_key, []).append((parts(anns), human))
    out = []
    for (model_name, version), pairs in sorted(groups.items()):
        labels = sorted(set().union(*(m.labels | h.labels for m, h in pairs)))
        machine_votes = [label in m.labels for m, _ in pairs for label in labels]
        human_votes = [label in h.labels for _, h in pairs for label in labels]
        measures = [compare(m, h) for m, h in pairs]
        out.append(
            {
                "model": model_name,
                "model_version": version,
                "tasks": len(pairs),
                "kappa": _round(cohen_kappa(machine_votes, human_votes)),
                **{
                    k: _mean(x.get(k) for x in measures)
                    for k in ("labels", "box_iou", "segment_overlap", "boundary_s", "cer", "wer", "disagreement")
                },
            }
        )
    return out


def consistency(samples: Sequence[Sample], threshold: float | None = None) -> dict[str, Any]:
    """Everything ``fieldcap agreement --json`` prints and the card's consistency section shows.

    ``disagreements``: tasks above ``threshold`` (all multi-annotated tasks when ``None``), worst first.
    """
    tasks = multi_annotated(samples)
    listed = [t for t in tasks if threshold is None or t.disagreement > threshold]
    listed.sort(key=lambda t: (-t.disagreement, t.sample.key))
    return {
        "annotated": sum(1 for s in samples if s.human_sets),
        "multi_annotated": len(tasks),
        "adjudicated": sum(1 for t in tasks if t.adjudicated),
        "annotators": sorted({h.annotator for s in samples for h in s.human_sets if h.role != ADJUDICATOR}),
        "threshold": threshold,
        "labels": label_kappas(tasks),
        "pairs": pair_agreement(tasks),
        "machine": machine_vs_human(samples),
        "disagreements": [t.as_dict() for t in listed],
    }
