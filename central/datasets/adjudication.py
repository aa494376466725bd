"""``fieldcap agreement adjudicate``: settle a disagreement by adopting one annotator's set.

The adopted annotations are stored again as an *adjudicator* set (``versions``) under the
adjudicator's name and the current time, so later exports prefer it over every annotator's set
and the machine's; the annotators' own sets stay as they were. ``--use machine`` adopts the
machine's annotations (the pre-annotation was right after all).
"""

from __future__ import annotations

from dataclasses import dataclass

from central.datasets.errors import DatasetError
from central.datasets.samples import load_samples
from central.datasets.versions import ADJUDICATOR, NewSet, add_sets, newest_by_annotator
from central.store import CentralStore
from sync.wire import utc_now

MACHINE = "machine"


@dataclass(frozen=True, slots=True)
class Adjudication:
    key: str
    adopted: str
    by: str
    added: bool


def adjudicate(store: CentralStore, key: str, use: str, by: str) -> Adjudication:
    """Store ``use``'s newest set of capture ``key`` (DEVICE/RECORD_ID) as ``by``'s adjudication."""
    device, _, record_id = key.partition("/")
    found = load_samples(store, devices=[device])
    sample = next((s for s in found if s.device == device and s.record_id == record_id), None)
    if sample is None:
        raise DatasetError(f"{key}: no such capture in the store; give DEVICE/RECORD_ID as fieldcap agreement lists it")
    if use == MACHINE:
        annotations = [dict(a) for a in sample.machine_annotations]
        if not annotations:
            raise DatasetError(f"{key}: the machine made no annotation here; --use one of the annotators")
    else:
        newest = newest_by_annotator(sample.human_sets)
        if use not in newest:
            who = ", ".join(sorted(newest)) or "nobody"
            raise DatasetError(f"{key}: {use!r} did not annotate it (annotators: {who}); --use one of them or machine")
        annotations = [dict(a) for a in newest[use].annotations]
    now = utc_now()
    item = NewSet(device, record_id, by, ADJUDICATOR, now, annotations)
    added, _ = add_sets(store, f"adjudication:{item.set_id()}", f"adopted {use}", "fieldcap", now, 1, [item])
    return Adjudication(key, use, by, added == 1)
