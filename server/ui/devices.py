"""Devices: the admission tabs, accept / reject / preauthorize, inventory, groups."""
from flask import flash, render_template, request, url_for

from ..devices import service as devices
from ..errors import ApiError
from ..inventory import service as inventory
from ..validation import parse_json, text
from .blueprint import back, blueprint, page_of


@blueprint.get("/devices")
def device_list():
    status = request.args.get("status", devices.ACCEPTED)
    group = request.args.get("group") or None
    page = page_of(devices.awaiting_decision(group) if status == devices.PENDING
                   else devices.list_devices(status, group))
    return render_template("ui/devices.html", status=status, group=group,
                           statuses=devices.STATUSES, groups=inventory.groups(), page=page,
                           devices=[devices.device_view(d) for d in page["items"]])


@blueprint.get("/devices/<device_id>")
def device(device_id):
    return render_template("ui/device.html",
                           device=devices.device_view(devices.get_device(device_id)),
                           groups=inventory.groups())


@blueprint.post("/devices/<device_id>/status")
def set_device_status(device_id):
    status, auth_id = request.form.get("status", ""), request.form.get("auth_id") or None
    devices.set_status(device_id, status, auth_id)
    flash(f"Device {device_id}: key {status}." if auth_id else f"Device {device_id} {status}.",
          "info")
    return back(url_for("ui.device", device_id=device_id))


@blueprint.post("/devices/preauthorize")
def preauthorize():
    device = devices.preauthorize(parse_identity(request.form.get("identity", "")),
                                  text(request.form, "pubkey", max_length=16384))
    flash(f"Device {device.id} preauthorized.", "info")
    return back(url_for("ui.device_list", status=devices.PREAUTHORIZED))


def parse_identity(text: str) -> dict[str, str]:
    """Identity data typed as `name=value` lines, or as a JSON object."""
    if text.lstrip().startswith("{"):
        return parse_json(text, "identity")
    identity = {}
    for line in filter(None, (line.strip() for line in text.splitlines())):
        name, equals, value = line.partition("=")
        if not equals or not name.strip():
            raise ApiError(400, f"identity line {line!r} is not name=value")
        identity[name.strip()] = value.strip()
    return identity


@blueprint.post("/devices/<device_id>/group")
def set_group(device_id):
    group = None if "clear" in request.form else request.form.get("group", "").strip()
    inventory.set_group(device_id, group)
    flash(f"Device {device_id} is in group {group}." if group else
          f"Device {device_id} is in no group.", "info")
    return back(url_for("ui.device", device_id=device_id))
