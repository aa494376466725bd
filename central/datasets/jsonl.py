"""``--format jsonl``: media files as they were captured plus one manifest line per sample.

``samples.jsonl`` holds one canonical JSON object per line (sorted keys): the sample's metadata,
QC verdict, annotations (the chosen human set where there is one: ``versions``) and lineage, with ``media``
naming its file under ``media/DEVICE/RECORD_ID.EXT`` (null for sensor readings, which are inline).
"""

from __future__ import annotations

from collections.abc import Sequence

from central.datasets.plan import ExportContext, copy_spec, media_path, sample_row, text_spec
from central.datasets.samples import Sample
from central.datasets.snapshot import FileSpec
from central.datasets.versions import canonical_json


def plan(samples: Sequence[Sample], ctx: ExportContext) -> list[FileSpec]:
    specs: list[FileSpec] = []
    lines = []
    for s in samples:
        media = media_path(s)
        if media is not None:
            specs.append(copy_spec(ctx, s, media))
        lines.append(canonical_json(sample_row(s, media)))
    text = "".join(line + "\n" for line in lines)
    specs.append(text_spec("samples.jsonl", lambda: text, text))
    return specs
