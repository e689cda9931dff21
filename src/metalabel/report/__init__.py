"""The HTML report: ``write_report(data, path)`` turns a ``ReportData`` into one self-contained page.

``collect`` builds the ``ReportData`` from a project store; the records in ``data``
are the contract between the two, so the page can be rendered without a store.
"""

from metalabel.report.data import LabelIssue, ReportData, RetractedLabel, RoundPoint, Sample, ScorecardRow
from metalabel.report.html import SECTIONS, render_report, verdict, write_report

__all__ = [
    "LabelIssue", "ReportData", "RetractedLabel", "RoundPoint", "SECTIONS", "Sample", "ScorecardRow",
    "render_report", "verdict", "write_report",
]
