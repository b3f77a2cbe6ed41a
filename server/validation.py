"""Reading and checking JSON bodies: every mistake is a 400 with a message, never a 500."""
import json
from typing import Any

from flask import request

from .errors import ApiError


def json_body(expected: type = dict) -> Any:
    """The request's JSON, read in full (chunked bodies too; Flask's MAX_CONTENT_LENGTH caps it)."""
    document = parse_json(request.get_data(cache=True), "request body")
    if not isinstance(document, expected):
        raise ApiError(400, f"request body must be a JSON {_kind(expected)}")
    return document


def parse_json(data: str | bytes, what: str) -> Any:
    """JSON from a client, every string of it valid Unicode: the one way JSON enters (bodies,
    a device's identity data, the dashboard's identity field). JSON may escape a lone UTF-16
    surrogate (`"\\ud800"`), which Python keeps as a string that cannot be encoded to UTF-8:
    stored, it would break every page and answer that shows it."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise ApiError(400, f"{what} must be JSON") from None
    if not _valid_unicode(document):
        raise ApiError(400, f"{what} contains a string that is not valid Unicode "
                            "(a lone surrogate)")
    return document


def _valid_unicode(document: Any) -> bool:
    """Whether every string (keys too) encodes to UTF-8; iterative, as JSON may nest deep."""
    stack = [document]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str) and not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                return False
    return True


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
