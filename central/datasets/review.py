"""``fieldcap review-import``: the annotations people made in Label Studio, each kept as a set.

Reads Label Studio's JSON export of a project made by ``fieldcap export --format labelstudio``.
Every annotation that was not cancelled becomes an annotation set of its capture, with its
annotator (``completed_by``) and time (``updated_at``, else ``created_at``): two annotators of a
double-annotated task give two sets, a later correction gives another, and none replaces another
(``central.datasets.versions``). Annotations by a user named with ``--adjudicator`` are
adjudications, which later exports prefer. The machine's annotations stay as they are. Importing
the same file again adds nothing. A file that names captures this store does not have is refused
as a whole, before anything is stored.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from central.datasets.errors import DatasetError
from central.datasets.labelstudio import result_id
from central.datasets.samples import load_samples
from central.datasets.versions import ADJUDICATOR, ANNOTATOR, NewSet, add_sets
from central.store import CentralStore
from sync.wire import utc_now

HUMAN_MODEL = "human"
HUMAN_VERSION = "labelstudio"


@dataclass
class ImportSummary:
    tasks: int = 0
    reviewed: int = 0  # tasks with at least one annotation
    annotations: int = 0  # annotations (not cancelled) in the file
    added: int = 0  # new annotation sets
    unchanged: int = 0  # sets stored by an earlier import
    unreviewed: int = 0
    annotators: int = 0
    adjudications: int = 0
    ignored: Counter[str] = field(default_factory=Counter)  # result types fieldcap cannot store


def _author(annotation: dict[str, Any]) -> str | None:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    return None if who is None else str(who)


def when(value: Any, where: str) -> str | None:
    """An ISO 8601 time as UTC ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00``, so times sort as strings."""
    if value in (None, ""):
        return None
    try:
        t = datetime.fromisoformat(str(value))
    except ValueError:
        raise DatasetError(
            f"{where}: time {str(value)[:40]!r} is not ISO 8601; export the project from Label Studio as JSON"
        ) from None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC).isoformat(timespec="microseconds")


def _submitted(annotations: Any, where: str) -> list[dict[str, Any]]:
    if annotations is None:
        return []
    if not isinstance(annotations, list):
        raise DatasetError(f"{where}: 'annotations' is not a list; export the project as JSON from Label Studio")
    return [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]


def _human(kind: str, label: str, n: int, **extra: Any) -> dict[str, Any]:
    ann: dict[str, Any] = {
        "record_id": f"human-{n}",
        "kind": kind,
        "label": label,
        "score": None,
        "t_start_s": None,
        "t_end_s": None,
        "geometry": None,
        "model": HUMAN_MODEL,
        "model_version": HUMAN_VERSION,
        "model_sha256": None,
        "source": "human",
    }
    ann.update(extra)
    return ann


def from_results(results: Any, kinds: dict[str, str], where: str, ignored: Counter[str]) -> list[dict[str, Any]]:
    """fieldcap annotations for Label Studio results; ``kinds`` maps result ids to machine kinds."""
    if not isinstance(results, list):
        raise DatasetError(f"{where}: 'result' is not a list; export the project as JSON from Label Studio")
    out: list[dict[str, Any]] = []
    for r in results:
        if not isinstance(r, dict) or not isinstance(r.get("value"), dict):
            raise DatasetError(f"{where}: a result has no 'value' object; export the project as JSON")
        kind_of = kinds.get(str(r.get("id")))
        value, rtype = r["value"], str(r.get("type"))
        try:
            if rtype == "rectanglelabels":
                w, h = float(r["original_width"]), float(r["original_height"])
                geometry = {
                    "x": round(value["x"] * w / 100.0, 3),
                    "y": round(value["y"] * h / 100.0, 3),
                    "w": round(value["width"] * w / 100.0, 3),
                    "h": round(value["height"] * h / 100.0, 3),
                }
                for label in value["rectanglelabels"]:
                    out.append(_human(kind_of or "box", str(label), len(out), geometry=geometry))
            elif rtype == "labels":
                for label in value["labels"]:
                    out.append(
                        _human(
                            kind_of or "segment",
                            str(label),
                            len(out),
                            t_start_s=float(value["start"]),
                            t_end_s=float(value["end"]),
                        )
                    )
            elif rtype == "choices":
                for label in value["choices"]:
                    out.append(_human(kind_of or "class", str(label), len(out)))
            elif rtype == "textarea":
                text = "\n".join(str(t) for t in value.get("text") or [])
                if text:
                    out.append(_human("transcript", text, len(out)))
            else:
                ignored[rtype] += 1
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(
                f"{where}: a {rtype} result lacks or garbles {exc}; re-export it from Label Studio"
            ) from None
    return out


def _load(path: Path) -> tuple[bytes, list[Any]]:
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read it: {exc.strerror}") from None
    except ValueError as exc:
        raise DatasetError(f"{path}: not JSON ({exc}); export the project from Label Studio as JSON") from None
    if not isinstance(data, list):
        raise DatasetError(f"{path}: not a Label Studio JSON export (expected a list of tasks)")
    return raw, data


def import_review(store: CentralStore, path: Path, adjudicators: Collection[str] = ()) -> ImportSummary:
    """Store every submitted annotation in ``path`` as an annotation set; see the module doc."""
    raw, tasks = _load(path)
    mentioned = {  # only the devices the tasks name are read from the store
        str(t["data"]["fieldcap_device"])
        for t in tasks
        if isinstance(t, dict) and isinstance(t.get("data"), dict) and t["data"].get("fieldcap_device")
    }
    samples = {(s.device, s.record_id): s for s in load_samples(store, devices=mentioned)}
    summary = ImportSummary(tasks=len(tasks))
    items: list[NewSet] = []
    unknown: list[str] = []
    people: set[str] = set()
    for i, t in enumerate(tasks):
        where = f"{path}: task {i + 1}"
        data = t.get("data") if isinstance(t, dict) else None
        if not isinstance(t, dict) or not isinstance(data, dict):
            raise DatasetError(f"{where}: not a Label Studio task (no 'data' object); export the project as JSON")
        if not data.get("fieldcap_record_id") or not data.get("fieldcap_device"):
            raise DatasetError(
                f"{where}: data.fieldcap_device / data.fieldcap_record_id missing; import only projects made"
                " with fieldcap export --format labelstudio"
            )
        key = (str(data["fieldcap_device"]), str(data["fieldcap_record_id"]))
        if key not in samples:
            unknown.append("/".join(key))
            continue
        submitted = _submitted(t.get("annotations"), where)
        if not submitted:
            summary.unreviewed += 1
            continue
        summary.reviewed += 1
        kinds = {result_id(str(a.get("record_id"))): str(a.get("kind")) for a in samples[key].machine_annotations}
        for n, a in enumerate(submitted):
            at = f"{where}, annotation {a.get('id', n + 1)}"
            person = _author(a) or "unknown"
            role = ADJUDICATOR if person in adjudicators else ANNOTATOR
            annotations = from_results(a.get("result"), kinds, at, summary.ignored)
            items.append(NewSet(*key, person, role, when(a.get("updated_at") or a.get("created_at"), at), annotations))
            people.add(person)
            summary.adjudications += role == ADJUDICATOR
    if unknown:
        raise DatasetError(
            f"{path}: {len(unknown)} task(s) name captures this store does not have (e.g. {unknown[0]});"
            " import the file into the store it was exported from. Nothing was imported"
        )
    summary.annotations, summary.annotators = len(items), len(people)
    review_id = hashlib.sha256(raw).hexdigest()[:32]
    stored = add_sets(store, review_id, path.name, "labelstudio", utc_now(), len(tasks), items)
    summary.added, summary.unchanged = stored
    return summary
