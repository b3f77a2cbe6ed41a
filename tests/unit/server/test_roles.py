"""Roles (admin, read-only), API token scopes (admin, read-only, metrics), managing users and
their tokens, and the security headers of every answer."""
import base64

import jwt
import pytest
from alembic import command
from sqlalchemy import create_engine, text

from server import create_app
from server.database import db
from server.migrate import alembic_config, upgrade
from server.models import Token, User

from .conftest import PASSWORD

API = "/api/management/v1"
OTHER_PASSWORD = "another password"


def basic(email: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()}


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def make_user(client, admin, email: str, role: str) -> dict:
    response = client.post(f"{API}/users", json={"email": email, "password": OTHER_PASSWORD,
                                                 "role": role}, headers=admin)
    assert response.status_code == 201, response.json
    return response.json


def login(client, email: str, password: str = OTHER_PASSWORD) -> dict:
    response = client.post(f"{API}/auth/login", headers=basic(email, password))
    assert response.status_code == 200, response.json
    return bearer(response.json["token"])


@pytest.fixture
def viewer(client, admin) -> dict:
    """Headers of a logged-in read-only user."""
    make_user(client, admin, "viewer@example.com", "read-only")
    return login(client, "viewer@example.com")


def test_a_read_only_user_reads_everything_and_changes_nothing(client, admin, viewer, fleet,
                                                               upload):
    device = fleet.accepted()
    artifact = upload("app-1.0")
    for path in ("/devices", f"/devices/{device.id}", "/groups", "/artifacts",
                 f"/artifacts/{artifact['id']}", "/deployments", "/users", "/audit", "/tokens"):
        assert client.get(f"{API}{path}", headers=viewer).status_code == 200, path
    assert client.get("/metrics", headers=viewer).status_code == 200
    for method, path, body in (
            ("PUT", f"/devices/{device.id}/status", {"status": "rejected"}),
            ("DELETE", f"/devices/{device.id}", None),
            ("PUT", f"/devices/{device.id}/group", {"group": "lab"}),
            ("DELETE", f"/artifacts/{artifact['id']}", None),
            ("POST", "/deployments", {"name": "d", "artifact_name": "app-1.0",
                                      "all_devices": True}),
            ("POST", "/users", {"email": "x@example.com", "password": OTHER_PASSWORD}),
            ("DELETE", "/users/admin@example.com", None)):
        response = client.open(f"{API}{path}", method=method, json=body, headers=viewer)
        assert response.status_code == 403, (method, path, response.json)
        assert response.json["error"] == ("viewer@example.com is read-only: it can read but "
                                          "not change anything")
    assert client.get(f"{API}/devices/{device.id}", headers=admin).json["status"] == "accepted"
    assert client.get(f"{API}/deployments", headers=admin).json == []


def test_users_have_roles_and_admin_is_the_default(client, admin):
    make_user(client, admin, "viewer@example.com", "read-only")
    listed = client.get(f"{API}/users", headers=admin).json
    assert [(u["email"], u["role"]) for u in listed] == [
        ("admin@example.com", "admin"), ("viewer@example.com", "read-only")]
    wrong = client.post(f"{API}/users", json={"email": "x@example.com",
                                              "password": OTHER_PASSWORD, "role": "root"},
                        headers=admin)
    assert wrong.status_code == 400 and "role must be one of" in wrong.json["error"]


def test_a_metrics_token_reads_metrics_only(client, admin):
    created = client.post(f"{API}/tokens", json={"name": "prometheus", "scope": "metrics"},
                          headers=admin)
    assert created.status_code == 201 and created.json["scope"] == "metrics"
    metrics = bearer(created.json["token"])
    assert client.get("/metrics", headers=metrics).status_code == 200
    for method, path in (("GET", "/devices"), ("GET", "/users"), ("POST", "/users")):
        response = client.open(f"{API}{path}", method=method, json={}, headers=metrics)
        assert response.status_code == 403
        assert response.json["error"] == "a metrics token can only read /metrics"


def test_a_read_only_token_of_an_admin_cannot_change_anything(client, admin):
    created = client.post(f"{API}/tokens", json={"name": "dash", "scope": "read-only"},
                          headers=admin).json
    token = bearer(created["token"])
    assert client.get(f"{API}/devices", headers=token).status_code == 200
    response = client.post(f"{API}/users", json={"email": "x@example.com",
                                                 "password": OTHER_PASSWORD}, headers=token)
    assert response.status_code == 403


def test_a_token_is_never_wider_than_its_user(client, admin, viewer):
    default = client.post(f"{API}/tokens", json={"name": "mine"}, headers=viewer)
    assert default.status_code == 201 and default.json["scope"] == "read-only"
    wider = client.post(f"{API}/tokens", json={"name": "x", "scope": "admin"}, headers=viewer)
    assert wider.status_code == 403
    assert client.post(f"{API}/tokens", json={"name": "x", "scope": "root"},
                       headers=admin).status_code == 400
    # demoting a user narrows its existing tokens at once
    make_user(client, admin, "ops@example.com", "admin")
    ops_token = client.post(f"{API}/tokens", json={"name": "ci"},
                            headers=login(client, "ops@example.com")).json["token"]
    assert client.patch(f"{API}/users/ops@example.com", json={"role": "read-only"},
                        headers=admin).status_code == 200
    assert client.post(f"{API}/users", json={"email": "y@example.com",
                                             "password": OTHER_PASSWORD},
                       headers=bearer(ops_token)).status_code == 403
    assert client.get(f"{API}/devices", headers=bearer(ops_token)).status_code == 200


def test_an_api_token_cannot_mint_tokens(client, admin):
    token = bearer(client.post(f"{API}/tokens", json={"name": "ci"}, headers=admin).json["token"])
    response = client.post(f"{API}/tokens", json={"name": "successor"}, headers=token)
    assert response.status_code == 403
    assert "made with a login token" in response.json["error"]
    assert [t["name"] for t in client.get(f"{API}/tokens", headers=admin).json] == ["ci"]


def test_deleting_a_user_revokes_their_tokens(client, admin):
    user = make_user(client, admin, "ops@example.com", "admin")
    session = login(client, "ops@example.com")
    api_token = bearer(client.post(f"{API}/tokens", json={"name": "ci"},
                                   headers=session).json["token"])
    assert client.delete(f"{API}/users/{user['id']}", headers=admin).status_code == 204
    for headers in (session, api_token):
        assert client.get(f"{API}/devices", headers=headers).status_code == 401
    assert client.delete(f"{API}/users/ops@example.com", headers=admin).status_code == 404
    entry = client.get(f"{API}/audit", headers=admin).json[0]
    assert (entry["action"], entry["detail"]["tokens_revoked"]) == ("user.delete", 2)


def test_the_last_admin_cannot_be_deleted_or_demoted(client, admin, viewer):
    for response in (client.delete(f"{API}/users/admin@example.com", headers=admin),
                     client.patch(f"{API}/users/admin@example.com", json={"role": "read-only"},
                                  headers=admin)):
        assert response.status_code == 409 and "last admin" in response.json["error"]
    assert client.patch(f"{API}/users/viewer@example.com", json={"role": "admin"},
                        headers=admin).json["role"] == "admin"
    assert client.delete(f"{API}/users/admin@example.com", headers=admin).status_code == 204


def test_a_new_password_ends_login_sessions_but_not_api_tokens(client, admin):
    make_user(client, admin, "ops@example.com", "admin")
    session = login(client, "ops@example.com")
    api_token = bearer(client.post(f"{API}/tokens", json={"name": "ci"},
                                   headers=session).json["token"])
    assert client.patch(f"{API}/users/ops@example.com", json={"password": "short"},
                        headers=admin).status_code == 400
    assert client.patch(f"{API}/users/ops@example.com", json={},
                        headers=admin).status_code == 400
    assert client.patch(f"{API}/users/ops@example.com", json={"password": "a new password"},
                        headers=admin).status_code == 200
    assert client.get(f"{API}/devices", headers=session).status_code == 401
    assert client.get(f"{API}/devices", headers=api_token).status_code == 200
    assert client.post(f"{API}/auth/login",
                       headers=basic("ops@example.com", OTHER_PASSWORD)).status_code == 401
    login(client, "ops@example.com", "a new password")


def test_revoke_every_token_of_a_user(client, admin):
    make_user(client, admin, "ops@example.com", "admin")
    session = login(client, "ops@example.com")
    tokens = [bearer(client.post(f"{API}/tokens", json={"name": name},
                                 headers=session).json["token"]) for name in ("a", "b")]
    response = client.delete(f"{API}/users/ops@example.com/tokens", headers=admin)
    assert response.status_code == 200 and response.json == {"revoked": 3}
    for headers in (session, *tokens):
        assert client.get(f"{API}/devices", headers=headers).status_code == 401
    assert client.get(f"{API}/devices", headers=admin).status_code == 200
    assert client.delete(f"{API}/users/nobody/tokens", headers=admin).status_code == 404


def test_users_and_tokens_from_before_roles_are_admins(tmp_path):
    """The upgrade gives no one less than they had: every user and token was an admin."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0002")
    secret = "test-secret-" + "x" * 32
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO users (id, email, password_hash, created_at) VALUES "
            "('u1', 'old@example.com', 'scrypt$x', '2026-01-01 00:00:00')"))
        connection.execute(text(
            "INSERT INTO tokens (id, kind, subject, name, created_at, expires_at) VALUES "
            "('t1', 'api', 'u1', 'ci', '2026-01-01 00:00:00', '2099-01-01 00:00:00')"))
    engine.dispose()
    upgrade(url)
    app = create_app({"DATABASE_URL": url, "SECRET_KEY": secret, "TESTING": True,
                      "ARTIFACTS_DIR": str(tmp_path / "artifacts")})
    with app.app_context():
        assert db.session.get(User, "u1").role == "admin"
        assert db.session.get(Token, "t1").scope is None
    token = jwt.encode({"iss": "tern", "jti": "t1", "sub": "u1", "kind": "api", "iat": 0,
                        "exp": 4070908800}, secret, algorithm="HS256")
    response = app.test_client().post(f"{API}/users", headers=bearer(token), json={
        "email": "new@example.com", "password": PASSWORD})
    assert response.status_code == 201, response.json
    db.dispose(app)


def test_every_answer_forbids_framing_and_sniffing(client, admin):
    for response in (client.get("/login"), client.get("/"), client.get("/api/health"),
                     client.get(f"{API}/devices", headers=admin), client.get("/nowhere")):
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
