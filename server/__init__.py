"""Tern management server: a Mender-compatible device API and a management API.

    app = create_app({"DATABASE_URL": "sqlite:///tern.db", "SECRET_KEY": "...",
                      "ARTIFACTS_DIR": "artifacts"})
"""
from collections.abc import Mapping

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from .artifacts.keys import init_app as init_artifact_keys
from .config import Config
from .database import db
from .errors import register_error_handlers
from .storage import init_app as init_storage


def create_app(config: Mapping | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_object(Config)
    app.config.update(config or {})
    if not app.config["SECRET_KEY"]:
        raise RuntimeError("SECRET_KEY is not set (tern-server init makes one)")
    db.init_app(app)
    init_storage(app)
    init_artifact_keys(app)
    register_error_handlers(app)
    app.after_request(_security_headers)
    if app.config["FORWARDED_FOR_HOPS"]:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=app.config["FORWARDED_FOR_HOPS"],
                                x_proto=0, x_host=0, x_port=0, x_prefix=0)

    from . import metrics, openapi
    from .artifacts import routes as artifacts
    from .deployments import routes as deployments
    from .devices import routes as devices
    from .events import routes as events
    from .events import service as event_service
    from .inventory import routes as inventory
    from .users import routes as users

    for blueprint in (devices.device_api, inventory.device_api, deployments.device_api,
                      artifacts.download_api, devices.management_api, inventory.management_api,
                      artifacts.management_api, deployments.management_api,
                      users.management_api, events.management_api, openapi.blueprint):
        app.register_blueprint(blueprint)
    event_service.init_app(app)
    metrics.init_app(app)

    from . import ui
    ui.init_app(app)  # the web dashboard
    return app


def _security_headers(response):
    """No page of ours may be framed (clickjacking), and no browser may guess a response's
    type from its bytes (an uploaded file shown as HTML)."""
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
