"""Reading and checking JSON bodies: every mistake is a 400 with a message, never a 500."""
import json
from typing import Any

from flask import request

from .errors import ApiError


def json_body(expected: type = dict) -> Any:
    """The request's JSON, read in full (chunked bodies too; Flask's MAX_CONTENT_LENGTH caps it)."""
    try:
        document = json.loads(request.get_data(cache=True))
    except (ValueError, RecursionError):
        raise ApiError(400, "request body must be JSON") from None
    if not isinstance(document, expected):
        raise ApiError(400, f"request body must be a JSON {_kind(expected)}")
    return document


def field(document: dict, name: str, kind: type | tuple[type, ...], *,
          required: bool = True, default: Any = None) -> Any:
    if name not in document or document[name] is None:
        if required:
            raise ApiError(400, f"'{name}' is required")
        return default
    value = document[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ApiError(400, f"'{name}' must be a {_kind(kind)}")
    return value


def text(document: dict, name: str, *, required: bool = True, max_length: int = 255,
         default: str | None = None) -> str | None:
    value = field(document, name, str, required=required, default=default)
    if value is not None and (not value.strip() or len(value) > max_length or "\0" in value):
        raise ApiError(400, f"'{name}' must be a non-empty string of at most {max_length} "
                            "characters, without NUL")
    return value


def string_list(document: dict, name: str, *, required: bool = True) -> list[str] | None:
    value = field(document, name, list, required=required)
    if value is not None and not all(isinstance(item, str) and item for item in value):
        raise ApiError(400, f"'{name}' must be a list of non-empty strings")
    return value


def _kind(kind) -> str:
    names = {dict: "object", list: "list", str: "string", int: "integer", bool: "boolean"}
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)
