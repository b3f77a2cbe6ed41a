"""Geometry of the overview's two SVG charts; the templates draw them (no chart library)."""
from collections import Counter
from datetime import date, timedelta

from ..models import utcnow

ROW, LABEL, BAR = 28, 200, 320  # horizontal bars: row height, label column, longest bar
COLUMN, PLOT = 44, 140  # daily columns: width per day, plot height


def horizontal_bars(counts: list[tuple[str, int]]) -> dict:
    """One bar per label, longest first: `{width, height, bars: [{label, value, y, length}]}`."""
    top = max((value for _, value in counts), default=0) or 1
    bars = [{"label": label, "value": value, "y": index * ROW,
             "length": max(2, round(BAR * value / top))}
            for index, (label, value) in enumerate(counts)]
    return {"width": LABEL + BAR + 60, "height": max(ROW, ROW * len(bars)), "label": LABEL,
            "bars": bars}


def daily_outcomes(outcomes: Counter, days: int, today: date | None = None) -> dict:
    """Success and failure side by side for each of the last `days` days (today last)."""
    today = today or utcnow().date()
    top = max(outcomes.values(), default=0) or 1
    columns = []
    for index in range(days):
        day = today - timedelta(days=days - 1 - index)
        success, failure = outcomes[(day, "success")], outcomes[(day, "failure")]
        columns.append({"day": day.isoformat(), "label": day.strftime("%d"), "x": index * COLUMN,
                        "success": success, "failure": failure,
                        "success_height": round(PLOT * success / top),
                        "failure_height": round(PLOT * failure / top)})
    return {"width": days * COLUMN, "height": PLOT, "column": COLUMN, "top": top,
            "columns": columns}
