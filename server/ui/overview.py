"""The fleet overview: devices by status and by installed artifact, deployment outcomes by day.

A few aggregate queries, whatever the fleet's size.
"""
from collections import Counter
from datetime import timedelta

from flask import render_template

from ..deployments import service as deployments
from ..devices import service as devices
from ..inventory import service as inventory
from ..models import utcnow
from . import charts
from .blueprint import blueprint
from .deployments import summary

DAYS = 14
RECENT = 5


@blueprint.get("/")
def overview():
    installed = Counter(_label(value) for value in
                        inventory.attribute_values("artifact_name", devices.ACCEPTED))
    since = utcnow() - timedelta(days=DAYS)
    outcomes = Counter((finished_at.date(), status)
                       for finished_at, status in deployments.outcomes_since(since))
    return render_template(
        "ui/overview.html", by_status=devices.count_by_status(), statuses=devices.STATUSES,
        artifacts_chart=charts.horizontal_bars(installed.most_common()),
        outcomes_chart=charts.daily_outcomes(outcomes, DAYS),
        deployments=[summary(d) for d in deployments.list_deployments()[:RECENT]])


def _label(value) -> str:
    if value is None:
        return "(not reported)"
    return value if isinstance(value, str) else ", ".join(value)
