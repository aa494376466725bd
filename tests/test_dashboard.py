"""The Grafana dashboard in examples/ asks only for metrics the agent and the ingester export."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def exported() -> set[str]:
    """Every metric name in the generated reference (built from the collectors' own code)."""
    return set(re.findall(r"^\| `(fieldcap_[a-z_]+)` \|", (ROOT / "docs" / "metrics.md").read_text(), re.M))


def test_every_panel_queries_exported_metrics() -> None:
    dash = json.loads((ROOT / "examples" / "grafana" / "fieldcap-dashboard.json").read_text())
    known = exported()
    assert {"fieldcap_stream_up", "fieldcap_ingest_records_invalid_total"} <= known
    used: set[str] = set()
    for panel in dash["panels"]:
        assert panel["title"] and panel["targets"], panel
        for target in panel["targets"]:
            names = set(re.findall(r"\bfieldcap_[a-z_]+", target["expr"]))
            assert names, target
            used |= names
    histograms = set(
        re.findall(r"^\| `(fieldcap_[a-z_]+)` \| histogram \|", (ROOT / "docs" / "metrics.md").read_text(), re.M)
    )
    series = {f"{h}{suffix}" for h in histograms for suffix in ("_bucket", "_count", "_sum")}
    unknown = used - known - series
    assert not unknown, f"the dashboard queries metrics nobody exports: {sorted(unknown)}"
    variables = {v["name"] for v in dash["templating"]["list"]}
    for panel in dash["panels"]:
        for target in panel["targets"]:
            for var in re.findall(r"\$(\w+)", target["expr"]):
                assert var in variables, (panel["title"], var)
    # the refusals the ingester counts are all on the dashboard
    assert {"fieldcap_ingest_quota_refusals_total", "fieldcap_ingest_oversize_dropped_total"} <= used
