"""The run engine (docs/architecture.md): a run context, a run directory, one driver for every kind of run."""
from .context import RunContext, RunOptions, open_context
from .engine import RunResult, execute
from .kind import Batch, BatchOut, Kind, Pass, Point, Source

GRADIENT_COST = 3.0  # one forward+backward in prediction-equivalents, for the progress bar's weights

__all__ = ["RunContext", "RunOptions", "open_context", "RunResult", "execute", "Batch", "BatchOut", "Kind", "Pass",
           "Point", "Source", "GRADIENT_COST"]
