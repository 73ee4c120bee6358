from __future__ import annotations

from trainer_bot.charts import loss_chart_png

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_loss_chart_is_a_png() -> None:
    png = loss_chart_png("run-1", [(0, 3.0), (10, 2.5), (20, 2.1)])
    assert png is not None
    assert png.startswith(PNG_MAGIC)
    assert len(png) > 1_000


def test_no_chart_from_fewer_than_two_points() -> None:
    assert loss_chart_png("run-1", []) is None
    assert loss_chart_png("run-1", [(0, 3.0)]) is None
