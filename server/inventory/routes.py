"""Inventory: devices report attributes; operators group devices."""
from flask import Blueprint, request

from ..auth import current_principal, device_required, user_required
from ..devices.service import device_view
from ..validation import field, json_body
from . import service

device_api = Blueprint("device_inventory", __name__,
                       url_prefix="/api/devices/v1/inventory/device")
management_api = Blueprint("inventory", __name__, url_prefix="/api/management/v1")


@device_api.route("/attributes", methods=["PUT", "PATCH"])
@device_required
def report_attributes():
    attributes = service.parse_attributes(json_body(list))
    service.update(current_principal().subject, attributes, replace=request.method == "PUT")
    return "", 200


@management_api.put("/devices/<device_id>/group")
@management_api.delete("/devices/<device_id>/group")
@user_required
def set_group(device_id):
    group = field(json_body(), "group", str) if request.method == "PUT" else None
    return device_view(service.set_group(device_id, group))


@management_api.get("/groups")
@user_required
def list_groups():
    return service.groups()
