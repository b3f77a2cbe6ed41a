"""Errors of dashboard pages as HTML pages (JSON for the upload's XHR); the APIs keep JSON."""
import logging

from flask import g, render_template, request
from sqlalchemy.exc import DataError, IntegrityError
from werkzeug.exceptions import HTTPException, InternalServerError, NotFound

from ..errors import ApiError, error_response
from .blueprint import blueprint

log = logging.getLogger(__name__)


def error_page(status: int, message: str):
    if request.accept_mimetypes.best == "application/json":
        return error_response(status, message)
    return render_template("ui/error.html", status=status, message=message,
                           request_id=g.get("request_id")), status


@blueprint.errorhandler(ApiError)
def _api_error(error: ApiError):
    return error_page(error.status, error.message)


@blueprint.errorhandler(HTTPException)
def _http_error(error: HTTPException):
    return error_page(error.code or 500, error.description or error.name)


@blueprint.errorhandler(DataError)
def _data_error(_error: DataError):
    return error_page(400, "input contains characters or values that cannot be stored")


@blueprint.errorhandler(IntegrityError)
def _integrity_error(_error: IntegrityError):
    return error_page(409, "conflicting concurrent change; please try again")


@blueprint.errorhandler(Exception)
def _unexpected(_error: Exception):
    log.exception("unhandled error in %s %s", request.method, request.path)
    return error_page(500, InternalServerError.description)


def not_found(error: NotFound):
    """An unknown address outside any blueprint: a page for browsers, JSON under /api/."""
    if request.path.startswith("/api/"):
        return error_response(404, error.description)
    return error_page(404, f"There is no page at {request.path}.")
