"""The run report for people: a self-contained HTML page or a PDF with the run's numbers and charts."""

from desktop.report.writer import SUFFIXES, write_report

__all__ = ["SUFFIXES", "write_report"]
