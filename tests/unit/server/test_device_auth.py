"""Device admission: signed auth requests, pending / accepted / rejected / preauthorized,
and the tokens that follow (expiry, revocation, scope)."""
import json
import time

import jwt
import pytest

from testkit.devices import SimulatedDevice

AUTH = "/api/devices/v1/authentication/auth_requests"
DEVICES = "/api/management/v1/devices"


@pytest.mark.parametrize("key_kind", ["rsa", "ecdsa", "ed25519"])
def test_device_is_pending_until_accepted_then_gets_a_token(fleet, client, admin, key_kind):
    device = SimulatedDevice({"mac": "52:54:00:12:34:56"}, key_kind)
    response = fleet.authenticate(device)
    assert response.status_code == 401
    assert "pending" in response.json["error"]
    [listed] = client.get(DEVICES, query_string={"status": "pending"}, headers=admin).json
    assert listed["identity_data"] == {"mac": "52:54:00:12:34:56"}
    assert listed["auth_sets"][0]["status"] == "pending"

    client.put(f"{DEVICES}/{listed['id']}/status", json={"status": "accepted"}, headers=admin)
    response = fleet.authenticate(device)
    assert response.status_code == 200
    claims = jwt.decode(response.get_data(as_text=True), options={"verify_signature": False})
    assert claims["sub"] == listed["id"] and claims["kind"] == "device"
    assert claims["exp"] > time.time()


def test_identity_is_compared_as_json_not_as_text(fleet, client, admin):
    device = SimulatedDevice({"mac": "m", "serial": "s"})
    fleet.authenticate(device)
    body = json.dumps({"id_data": '{ "serial" : "s", "mac": "m" }', "pubkey": device.pubkey})
    client.post(AUTH, data=body, headers={"X-MEN-Signature": device.sign(body.encode())})
    assert len(client.get(DEVICES, headers=admin).json) == 1


def test_signature_over_other_bytes_is_refused(fleet, client, admin):
    device = SimulatedDevice({"mac": "a"})
    body, headers = device.auth_request()
    headers["X-MEN-Signature"] = device.sign(body + b" ")
    response = client.post(AUTH, data=body, headers=headers)
    assert response.status_code == 401
    assert client.get(DEVICES, headers=admin).json == []


def test_signature_by_another_key_is_refused(client):
    device, impostor = SimulatedDevice({"mac": "a"}), SimulatedDevice({"mac": "a"})
    body, headers = device.auth_request()
    headers["X-MEN-Signature"] = impostor.sign(body)
    assert client.post(AUTH, data=body, headers=headers).status_code == 401


@pytest.mark.parametrize("body", [b"", b"[]", b'{"id_data": "{}", "pubkey": "x"}',
                                  b'{"id_data": "not json", "pubkey": "x"}',
                                  b'{"id_data": "{\\"mac\\": 1}", "pubkey": 5}'])
def test_malformed_auth_requests_are_400(client, body):
    response = client.post(AUTH, data=body, headers={"X-MEN-Signature": "AAAA"})
    assert response.status_code == 400
    assert response.json["error"]


def test_preauthorized_device_is_accepted_on_first_request(fleet, client, admin):
    device = SimulatedDevice({"mac": "pre"}, "ecdsa")
    response = client.post(DEVICES, json={"identity_data": device.identity,
                                          "pubkey": device.pubkey}, headers=admin)
    assert response.status_code == 201
    assert response.json["status"] == "preauthorized"
    assert fleet.authenticate(device).status_code == 200
    assert client.get(f"{DEVICES}/{response.json['id']}", headers=admin).json["status"] == \
        "accepted"


def test_preauthorized_key_does_not_admit_another_key(fleet, client, admin):
    device = SimulatedDevice({"mac": "pre"})
    client.post(DEVICES, json={"identity_data": device.identity, "pubkey": device.pubkey},
                headers=admin)
    other = SimulatedDevice({"mac": "pre"})
    assert fleet.authenticate(other).status_code == 401


def test_rejecting_revokes_the_device_token(fleet, client, admin):
    device = fleet.accepted()
    client.put(f"{DEVICES}/{device.id}/status", json={"status": "rejected"}, headers=admin)
    response = fleet.next(device)
    assert response.status_code == 401
    assert fleet.authenticate(device).status_code == 401


def test_revoked_token_is_refused_and_a_new_one_works(fleet, client, admin):
    device = fleet.accepted()
    assert client.delete(f"{DEVICES}/{device.id}/tokens", headers=admin).json["revoked"] == 1
    assert fleet.next(device).status_code == 401
    assert fleet.authenticate(device).status_code == 200
    assert fleet.next(device).status_code == 204


def test_expired_token_is_refused(fleet, app):
    device = fleet.accepted()
    app.config["DEVICE_TOKEN_SECONDS"] = 1
    fleet.authenticate(device)
    app.config["CLOCK"] = lambda: time.time() + 2.1  # past the 1 s expiry, without a sleep
    response = fleet.next(device)
    assert response.status_code == 401
    assert response.json["error"] == "token expired"


def test_token_signed_with_another_key_is_refused(fleet):
    device = fleet.accepted()
    claims = jwt.decode(device.token, options={"verify_signature": False})
    device.token = jwt.encode(claims, "guessed-secret-" * 4, algorithm="HS256")
    assert fleet.next(device).status_code == 401


def _resigned(token: str, secret: str, **header) -> str:
    claims = jwt.decode(token, options={"verify_signature": False})
    return jwt.encode(claims, secret, algorithm="HS256", headers=header or None)


def _with_claims(token: str, **changes) -> str:
    """`token` with other claims under its original header and MAC."""
    header, _, mac = token.split(".")
    claims = {**jwt.decode(token, options={"verify_signature": False}), **changes}
    return ".".join([header, jwt.encode(claims, "k" * 32).split(".")[1], mac])


@pytest.mark.parametrize("forge", [
    pytest.param(lambda token, secret: jwt.encode(
        jwt.decode(token, options={"verify_signature": False}), None, algorithm="none"),
        id="alg-none"),
    pytest.param(lambda token, secret: token.rpartition(".")[0] + "." + "A" * 43, id="zero-mac"),
    pytest.param(lambda token, secret: token.rpartition(".")[0] + ".", id="no-mac"),
    pytest.param(lambda token, secret: _resigned(token, secret, kid="other"),
                 id="another-header"),
    pytest.param(lambda token, secret: _with_claims(token, exp=2 ** 40), id="claims-changed"),
    pytest.param(lambda token, secret: "not-a-token", id="garbage"),
    pytest.param(lambda token, secret: "é.ü.ö", id="non-ascii"),
])
def test_forged_or_malformed_token_is_refused_with_a_json_401(fleet, app, forge):
    device = fleet.accepted()
    assert fleet.next(device).status_code == 204
    device.token = forge(device.token, app.config["SECRET_KEY"])
    response = fleet.next(device)
    assert response.status_code == 401
    assert response.json["error"] == "invalid token"


def test_a_token_only_needs_to_be_the_one_issued(fleet, app):
    """The check is ours, not pyjwt's: what pyjwt writes for `issue_token` must pass."""
    device = fleet.accepted()
    device.token = _resigned(device.token, app.config["SECRET_KEY"])
    assert fleet.next(device).status_code == 204


def test_device_token_is_refused_on_the_management_api(fleet, client):
    device = fleet.accepted()
    response = client.get(DEVICES, headers=device.headers)
    assert response.status_code == 403


def test_user_token_is_refused_on_the_device_api(fleet, admin):
    device = fleet.accepted()
    device.token = admin["Authorization"].removeprefix("Bearer ")
    assert fleet.next(device).status_code == 403


def test_management_api_needs_a_token(client):
    assert client.get(DEVICES).status_code == 401


def test_new_key_makes_a_second_auth_set_and_accepting_it_rejects_the_old(fleet, client, admin):
    device = fleet.accepted(mac="rotating")
    rotated = SimulatedDevice({"mac": "rotating"})
    assert fleet.authenticate(rotated).status_code == 401
    shown = client.get(f"{DEVICES}/{device.id}", headers=admin).json
    assert [a["status"] for a in shown["auth_sets"]] == ["accepted", "pending"]
    client.put(f"{DEVICES}/{device.id}/status", json={"status": "accepted",
                                                       "auth_id": shown["auth_sets"][1]["id"]},
               headers=admin)
    assert fleet.authenticate(rotated).status_code == 200
    assert fleet.authenticate(device).status_code == 401


def test_decommission_forgets_the_device(fleet, client, admin):
    device = fleet.accepted()
    assert client.delete(f"{DEVICES}/{device.id}", headers=admin).status_code == 204
    assert fleet.next(device).status_code == 401
    assert client.get(f"{DEVICES}/{device.id}", headers=admin).status_code == 404
    assert fleet.authenticate(device).status_code == 401  # back as a new, pending device
    assert client.get(DEVICES, headers=admin).json[0]["status"] == "pending"


def test_expired_tokens_are_forgotten_when_a_new_one_is_issued(fleet, app):
    from server.database import db
    from server.models import Token

    device = fleet.accepted()
    app.config["DEVICE_TOKEN_SECONDS"] = -1  # issued already expired
    fleet.authenticate(device)
    fleet.authenticate(device)
    with app.app_context():
        assert db.session.query(Token).filter_by(subject=device.id).count() == 2
