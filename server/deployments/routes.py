"""Deployments: the device API (`next`, status, log) and deployment management."""
from flask import Blueprint, g, request

from ..auth import current_principal, device_required, user_required
from ..errors import ApiError
from ..metrics import POLLS
from ..validation import field, json_body, string_list, text
from . import service

device_api = Blueprint("device_deployments", __name__, url_prefix="/api/devices")
management_api = Blueprint("deployments", __name__, url_prefix="/api/management/v1/deployments")

DEVICE_DEPLOYMENTS = "/v1/deployments/device/deployments"


def _provides(document) -> dict[str, str]:
    if not isinstance(document, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in document.items()):
        raise ApiError(400, "device provides must be an object of strings")
    return document


def _next(provides: dict[str, str]):
    POLLS.inc()
    answer = service.next_for_device(current_principal().subject, provides,
                                     g.anything_to_do)
    return (answer, 200) if answer else ("", 204)


@device_api.post("/v2/deployments/device/deployments/next")
@device_required(anything_to_do=service.ANYTHING_TO_DO)
def next_v2():
    return _next(_provides(field(json_body(), "device_provides", dict)))


@device_api.post(f"{DEVICE_DEPLOYMENTS}/next")
@device_required(anything_to_do=service.ANYTHING_TO_DO)
def next_v1():
    return _next(_provides(json_body()))


@device_api.get(f"{DEVICE_DEPLOYMENTS}/next")
@device_required(anything_to_do=service.ANYTHING_TO_DO)
def next_v1_get():
    return _next(_provides(request.args.to_dict()))


@device_api.put(f"{DEVICE_DEPLOYMENTS}/<deployment_id>/status")
@device_required
def report_status(deployment_id):
    body = json_body()
    service.report_status(current_principal().subject, deployment_id,
                          text(body, "status", max_length=64),
                          text(body, "substate", required=False, max_length=4096))
    return "", 204


@device_api.put(f"{DEVICE_DEPLOYMENTS}/<deployment_id>/log")
@device_required
def upload_log(deployment_id):
    service.store_log(current_principal().subject, deployment_id,
                      field(json_body(), "messages", list))
    return "", 204


@management_api.post("")
@user_required
def create():
    body = json_body()
    start_at = body.get("start_at")
    window = text(body, "window", required=False, max_length=11)
    deployment = service.create(
        text(body, "name"), text(body, "artifact_name"),
        devices=string_list(body, "devices", required=False),
        group=text(body, "group", required=False, max_length=100),
        dynamic_group=text(body, "dynamic_group", required=False, max_length=100),
        fixed=field(body, "fixed", bool, required=False, default=False),
        all_devices=field(body, "all_devices", bool, required=False, default=False),
        force=field(body, "force", bool, required=False, default=False),
        phases=service.plan_phases(body.get("phases"), body.get("max_failures")),
        retries=field(body, "retries", int, required=False, default=0),
        start_at=None if start_at is None else service.parse_time(start_at, "start_at"),
        window=None if window is None else service.parse_window(window))
    return service.deployment_view(deployment), 201


@management_api.get("")
@user_required
def list_deployments():
    return [service.deployment_view(d) for d in service.list_deployments()]


@management_api.get("/<deployment_id>")
@user_required
def show(deployment_id):
    return service.deployment_view(service.get(deployment_id))


@management_api.get("/<deployment_id>/statistics")
@user_required
def statistics(deployment_id):
    return service.statistics(service.get(deployment_id))


@management_api.get("/<deployment_id>/devices")
@user_required
def devices(deployment_id):
    return [service.device_deployment_view(d) for d in service.get(deployment_id).devices]


@management_api.get("/<deployment_id>/devices/<device_id>/log")
@user_required
def device_log(deployment_id, device_id):
    return {"messages": service.device_log(deployment_id, device_id)}


@management_api.put("/<deployment_id>/status")
@user_required
def abort(deployment_id):
    if text(json_body(), "status", max_length=32) != "aborted":
        raise ApiError(400, "the only status an operator can set is 'aborted'")
    return service.deployment_view(service.abort(deployment_id))


def _optional_body() -> dict:
    return json_body() if request.get_data(cache=True) else {}


@management_api.post("/<deployment_id>/pause")
@user_required
def pause(deployment_id):
    reason = text(_optional_body(), "reason", required=False, max_length=1000)
    return service.deployment_view(service.pause(deployment_id, reason))


@management_api.post("/<deployment_id>/resume")
@user_required
def resume(deployment_id):
    artifact_name = text(_optional_body(), "artifact_name", required=False)
    return service.deployment_view(service.resume(deployment_id, artifact_name))


@management_api.post("/<deployment_id>/release")
@user_required
def release(deployment_id):
    return service.deployment_view(service.release(deployment_id))
