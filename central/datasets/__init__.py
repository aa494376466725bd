"""Datasets from the central store: versioned exports, lineage, the review round trip, the dataset card.

``load_samples`` joins what the central store holds into samples (a capture with its verdict,
annotations, session, stream and take); ``export`` writes a filtered selection as a reproducible,
resumable snapshot in one of ``FORMATS``; ``import_review`` brings every annotation people made in
Label Studio back as annotation sets (``versions``); ``consistency`` measures how annotators agree;
``build_report`` writes the dataset card.
"""

from central.datasets.errors import DatasetError
from central.datasets.export import FORMATS, ExportOptions, ExportResult, export
from central.datasets.report import ReportOptions, build_report
from central.datasets.review import import_review
from central.datasets.samples import Sample, load_samples
from central.datasets.selection import Filters, select

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
