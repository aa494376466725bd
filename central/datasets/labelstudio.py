"""``--format labelstudio``: Label Studio projects with fieldcap's annotations as predictions.

One project per kind of media: ``labelstudio/image/`` (visible and thermal frames) and
``labelstudio/audio/`` (segments and takes), each with ``tasks.json`` (import it) and
``label_config.xml`` (the labeling interface). Media files are under ``media/`` and referenced
as ``PREFIX + media/...``; the default prefix is Label Studio's local-files URL, so set
``LOCAL_FILES_DOCUMENT_ROOT`` to the export directory. Sensor readings have nothing to label and
are left out. A thermal frame is shown to annotators as an 8-bit false-colour preview
(``media/KEY.preview.png``, task data ``image``) while ``thermal_raw`` links the captured 16-bit PNG
(exact radiometric values) for tools; boxes drawn on the preview are in the raw frame's pixels,
as both have the same size. Each task's data names the capture (``fieldcap_device``, ``fieldcap_record_id``),
which is how ``fieldcap review-import`` finds it again. ``README.md`` says which two Label Studio
settings (and which local storage) the local media links need.

``--overlap SHARE`` marks that share of each project's tasks (rounded up) for two annotators: such
a task has Label Studio's task field ``overlap: 2`` (how many distinct annotators its automatic
distribution hands the task to; the project's "Annotations per task minimum" must allow 2) and
``meta.fieldcap_double_annotation: true``. The draw is seeded (``--overlap-seed``): each task
ranks by sha256(seed, sample key) and the first ones are marked, so the same seed and selection
mark the same tasks.

Result ids are derived from the annotation's record id, so a reviewer who edits a prediction keeps
its id and the import knows which machine annotation (and kind) the correction belongs to.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from central.datasets.plan import ExportContext, copy_spec, media_path, text_spec
from central.datasets.samples import Sample
from central.datasets.snapshot import FileSpec, fingerprint
from central.datasets.thermal import PREVIEW_EXT, RENDERING, is_thermal_frame, preview_png, read_frame

DEFAULT_LABELS = {"image": ("face",), "audio": ("speech",)}


def project_of(s: Sample) -> str | None:
    if s.blob is None:
        return None
    if s.blob.media_type.startswith("image/"):
        return "image"
    if s.blob.media_type.startswith("audio/"):
        return "audio"
    return None


def result_id(record_id: str) -> str:
    return hashlib.sha256(record_id.encode()).hexdigest()[:10]


def _size(s: Sample, ctx: ExportContext) -> tuple[int, int] | None:
    metrics = (s.verdict or {}).get("metrics") or {}
    w, h = metrics.get("width"), metrics.get("height")
    if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0:
        return w, h
    if s.blob is None:
        return None
    from PIL import Image

    try:
        with Image.open(ctx.blobs.local_path(s.blob.sha256)) as img:
            return int(img.width), int(img.height)
    except OSError:
        return None


def to_result(ann: dict[str, Any], target: str, size: tuple[int, int] | None) -> dict[str, Any] | None:
    """A Label Studio result for one fieldcap annotation (``None`` where it cannot be shown)."""
    label = str(ann.get("label") or "")
    base: dict[str, Any] = {"id": result_id(str(ann.get("record_id") or label)), "to_name": target}
    if ann.get("score") is not None:
        base["score"] = ann["score"]
    raw = ann.get("geometry")
    geometry: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if target == "image" and {"x", "y", "w", "h"} <= set(geometry) and size is not None:
        w, h = size
        base.update(
            from_name="label",
            type="rectanglelabels",
            original_width=w,
            original_height=h,
            image_rotation=0,
            value={
                "x": 100.0 * geometry["x"] / w,
                "y": 100.0 * geometry["y"] / h,
                "width": 100.0 * geometry["w"] / w,
                "height": 100.0 * geometry["h"] / h,
                "rotation": 0,
                "rectanglelabels": [label],
            },
        )
        return base
    if target == "audio" and ann.get("t_start_s") is not None and ann.get("t_end_s") is not None:
        base.update(
            from_name="label",
            type="labels",
            value={"start": ann["t_start_s"], "end": ann["t_end_s"], "labels": [label]},
        )
        return base
    if ann.get("kind") == "transcript" and target == "audio":
        base.update(from_name="transcription", type="textarea", value={"text": [label]})
        return base
    if label and not geometry and ann.get("t_start_s") is None:
        base.update(from_name="class", type="choices", value={"choices": [label]})
        return base
    return None


def preview_spec(ctx: ExportContext, s: Sample, path: str) -> FileSpec:
    """The false-colour preview of a thermal frame, rendered when the file is written."""
    assert s.blob is not None
    sha256 = s.blob.sha256

    def write(dest: Path) -> None:
        dest.write_bytes(preview_png(read_frame(ctx.blobs.local_path(sha256), s.key)))

    return FileSpec(path, fingerprint("preview", RENDERING, s.blob.sha256), write, s.blob.size)


def task(s: Sample, ctx: ExportContext, project: str, media: str, preview: str | None = None) -> dict[str, Any]:
    size = _size(s, ctx) if project == "image" else None
    groups: dict[str, list[dict[str, Any]]] = {}
    scores: dict[str, list[float]] = {}
    for ann in s.annotations:
        result = to_result(ann, project, size)
        if result is None:
            continue
        if ann.get("source") == "human" and s.human is not None:
            version = f"{s.human.role}:{s.human.annotator}@{s.human.annotated_utc or '?'}"
        else:
            version = f"{ann.get('model')}@{ann.get('model_version')}"
        groups.setdefault(version, []).append(result)
        if isinstance(ann.get("score"), int | float):
            scores.setdefault(version, []).append(float(ann["score"]))
    predictions = []
    for version in sorted(groups):
        got = scores.get(version, [])
        predictions.append(
            {
                "model_version": version,
                "score": round(sum(got) / len(got), 4) if got else None,
                "result": groups[version],
            }
        )
    verdict = s.verdict or {}
    shown = media if preview is None else preview
    data: dict[str, Any] = {
        project: ctx.options.media_url_prefix + shown,
        "fieldcap_key": s.key,
        "fieldcap_device": s.device,
        "fieldcap_record_id": s.record_id,
        "modality": s.modality,
        "stream": s.stream_name,
        "qc_verdict": verdict.get("verdict"),
        "qc_reasons": "; ".join(str(r) for r in verdict.get("reasons") or []),
        "annotation_source": s.annotation_source,
    }
    if preview is not None:
        data["thermal_raw"] = ctx.options.media_url_prefix + media
    return {"data": data, "predictions": predictions}


def label_config(project: str, labels: Sequence[str]) -> str:
    values = "".join(f"\n    <Label value={quoteattr(v)}/>" for v in labels)
    choices = "".join(f"\n    <Choice value={quoteattr(v)}/>" for v in labels)
    if project == "image":
        media = '  <Image name="image" value="$image" zoom="true"/>'
        regions = f'  <RectangleLabels name="label" toName="image">{values}\n  </RectangleLabels>'
        extra = ""
    else:
        media = '  <Audio name="audio" value="$audio"/>'
        regions = f'  <Labels name="label" toName="audio">{values}\n  </Labels>'
        extra = '\n  <TextArea name="transcription" toName="audio" editable="true" maxSubmissions="1"/>'
    header = '  <Header value="$stream $fieldcap_record_id — QC $qc_verdict: $qc_reasons"/>'
    target = project
    return (
        f"<View>\n{header}\n{media}\n{regions}\n"
        f'  <Choices name="class" toName="{target}" choice="multiple">{choices}\n  </Choices>{extra}\n</View>\n'
    )


def double_annotated(keys: Sequence[str], share: float, seed: int) -> set[str]:
    """The keys (``ceil(share * n)`` of them) drawn for two annotators; see the module doc."""
    if share <= 0 or not keys:
        return set()
    n = min(len(keys), math.ceil(share * len(keys) - 1e-9))
    rank = sorted(keys, key=lambda k: hashlib.sha256(f"{seed}\x00{k}".encode()).hexdigest())
    return set(rank[:n])


def _const(text: str) -> Callable[[], str]:
    return lambda: text


README = """# Label Studio projects exported by fieldcap

One project per media kind: `labelstudio/image/` and `labelstudio/audio/`, each with
`label_config.xml` (Settings > Labeling Interface > Code) and `tasks.json` (Import).
Media are linked as `{prefix}media/...`. For Label Studio to serve them:

1. Start Label Studio with these two settings:

       LOCAL_FILES_SERVING_ENABLED=true
       LOCAL_FILES_DOCUMENT_ROOT=/absolute/path/of/this/directory

2. In each project add a Local Storage (Settings > Cloud Storage > Add Source Storage >
   Local files) with the absolute path of this directory's `media` folder, without syncing
   it: the tasks are imported from `tasks.json`. Label Studio serves a file only to users of a
   project whose local storage contains it.

When annotation is done, export the project as JSON and bring it back with
`fieldcap review-import --store URL FILE.json`.
"""


def readme(prefix: str) -> str:
    """The README of a Label Studio export: the settings its local media links need."""
    return README.replace("{prefix}", prefix)


def plan(samples: Sequence[Sample], ctx: ExportContext) -> list[FileSpec]:
    specs: list[FileSpec] = []
    tasks: dict[str, list[dict[str, Any]]] = {}
    labels: dict[str, set[str]] = {}
    for s in samples:
        project = project_of(s)
        media = media_path(s)
        if project is None or media is None:
            continue
        specs.append(copy_spec(ctx, s, media))
        preview = None
        if is_thermal_frame(s):
            preview = f"media/{s.key}.{PREVIEW_EXT}"
            specs.append(preview_spec(ctx, s, preview))
        tasks.setdefault(project, []).append(task(s, ctx, project, media, preview))
        seen = labels.setdefault(project, set())
        seen |= {str(a["label"]) for a in s.annotations if a.get("label") and a.get("kind") != "transcript"}
    for project in sorted(tasks):
        marked = double_annotated(
            [t["data"]["fieldcap_key"] for t in tasks[project]], ctx.options.overlap, ctx.options.overlap_seed
        )
        for t in tasks[project]:
            if t["data"]["fieldcap_key"] in marked:
                t["overlap"] = 2
                t["meta"] = {"fieldcap_double_annotation": True}
        text = json.dumps(tasks[project], indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        specs.append(text_spec(f"labelstudio/{project}/tasks.json", _const(text), text))
        config = label_config(project, sorted(labels[project] | set(DEFAULT_LABELS[project])))
        specs.append(text_spec(f"labelstudio/{project}/label_config.xml", _const(config), config))
    if tasks:
        text = readme(ctx.options.media_url_prefix)
        specs.append(text_spec("README.md", _const(text), text))
    return specs
