"""Inventory attributes reported by devices, and static groups set by operators."""
from sqlalchemy import delete, func, insert

from .. import audit
from ..database import db
from ..deployments import service as deployments
from ..devices.service import get_device
from ..errors import ApiError
from ..models import Device, InventoryAttribute, InventoryValue
from .filters import indexed_values
from .groups import GROUP_NAME

MAX_ATTRIBUTES = 1000


def parse_attributes(document) -> dict[str, tuple[str | list[str], str | None]]:
    """Mender's `[{name, value, description?}]`; value a string (or number) or a list of them."""
    if not isinstance(document, list) or len(document) > MAX_ATTRIBUTES:
        raise ApiError(400, f"expected a list of at most {MAX_ATTRIBUTES} attributes")
    attributes = {}
    for item in document:
        if not isinstance(item, dict):
            raise ApiError(400, "each attribute must be an object {name, value}")
        name, value, description = item.get("name"), item.get("value"), item.get("description")
        if not isinstance(name, str) or not 0 < len(name) <= 255 or "\0" in name:
            raise ApiError(400, "attribute name must be a string of 1 to 255 characters")
        if isinstance(value, list):
            if not all(_is_scalar(v) for v in value):
                raise ApiError(400, f"attribute {name}: list values must be strings or numbers")
            value = [str(v) for v in value]
        elif _is_scalar(value):
            value = str(value)
        else:
            raise ApiError(400, f"attribute {name}: value must be a string, number or list")
        if description is not None and not isinstance(description, str):
            raise ApiError(400, f"attribute {name}: description must be a string")
        attributes[name] = (value, description)
    return attributes


def _is_scalar(value) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def update(device_id: str, attributes: dict, replace: bool) -> None:
    """PUT replaces the whole inventory, PATCH merges into it. A change of values also
    updates what dynamic groups filter on, and may make the device join open deployments
    to a dynamic group (only then: a device reporting the same inventory costs no more)."""
    device = db.session.get(Device, device_id)
    current = {a.name: a for a in device.attributes}
    changed = set()  # names whose values changed
    if replace:
        for name in set(current) - set(attributes):
            device.attributes.remove(current.pop(name))
            changed.add(name)
    for name, (value, description) in attributes.items():
        row = current.get(name)
        if row is None:
            device.attributes.append(InventoryAttribute(name=name, value=value,
                                                        description=description))
            changed.add(name)
        elif row.value != value or row.description != description:
            if row.value != value:
                changed.add(name)
            row.value, row.description = value, description
    if changed:
        _index_values(device_id, {name: attributes.get(name, (None,))[0] for name in changed})
        deployments.add_joiners(device_id)
    db.session.commit()


def _index_values(device_id: str, values: dict[str, str | list | None]) -> None:
    """Replace the `inventory_values` rows of these attributes (None: removed)."""
    db.session.execute(delete(InventoryValue).where(InventoryValue.device_id == device_id,
                                                    InventoryValue.name.in_(list(values))))
    rows = [row for name, value in values.items() if value is not None
            for row in indexed_values(device_id, name, value)]
    if rows:
        db.session.execute(insert(InventoryValue), rows)


def set_group(device_id: str, group: str | None) -> Device:
    if group is not None and not GROUP_NAME.fullmatch(group):
        raise ApiError(400, "group names are 1 to 100 letters, digits, '_' or '-'")
    device = get_device(device_id)
    device.group_name = group
    audit.record("device.group", device_id, group=group)
    db.session.commit()
    return device


def groups() -> list[dict]:
    rows = (db.session.query(Device.group_name, func.count())
            .filter(Device.group_name.is_not(None))
            .group_by(Device.group_name).order_by(Device.group_name))
    return [{"name": name, "devices": count} for name, count in rows]


def attribute_values(name: str, status: str) -> list:
    """Attribute `name` of every device with admission `status`; None where not reported."""
    reported = (InventoryAttribute.device_id == Device.id) & (InventoryAttribute.name == name)
    rows = (db.session.query(InventoryAttribute.value).select_from(Device)
            .outerjoin(InventoryAttribute, reported).filter(Device.status == status))
    return [value for (value,) in rows]
