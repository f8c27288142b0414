"""Post-incident evidence: the bundle, the postmortem draft and the error-rate chart.

The runbook's "Post-Incident" section done for the responder. :class:`EvidenceCollector` is
the entry point; the rendering functions are pure and usable on their own.
"""

from receiver.evidence.bundle import BundleBuilder, BundleFile, SourceReport, WrittenBundle
from receiver.evidence.chart import ChartMarker, ChartSeries, render_error_rate_chart
from receiver.evidence.collector import (
    BundleRecord,
    EvidenceCollector,
    IncidentNotFound,
    LogSource,
    Phase,
    bundles_for,
)
from receiver.evidence.postmortem import ImpactFigures, action_items, render_postmortem

__all__ = [
    "BundleBuilder",
    "BundleFile",
    "BundleRecord",
    "ChartMarker",
    "ChartSeries",
    "EvidenceCollector",
    "ImpactFigures",
    "IncidentNotFound",
    "LogSource",
    "Phase",
    "SourceReport",
    "WrittenBundle",
    "action_items",
    "bundles_for",
    "render_error_rate_chart",
    "render_postmortem",
]
