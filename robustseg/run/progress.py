"""One progress bar per pass, in cost units: a prediction is 1, a gradient evaluation run.GRADIENT_COST, so a
PGD-10 point moves the bar ten times as far as an FGSM one. The ETA is the average rate since the pass began
(tqdm smoothing 0), not a moving average of the last few updates: every batch does every point, so the work is
the same mix from start to end and the average holds steady. Work found done on --resume moves the bar but not the
rate (tqdm's ``initial``). The bar names the point being worked on."""
from __future__ import annotations

from tqdm import tqdm

BAR_FORMAT = "{l_bar}{bar}| {percentage:3.0f}% [{elapsed}<{remaining}]{postfix}"


class Progress:
    def __init__(self, total: float, desc: str, enabled: bool = True):
        self.bar = tqdm(total=total, desc=desc, unit="work", disable=not enabled, dynamic_ncols=True, smoothing=0,
                        bar_format=BAR_FORMAT, initial=0)
        self.start = self.bar.start_t if enabled else None

    def __call__(self, units: float, point: str | None = None) -> None:
        """``units`` of work done; ``point``: what runs now (shown beside the bar)."""
        if point is not None:
            self.bar.set_postfix_str(point, refresh=False)
        if units:
            self.bar.update(units)

    update = __call__

    def skip(self, units: float) -> None:
        """Work already done (resume) or not to do (unusable images): counted, but not in the rate."""
        if units and not self.bar.disable:  # a disabled tqdm keeps no counts
            self.bar.initial += units
            self.bar.update(units)

    def eta(self) -> float | None:
        """Seconds left at the average rate of this pass's work so far (what the bar shows); None before any."""
        b = self.bar
        if self.start is None:
            return None
        done, elapsed = b.n - b.initial, b._time() - self.start
        return None if done <= 0 or elapsed <= 0 else (b.total - b.n) * elapsed / done

    def close(self) -> None:
        self.bar.close()
