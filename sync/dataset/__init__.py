"""Datasets from the central store: versioned exports, lineage, the review round trip, the dataset card.

``load_samples`` joins what the central store holds into samples (a capture with its verdict,
annotations, session, stream and take); ``export`` writes a filtered selection as a reproducible,
resumable snapshot in one of ``FORMATS``; ``import_review`` brings human-corrected labels back
from Label Studio as a new annotation version; ``build_report`` writes the dataset card.
"""

from sync.dataset.errors import DatasetError
from sync.dataset.export import FORMATS, ExportOptions, ExportResult, export
from sync.dataset.report import ReportOptions, build_report
from sync.dataset.review import import_review
from sync.dataset.samples import Sample, load_samples
from sync.dataset.selection import Filters, select

__all__ = [
    "FORMATS",
    "DatasetError",
    "ExportOptions",
    "ExportResult",
    "Filters",
    "ReportOptions",
    "Sample",
    "build_report",
    "export",
    "import_review",
    "load_samples",
    "select",
]
