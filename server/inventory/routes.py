"""Inventory: devices report attributes; operators group devices, statically or by a filter."""
from flask import Blueprint, request

from ..auth import current_principal, device_required, user_required
from ..devices.service import device_view
from ..validation import field, json_body, text
from . import groups, service

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


@management_api.get("/dynamic-groups")
@user_required
def list_dynamic_groups():
    return [groups.group_view(g) for g in groups.list_groups()]


@management_api.post("/dynamic-groups")
@user_required
def create_dynamic_group():
    body = json_body()
    group = groups.create(text(body, "name", max_length=100), field(body, "filter", list))
    return groups.group_view(group), 201


@management_api.get("/dynamic-groups/<name>")
@user_required
def show_dynamic_group(name):
    return groups.group_view(groups.get(name))


@management_api.get("/dynamic-groups/<name>/devices")
@user_required
def dynamic_group_devices(name):
    """The ids of the accepted devices that match the group's filter now."""
    return groups.device_ids(groups.get(name))


@management_api.delete("/dynamic-groups/<name>")
@user_required
def delete_dynamic_group(name):
    groups.delete(name)
    return "", 204
