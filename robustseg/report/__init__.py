"""Reports of results directories: plots, self-contained HTML, comparisons, summary.csv (docs/report.md)."""
from .compare import write_comparison
from .examples import example_points, save_examples
from .html import write_report

__all__ = ["example_points", "save_examples", "write_comparison", "write_report"]
