"""Dynamic groups: a name for an inventory filter (`filters`), whose devices are the accepted
devices that match it now. Static groups (a device's `group_name`) are in `service`."""
import re

from .. import audit
from ..database import db
from ..errors import ApiError
from ..models import Device, DynamicGroup
from . import filters

ACCEPTED = "accepted"  # devices.service.ACCEPTED, which imports the users of this module
GROUP_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")  # static and dynamic groups alike


def create(name: str, document) -> DynamicGroup:
    if not GROUP_NAME.fullmatch(name):
        raise ApiError(400, "group names are 1 to 100 letters, digits, '_' or '-'")
    check_filter(document)
    if find(name) is not None:
        raise ApiError(409, f"dynamic group {name} exists")
    group = DynamicGroup(name=name, filter=document)
    db.session.add(group)
    audit.record("group.create", name, filter=document)
    db.session.commit()
    return group


def find(name: str) -> DynamicGroup | None:
    return db.session.get(DynamicGroup, name)


def get(name: str) -> DynamicGroup:
    group = find(name)
    if group is None:
        raise ApiError(404, f"no dynamic group {name}")
    return group


def list_groups() -> list[DynamicGroup]:
    return db.session.query(DynamicGroup).order_by(DynamicGroup.name).all()


def delete(name: str) -> None:
    """Deployments made to the group keep the filter they were made with."""
    db.session.delete(get(name))
    audit.record("group.delete", name)
    db.session.commit()


def check_filter(document, where: str = "filter") -> None:
    """A 400 unless `document` is a filter (the error says `where` it is)."""
    try:
        filters.parse_filter(document)
    except ApiError as error:
        if where == "filter":
            raise
        raise ApiError(400, where + error.message.removeprefix("filter")) from None


def members(document: list):
    """A query of the ids of the accepted devices matching a (checked) filter."""
    return db.session.query(Device.id).filter(Device.status == ACCEPTED,
                                              filters.matching(filters.parse_filter(document)))


def device_ids(group: DynamicGroup) -> list[str]:
    return [d for (d,) in members(group.filter).order_by(Device.id)]


def group_view(group: DynamicGroup, with_count: bool = True) -> dict:
    view = {"name": group.name, "filter": group.filter, "created_at": group.created_at.isoformat()}
    if with_count:
        view["devices"] = members(group.filter).count()
    return view
