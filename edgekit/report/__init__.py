"""Human-readable reports of a build: one self-contained HTML file (``write_report``)."""

from edgekit.report.html import write_report

__all__ = ["write_report"]
