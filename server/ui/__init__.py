"""The web dashboard: server-rendered pages for operators, over the same services and users as
the management API.

A browser logs in with email and password; the session cookie holds a login token, checked
like a bearer token on every request and revoked on logout. Every form carries a CSRF token.
"""
from flask import Flask, Request
from flask.sessions import SecureCookieSessionInterface

from .blueprint import blueprint, csrf


class DashboardSessions(SecureCookieSessionInterface):
    """Session cookies for the dashboard's pages only. The APIs authenticate with bearer
    tokens; a device's poll has no cookie to parse and no signer to build."""

    def open_session(self, app: Flask, request: Request):
        if request.path.startswith("/api/"):
            return None  # Flask's null session: nothing stored, nothing sent back
        return super().open_session(app, request)


def init_app(app: Flask) -> None:
    from . import artifacts, deployments, devices, errors, overview, session  # noqa: F401

    app.session_interface = DashboardSessions()
    csrf.init_app(app)
    app.register_blueprint(blueprint)
    app.register_error_handler(404, errors.not_found)
