"""The fleet overview: devices by status and by installed artifact, deployment outcomes by day."""
from collections import Counter
from datetime import timedelta

from flask import render_template

from ..deployments import service as deployments
from ..devices import service as devices
from ..models import utcnow
from . import charts
from .blueprint import blueprint
from .deployments import summary

DAYS = 14


@blueprint.get("/")
def overview():
    fleet = devices.list_devices()
    by_status = Counter(device.status for device in fleet)
    by_artifact = Counter(_installed_artifact(device) for device in fleet
                          if device.status == devices.ACCEPTED)
    recent = deployments.list_deployments()
    return render_template(
        "ui/overview.html", by_status=by_status, statuses=devices.STATUSES,
        artifacts_chart=charts.horizontal_bars(by_artifact.most_common()),
        outcomes_chart=charts.daily_outcomes(_outcomes_by_day(recent), DAYS),
        deployments=[summary(d) for d in recent[:5]])


def _installed_artifact(device) -> str:
    names = [a.value for a in device.attributes if a.name == "artifact_name"]
    return str(names[0]) if names else "(not reported)"


def _outcomes_by_day(recent) -> Counter:
    """(day, "success" | "failure") -> how many devices finished so, over the last DAYS days."""
    since = utcnow() - timedelta(days=DAYS)
    return Counter((d.finished_at.date(), d.status) for deployment in recent
                   for d in deployment.devices
                   if d.status in ("success", "failure") and d.finished_at >= since)
