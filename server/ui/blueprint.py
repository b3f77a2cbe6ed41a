"""The dashboard's blueprint and what every page shares: login, roles, CSRF, safe redirects."""
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, g, redirect, request, session, url_for
from flask_wtf.csrf import CSRFProtect

from ..auth import ADMIN, USER, authenticate_token, require_role
from ..deployments import downloads
from ..errors import ApiError

blueprint = Blueprint("ui", __name__, template_folder="templates", static_folder="static",
                      static_url_path="/assets")
csrf = CSRFProtect()

PAGE_SIZE = 100
PUBLIC = {"ui.login", "ui.login_submit", "ui.static"}
ANY_ROLE = PUBLIC | {"ui.logout"}  # every other form changes something: admins only
FORM_PAGES = {"ui.new_deployment"}  # pages that are only a form: admins only
LARGE_BODIES = {"ui.upload_artifact"}


@blueprint.before_request
def _require_login_then_csrf():
    if request.endpoint in LARGE_BODIES:  # before CSRF reads the form and caps the body
        request.max_content_length = current_app.config["MAX_ARTIFACT_BYTES"]
    if request.endpoint not in PUBLIC:
        principal = _session_principal()
        if principal is None:
            target = request.full_path if request.method == "GET" else None
            return redirect(url_for("ui.login", next=target), 303)
        g.principal = principal
        if (request.method != "GET" or request.endpoint in FORM_PAGES) \
                and request.endpoint not in ANY_ROLE:
            require_role(principal, ADMIN)
    csrf.protect()


@blueprint.context_processor
def _can_change() -> dict:
    """`can_change`: whether the page shows its actions (a read-only user's does not)."""
    principal = g.get("principal")
    return {"can_change": principal is not None and principal.role == ADMIN}


def _session_principal():
    token = session.get("token")
    if token is None:
        return None
    try:
        return authenticate_token(token, (USER,))
    except ApiError:
        session.clear()
        flash("Your session has ended; please log in again.", "error")
        return None


def safe_next(target: str | None, default: str) -> str:
    """A local path to go back to: never another site (`//host`, `https://host`)."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and target.startswith("/") \
                and not target.startswith("//") and "\\" not in target:
            return target
    return default


def back(default: str):
    """After a form: see-other to the page it came from (its `next` field) or `default`."""
    return redirect(safe_next(request.form.get("next"), default), 303)


@blueprint.app_template_filter("downloaded")
def downloaded(download: dict | None) -> str:
    """What a device fetched for a deployment (deployments.downloads)."""
    return downloads.describe(downloads.DownloadStats(**download) if download else None)


@blueprint.app_template_filter("when")
def when(iso_time: str | None) -> str:
    """An ISO 8601 UTC time as `YYYY-MM-DD HH:MM`."""
    return iso_time[:16].replace("T", " ") if iso_time else ""


def page_of(items: list) -> dict:
    """The page of `items` the `page` query argument asks for, PAGE_SIZE a page."""
    pages = max(1, -(-len(items) // PAGE_SIZE))
    page = min(max(request.args.get("page", 1, type=int), 1), pages)
    start = (page - 1) * PAGE_SIZE
    shown = items[start:start + PAGE_SIZE]
    return {"items": shown, "page": page, "pages": pages, "first": start + 1,
            "last": start + len(shown), "total": len(items)}
