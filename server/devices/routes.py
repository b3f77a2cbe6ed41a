"""Device authentication: the device API (`auth_requests`) and device admission management."""
from flask import Blueprint, request

from ..auth import user_required
from ..validation import field, json_body, text
from . import service

device_api = Blueprint("device_auth", __name__, url_prefix="/api/devices/v1/authentication")
management_api = Blueprint("devices", __name__, url_prefix="/api/management/v1/devices")


@device_api.post("/auth_requests")
def auth_request():
    token = service.authenticate(request.get_data(), request.headers.get("X-MEN-Signature"),
                                 service.source_of(request.remote_addr))
    return token, 200, {"Content-Type": "application/jwt"}


@management_api.get("")
@user_required
def list_devices():
    attributes = {key[5:]: value for key, value in request.args.items()
                  if key.startswith("attr.")}
    devices = service.list_devices(request.args.get("status"), request.args.get("group"),
                                   attributes)
    return [service.device_view(d) for d in devices]


@management_api.get("/<device_id>")
@user_required
def show_device(device_id):
    return service.device_view(service.get_device(device_id))


@management_api.post("")
@user_required
def preauthorize():
    body = json_body()
    device = service.preauthorize(field(body, "identity_data", dict),
                                  text(body, "pubkey", max_length=16384))
    return service.device_view(device), 201


@management_api.put("/<device_id>/status")
@user_required
def set_status(device_id):
    body = json_body()
    device = service.set_status(device_id, text(body, "status", max_length=32),
                                text(body, "auth_id", required=False, max_length=36))
    return service.device_view(device)


@management_api.delete("/<device_id>/tokens")
@user_required
def revoke_tokens(device_id):
    return {"revoked": service.revoke_device_tokens(device_id)}


@management_api.delete("/<device_id>")
@user_required
def decommission(device_id):
    service.decommission(device_id)
    return "", 204
