"""One JSON error format for the whole API: `{"error": message, "request_id": id}`."""
import logging
import uuid

from flask import Flask, g, jsonify, request
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from werkzeug.exceptions import HTTPException, InternalServerError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A refusal the client can act on; raised by services and routes alike."""

    def __init__(self, status: int, message: str, *, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after  # seconds, for a 429 or 503


def error_response(status: int, message: str, retry_after: int | None = None):
    response = jsonify(error=message, request_id=g.get("request_id"))
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def register_error_handlers(app: Flask) -> None:
    @app.before_request
    def _assign_request_id():
        g.request_id = request.headers.get("X-Request-Id", "")[:64] or uuid.uuid4().hex

    @app.after_request
    def _echo_request_id(response):
        response.headers["X-Request-Id"] = g.get("request_id", "")
        return response

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError):
        return error_response(error.status, error.message, error.retry_after)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        response = error_response(error.code or 500, error.description or error.name)
        if error.code == 405 and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        if error.code == 416 and getattr(error, "length", None) is not None:
            response.headers["Content-Range"] = f"{error.units} */{error.length}"  # the size
        return response

    @app.errorhandler(DataError)
    def _data_error(error: DataError):
        """Input the database refuses (a NUL character for PostgreSQL) that no check caught."""
        log.warning("database refused input in %s %s: %s", request.method, request.path,
                    error.orig)
        return error_response(400, "input contains characters or values that cannot be stored")

    @app.errorhandler(IntegrityError)
    def _integrity_error(error: IntegrityError):
        """Two requests creating the same row at once: the later one may simply retry."""
        log.warning("integrity error in %s %s: %s", request.method, request.path, error.orig)
        return error_response(409, "conflicting concurrent change; retry the request")

    @app.errorhandler(DBAPIError)
    def _database_error(error: DBAPIError):
        """A pooled connection the database dropped (a restart): the pool has discarded it,
        and the retry gets a fresh one (cheaper than a ping before every request)."""
        if not error.connection_invalidated:
            return _unexpected(error)
        log.warning("database connection lost in %s %s: %s", request.method, request.path,
                    error.orig)
        return error_response(503, "database connection lost; retry the request")

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, InternalServerError.description)
