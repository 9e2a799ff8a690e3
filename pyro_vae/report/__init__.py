"""Showing a trained model: its figures, drawn at the end of every run, and the one-page HTML
report of a run directory."""

from .figures import FIGURES, figure_names, make_figures
from .observer import FiguresAtEnd
from .page import REPORT, write_report

__all__ = ["FIGURES", "REPORT", "FiguresAtEnd", "figure_names", "make_figures", "write_report"]
