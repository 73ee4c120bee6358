"""The loss-curve PNG attached to a completion message and to `/status`.

matplotlib is imported inside `loss_chart_png`, on first use, with the Agg backend (no
display): the bot starts without paying for it, and most of its messages never need it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

MIN_POINTS = 2  # one point is not a curve
_SIZE_IN = (6.0, 3.2)
_DPI = 100


def loss_chart_png(title: str, points: Sequence[tuple[int, float]]) -> bytes | None:
    """A PNG of loss against step, or None when there are fewer than two points."""
    if len(points) < MIN_POINTS:
        return None
    import matplotlib  # noqa: PLC0415 - lazy: only a chart needs it

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # noqa: PLC0415 - after the backend is chosen

    # A bare Figure (not pyplot) is never registered globally, so nothing leaks between calls.
    figure = Figure(figsize=_SIZE_IN, dpi=_DPI)
    axes = figure.add_subplot()
    steps = [step for step, _ in points]
    losses = [loss for _, loss in points]
    axes.plot(steps, losses, linewidth=1.5, color="#5865F2")
    axes.set_title(title)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
