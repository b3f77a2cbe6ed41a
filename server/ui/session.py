"""Logging in and out of the dashboard, with the users of the management API."""
from flask import flash, g, redirect, render_template, request, session, url_for

from ..errors import ApiError
from ..users import service as users
from ..validation import text
from .blueprint import blueprint, safe_next


@blueprint.get("/login")
def login():
    return render_template("ui/login.html", next=request.args.get("next", ""))


@blueprint.post("/login")
def login_submit():
    email, next_page = request.form.get("email", ""), request.form.get("next", "")
    try:
        token = users.login(text(request.form, "email", max_length=254),
                            text(request.form, "password", max_length=1024),
                            request.remote_addr or "")
    except ApiError as error:
        flash(error.message, "error")
        headers = {"Retry-After": str(error.retry_after)} if error.retry_after else {}
        return (render_template("ui/login.html", email=email, next=next_page), error.status,
                headers)
    session.clear()  # a fresh session (and CSRF token) for the logged-in user
    session["token"] = token
    return redirect(safe_next(next_page, url_for("ui.overview")), 303)


@blueprint.post("/logout")
def logout():
    users.logout(g.principal.token_id)
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("ui.login"), 303)
