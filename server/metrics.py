"""Prometheus metrics at /metrics, and one JSON log line per request.

Counters and the latency histogram live in each process; under gunicorn `serve` points
PROMETHEUS_MULTIPROC_DIR at a fresh directory before the workers start, and a scrape adds
up every worker's numbers. Fleet gauges (devices by status, deployments by state) are
counted in the database at scrape time, so every instance reports the same.
"""
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import case, func, select

from .auth import DEVICE, METRICS, user_required
from .database import db
from .models import Deployment, Device, DeviceDeployment

POLLS = Counter("tern_device_polls", "Deployment `next` requests from devices")
BYTES_SERVED = Counter("tern_artifact_bytes_served",
                       "Artifact bytes the server answered downloads with (ranges counted)")
REQUEST_SECONDS = Histogram("tern_request_duration_seconds", "Time to answer a request",
                            ["method", "endpoint", "status"],
                            buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10))

blueprint = Blueprint("metrics", __name__)
request_log = logging.getLogger("tern.requests")


class _Families:
    """A collector of families already counted."""

    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def _fleet_families() -> list[GaugeMetricFamily]:
    devices = GaugeMetricFamily("tern_devices", "Devices by admission status", labels=["status"])
    for status, count in db.session.execute(
            select(Device.status, func.count()).group_by(Device.status)):
        devices.add_metric([status], count)
    device_deployments = GaugeMetricFamily("tern_device_deployments",
                                           "Devices' deployments by status", labels=["status"])
    for status, count in db.session.execute(
            select(DeviceDeployment.status, func.count()).group_by(DeviceDeployment.status)):
        device_deployments.add_metric([status], count)
    deployments = GaugeMetricFamily("tern_deployments", "Deployments by state", labels=["state"])
    states = dict.fromkeys(("pending", "inprogress", "paused", "finished", "aborted"), 0)
    rows = db.session.execute(
        select(Deployment.aborted_at.is_not(None), Deployment.paused_at.is_not(None),
               func.count(DeviceDeployment.id) - func.count(DeviceDeployment.finished_at),
               func.count(case((DeviceDeployment.status != "pending", 1))))
        .outerjoin(DeviceDeployment).group_by(Deployment.id))
    for aborted, paused, still_open, started in rows:  # as deployments.service.status_of
        states["aborted" if aborted else "finished" if not still_open else "paused" if paused
               else "inprogress" if started else "pending"] += 1
    for state, count in states.items():
        deployments.add_metric([state], count)
    return [devices, device_deployments, deployments]


@blueprint.get("/metrics")
@user_required(minimum=METRICS)
def metrics():
    """Needs a user or API token, a metrics-scoped one will do (Prometheus:
    `authorization: {credentials_file: ...}`)."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        text = generate_latest(registry)
    else:
        text = generate_latest(REGISTRY)
    fleet = CollectorRegistry()
    fleet.register(_Families(_fleet_families()))
    return Response(text + generate_latest(fleet), content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    """Time every request; with REQUEST_LOG = "json", log it as one JSON line on stderr."""
    log_json = app.config.get("REQUEST_LOG") == "json"
    if log_json and not request_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        request_log.addHandler(handler)
        request_log.setLevel(logging.INFO)
        request_log.propagate = False

    @app.before_request
    def _start_clock():
        g.started = time.perf_counter()

    @app.after_request
    def _observe(response):
        context, req = g._get_current_object(), request._get_current_object()  # one lookup each
        seconds = time.perf_counter() - context.pop("started", time.perf_counter())
        status = response.status_code
        endpoint = req.url_rule.rule if req.url_rule else "unmatched"
        REQUEST_SECONDS.labels(req.method, endpoint, status).observe(seconds)
        if log_json:
            fields = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                      "method": req.method, "path": req.path, "status": status,
                      "duration_ms": round(seconds * 1000, 2),
                      "bytes": response.content_length, "remote": req.remote_addr,
                      "request_id": context.get("request_id")}
            principal = context.get("principal")
            if principal is not None:
                fields["device_id" if principal.kind == DEVICE else "user_id"] = \
                    principal.subject
            request_log.info(json.dumps(fields))
        return response

    app.register_blueprint(blueprint)
