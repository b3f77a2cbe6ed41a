"""The web dashboard: server-rendered pages for operators, over the same services and users as
the management API.

A browser logs in with email and password; the session cookie holds a login token, checked
like a bearer token on every request and revoked on logout. Every form carries a CSRF token.
"""
from flask import Flask

from .blueprint import blueprint, csrf


def init_app(app: Flask) -> None:
    from . import artifacts, deployments, devices, errors, overview, session  # noqa: F401

    csrf.init_app(app)
    app.register_blueprint(blueprint)
    app.register_error_handler(404, errors.not_found)
