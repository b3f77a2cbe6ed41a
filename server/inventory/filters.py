"""Inventory filters, the definition of a dynamic group, evaluated in SQL.

A filter is a list of conditions that must all hold, in Mender's shape:

    [{"attribute": "device_type", "type": "$eq", "value": "raspberrypi4"},
     {"attribute": "ram_mb", "type": "$gte", "value": 512},
     {"attribute": "region", "type": "$in", "value": ["eu-west", "eu-north"]},
     {"attribute": "serial", "type": "$exists", "value": true}]

Types: `$eq`, `$lt`, `$lte`, `$gt`, `$gte`, `$in`, `$exists`. Values follow the filter's JSON
type: a number compares numbers as numbers (only attribute values that are decimal numbers,
such as "512" or "1.5e3", match it), a string compares text byte by byte (UTF-8 order on
both databases). A list attribute matches when any of its items does. Each condition is an
index lookup in `inventory_values` (by name and text, or name and number) or, for `$exists`,
in `inventory` (by name).
"""
import math
import re
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Select, and_, not_, or_, select

from ..errors import ApiError
from ..models import Device, InventoryAttribute, InventoryValue

DECIMAL = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")
MAX_FILTERED_CHARS = 512  # longer values are not indexed, and no filter sees them
MAX_CONDITIONS = 20
MAX_IN_VALUES = 100
COMPARISONS = {"$eq": "__eq__", "$lt": "__lt__", "$lte": "__le__", "$gt": "__gt__",
               "$gte": "__ge__"}
TYPES = (*COMPARISONS, "$in", "$exists")


@dataclass(frozen=True)
class Condition:
    attribute: str
    type: str
    value: str | float | bool | tuple


def number_of(text: str) -> float | None:
    """The number a value is, if it is written as a finite decimal number."""
    if not DECIMAL.fullmatch(text):
        return None
    number = float(text)
    return number if math.isfinite(number) else None


def indexed_values(device_id: str, name: str, value: str | list) -> list[dict]:
    """The `inventory_values` rows of one attribute."""
    return [{"device_id": device_id, "name": name, "value": item, "number": number_of(item)}
            for item in dict.fromkeys(value if isinstance(value, list) else [value])
            if len(item) <= MAX_FILTERED_CHARS]


def parse_filter(document) -> list[Condition]:
    """The conditions of a filter from a client; anything malformed is a 400 saying where."""
    if not isinstance(document, list) or not 0 < len(document) <= MAX_CONDITIONS:
        raise ApiError(400, f"filter must be a list of 1 to {MAX_CONDITIONS} conditions")
    return [_condition(index, item) for index, item in enumerate(document)]


def _condition(index: int, item) -> Condition:
    where = f"filter[{index}]"
    if not isinstance(item, dict):
        raise ApiError(400, f"{where} must be an object {{attribute, type, value}}")
    unknown = set(item) - {"attribute", "type", "value", "scope"}
    if unknown:
        raise ApiError(400, f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if item.get("scope", "inventory") != "inventory":
        raise ApiError(400, f"{where}: the only scope is 'inventory'")
    attribute, kind, value = item.get("attribute"), item.get("type"), item.get("value")
    if not isinstance(attribute, str) or not 0 < len(attribute) <= 255 or "\0" in attribute:
        raise ApiError(400, f"{where}: attribute must be a name of 1 to 255 characters")
    if kind not in TYPES:
        raise ApiError(400, f"{where}: type must be one of {', '.join(TYPES)}")
    if kind == "$exists":
        if not isinstance(value, bool):
            raise ApiError(400, f"{where}: $exists takes true or false")
        return Condition(attribute, kind, value)
    if kind == "$in":
        if not isinstance(value, list) or not 0 < len(value) <= MAX_IN_VALUES:
            raise ApiError(400, f"{where}: $in takes a list of 1 to {MAX_IN_VALUES} values")
        return Condition(attribute, kind, tuple(_scalar(where, v) for v in value))
    return Condition(attribute, kind, _scalar(where, value))


def _scalar(where: str, value) -> str | float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ApiError(400, f"{where}: value must be a string or a number")
    if isinstance(value, str):
        if len(value) > MAX_FILTERED_CHARS or "\0" in value:
            raise ApiError(400, f"{where}: a string value has at most {MAX_FILTERED_CHARS} "
                                "characters, without NUL")
        return value
    if not math.isfinite(value):
        raise ApiError(400, f"{where}: numbers must be finite")
    return float(value)


def _matches(condition: Condition) -> ColumnElement:
    """Whether the device (`InventoryAttribute`/`InventoryValue` rows by device id) meets one
    condition: `device_id IN (index lookup)`."""
    if condition.type == "$exists":
        named = select(InventoryAttribute.device_id).where(
            InventoryAttribute.name == condition.attribute)
        return _device_in(named) if condition.value else not_(_device_in(named))
    values = condition.value if condition.type == "$in" else (condition.value,)
    operator = COMPARISONS.get(condition.type, "__eq__")
    texts = [v for v in values if isinstance(v, str)]
    numbers = [v for v in values if isinstance(v, float)]
    wanted = []
    if texts:
        wanted.append(InventoryValue.value.in_(texts) if len(texts) > 1
                      else getattr(InventoryValue.value, operator)(texts[0]))
    if numbers:
        wanted.append(InventoryValue.number.in_(numbers) if len(numbers) > 1
                      else getattr(InventoryValue.number, operator)(numbers[0]))
    return _device_in(select(InventoryValue.device_id).where(
        InventoryValue.name == condition.attribute, or_(*wanted)))


def _device_in(lookup: Select) -> ColumnElement:
    return Device.id.in_(lookup)


def matching(conditions: list[Condition]) -> ColumnElement:
    """A WHERE clause on `devices` selecting those that meet every condition."""
    return and_(*(_matches(c) for c in conditions))
