"""Users, login, personal API tokens and the audit log."""
import base64

from server.database import db
from server.models import User

from .conftest import PASSWORD

LOGIN = "/api/management/v1/auth/login"


def basic(email: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()}


def test_wrong_password_and_unknown_user_are_401(client, admin):
    assert client.post(LOGIN, headers=basic("admin@example.com", "wrong")).status_code == 401
    assert client.post(LOGIN, headers=basic("nobody@example.com", PASSWORD)).status_code == 401
    assert client.post(LOGIN).status_code == 401


def test_passwords_are_stored_hashed(app, admin):
    with app.app_context():
        stored = db.session.query(User).one().password_hash
    assert stored.startswith("scrypt$") and PASSWORD not in stored


def test_create_user_then_log_in_as_them(client, admin):
    response = client.post("/api/management/v1/users", json={
        "email": "ops@example.com", "password": "another password"}, headers=admin)
    assert response.status_code == 201
    assert client.post(LOGIN, headers=basic("ops@example.com", "another password")).json["token"]
    again = client.post("/api/management/v1/users", json={
        "email": "ops@example.com", "password": "another password"}, headers=admin)
    assert again.status_code == 409
    short = client.post("/api/management/v1/users", json={
        "email": "x@example.com", "password": "short"}, headers=admin)
    assert short.status_code == 400


def test_personal_api_token_works_until_revoked(client, admin):
    created = client.post("/api/management/v1/tokens", json={"name": "ci"}, headers=admin).json
    token_headers = {"Authorization": f"Bearer {created['token']}"}
    assert client.get("/api/management/v1/devices", headers=token_headers).status_code == 200
    listed = client.get("/api/management/v1/tokens", headers=admin).json
    assert [t["name"] for t in listed] == ["ci"] and "token" not in listed[0]
    assert client.delete(f"/api/management/v1/tokens/{created['id']}",
                         headers=admin).status_code == 204
    assert client.get("/api/management/v1/devices", headers=token_headers).status_code == 401


def test_management_actions_are_audited(fleet, client, admin):
    device = fleet.accepted()
    client.put(f"/api/management/v1/devices/{device.id}/status", json={"status": "rejected"},
               headers=admin)
    entries = client.get("/api/management/v1/audit", headers=admin).json
    assert [(e["action"], e["target"]) for e in entries[:2]] == [
        ("device.reject", device.id), ("device.accept", device.id)]
    assert entries[0]["actor"] == "user:admin@example.com"


def test_an_audit_offset_past_any_integer_is_an_empty_page(fleet, client, admin):
    fleet.accepted()
    response = client.get("/api/management/v1/audit", query_string={"offset": 10**30},
                          headers=admin)
    assert response.status_code == 200 and response.json == []
