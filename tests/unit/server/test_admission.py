"""Device admission against an attacker who knows a device's identity, and against
unauthenticated auth requests filling the database: accept is never ambiguous, a rejected
key's tokens die at once, and identities, keys and new keys per source are capped."""
import json
import secrets

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from server.config import data_dir_config
from server.devices.service import identity_hash, source_of
from server.migrate import alembic_config
from testkit.devices import SimulatedDevice

from .test_ui import log_in, page, post

AUTH = "/api/devices/v1/authentication/auth_requests"
DEVICES = "/api/management/v1/devices"


def status(client, admin, device_id, status, auth_id=None):
    body = {"status": status, **({"auth_id": auth_id} if auth_id else {})}
    return client.put(f"{DEVICES}/{device_id}/status", json=body, headers=admin)


def auth_sets(client, admin, device_id) -> list[dict]:
    return client.get(f"{DEVICES}/{device_id}", headers=admin).json["auth_sets"]


def test_accept_without_a_key_is_refused_when_another_key_claims_the_device(fleet, client,
                                                                            admin):
    device = fleet.accepted(mac="52:54:00:00:00:07")
    attacker = SimulatedDevice(device.identity)
    assert fleet.authenticate(attacker).status_code == 401

    response = status(client, admin, device.id, "accepted")
    assert response.status_code == 409
    keys = auth_sets(client, admin, device.id)
    assert all(key["id"] in response.json["error"] for key in keys)
    assert "auth_id" in response.json["error"]
    assert [key["status"] for key in keys] == ["accepted", "pending"]  # nothing changed
    assert fleet.authenticate(attacker).status_code == 401
    assert fleet.next(device).status_code == 204


def test_accept_without_a_key_takes_the_only_key_not_rejected(fleet, client, admin):
    device = fleet.accepted(mac="52:54:00:00:00:08")
    newcomer = SimulatedDevice(device.identity)
    fleet.authenticate(newcomer)
    pending = auth_sets(client, admin, device.id)[1]
    assert status(client, admin, device.id, "rejected", pending["id"]).status_code == 200
    assert status(client, admin, device.id, "accepted").status_code == 200
    assert [key["status"] for key in auth_sets(client, admin, device.id)] == [
        "accepted", "rejected"]


def test_accepting_another_key_revokes_the_old_keys_tokens_at_once(fleet, client, admin):
    device = fleet.accepted(mac="52:54:00:00:00:09")
    rotated = SimulatedDevice(device.identity)
    fleet.authenticate(rotated)
    new_key = auth_sets(client, admin, device.id)[1]["id"]
    assert status(client, admin, device.id, "accepted", new_key).status_code == 200
    response = fleet.next(device)  # the old key's token, issued for a week
    assert response.status_code == 401
    assert response.json["error"] == "token revoked"
    assert fleet.authenticate(rotated).status_code == 200
    assert fleet.next(rotated, device.provides).status_code == 204


def test_preauthorizing_another_key_revokes_the_old_keys_tokens_when_it_is_used(fleet, client,
                                                                               admin):
    device = fleet.accepted(mac="52:54:00:00:00:0a")
    replacement = SimulatedDevice(device.identity, "ed25519")
    assert client.post(DEVICES, json={"identity_data": device.identity,
                                      "pubkey": replacement.pubkey},
                       headers=admin).status_code == 201
    assert fleet.next(device).status_code == 204  # until the new key is used
    assert fleet.authenticate(replacement).status_code == 200
    assert fleet.next(device).status_code == 401
    assert fleet.next(replacement, device.provides).status_code == 204


def test_rejecting_an_impostors_key_keeps_the_devices_own_token(fleet, client, admin):
    device = fleet.accepted(mac="52:54:00:00:00:0b")
    attacker = SimulatedDevice(device.identity)
    fleet.authenticate(attacker)
    impostor_key = auth_sets(client, admin, device.id)[1]["id"]
    assert status(client, admin, device.id, "rejected", impostor_key).status_code == 200
    assert fleet.next(device).status_code == 204
    assert fleet.authenticate(attacker).status_code == 401


def test_reject_without_a_key_rejects_every_key(fleet, client, admin):
    device = fleet.accepted(mac="52:54:00:00:00:0c")
    fleet.authenticate(SimulatedDevice(device.identity))
    response = status(client, admin, device.id, "rejected")
    assert response.status_code == 200
    assert response.json["status"] == "rejected"
    assert {key["status"] for key in response.json["auth_sets"]} == {"rejected"}
    assert fleet.next(device).status_code == 401


def test_identity_over_the_postgresql_index_limit_is_stored_by_its_hash(fleet, client, admin):
    """An incompressible identity of 3.6 kB once answered 500 on PostgreSQL: an index entry
    holds at most about 2.7 kB."""
    device = SimulatedDevice({"mac": "52:54:00:00:00:0d",
                              "serial": secrets.token_urlsafe(2700)})
    response = fleet.authenticate(device)
    assert response.status_code == 401, response.json
    assert fleet.authenticate(device).status_code == 401  # found again, by its hash
    [listed] = client.get(DEVICES, headers=admin).json
    assert listed["identity_data"] == device.identity


@pytest.mark.parametrize("identity", [
    {"mac": "m", "serial": "s" * 5000},
    {f"attribute{i}": "x" for i in range(33)},
], ids=["too-long", "too-many-attributes"])
def test_identity_over_the_caps_is_refused_and_nothing_stored(fleet, client, admin, identity):
    response = fleet.authenticate(SimulatedDevice(identity))
    assert response.status_code == 400
    assert "identity data" in response.json["error"]
    response = client.post(DEVICES, json={"identity_data": identity,
                                          "pubkey": SimulatedDevice({}).pubkey}, headers=admin)
    assert response.status_code == 400
    assert client.get(DEVICES, headers=admin).json == []


def test_keys_awaiting_a_decision_are_capped_per_device(fleet, client, admin, app):
    app.config["MAX_PENDING_KEYS_PER_DEVICE"] = 2
    identity = {"mac": "52:54:00:00:00:0e"}
    for _ in range(2):
        assert fleet.authenticate(SimulatedDevice(identity, "ecdsa")).status_code == 401
    response = fleet.authenticate(SimulatedDevice(identity, "ecdsa"))
    assert response.status_code == 409
    assert "awaiting a decision" in response.json["error"]
    [device] = client.get(DEVICES, headers=admin).json
    assert len(device["auth_sets"]) == 2
    status(client, admin, device["id"], "rejected", device["auth_sets"][0]["id"])
    assert fleet.authenticate(SimulatedDevice(identity, "ecdsa")).status_code == 401


def test_new_keys_are_rate_limited_per_source_address(fleet, client, admin, app):
    app.config["NEW_KEYS_PER_SOURCE"] = 3
    devices = [SimulatedDevice({"mac": f"52:54:00:00:01:{i:02x}"}, "ecdsa") for i in range(5)]
    for device in devices[:3]:
        assert fleet.authenticate(device).status_code == 401
    response = fleet.authenticate(devices[3])
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "60"
    assert response.json["error"].startswith("too many new keys from 127.0.0.1")
    assert fleet.authenticate(devices[0]).status_code == 401  # a known key: not limited
    body, headers = devices[4].auth_request()  # another address is not limited
    other = client.post(AUTH, data=body, headers=headers,
                        environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert other.status_code == 401
    sources = {d["auth_sets"][0]["source"] for d in client.get(DEVICES, headers=admin).json}
    assert sources == {"127.0.0.1", "192.0.2.7"}
    app.config["NEW_KEYS_WINDOW_SECONDS"] = 0  # the window has passed
    assert fleet.authenticate(devices[3]).status_code == 401


def test_pending_devices_are_capped(fleet, client, admin, app):
    app.config["MAX_PENDING_DEVICES"] = 2
    for i in range(2):
        fleet.authenticate(SimulatedDevice({"mac": f"52:54:00:00:02:0{i}"}, "ecdsa"))
    response = fleet.authenticate(SimulatedDevice({"mac": "52:54:00:00:02:09"}, "ecdsa"))
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    assert len(client.get(DEVICES, headers=admin).json) == 2


@pytest.mark.parametrize("address, source", [
    ("192.0.2.1", "192.0.2.1"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
    ("::ffff:192.0.2.1", "192.0.2.1"),
    (None, "unknown"),
])
def test_a_source_is_an_ipv4_address_or_an_ipv6_64(address, source):
    assert source_of(address) == source


def test_admission_caps_come_from_config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"new_keys_per_source": 500,
                                                      "max_pending_devices": 20}))
    (tmp_path / "secret.key").write_text("s" * 40)
    config = data_dir_config(tmp_path)
    assert config["NEW_KEYS_PER_SOURCE"] == 500 and config["MAX_PENDING_DEVICES"] == 20
    assert "MAX_IDENTITY_BYTES" not in config  # the default stays


def test_the_pending_view_shows_every_key_claiming_a_known_device(fleet, client, admin):
    device = fleet.accepted(mac="52:54:00:00:00:0f")
    attacker = SimulatedDevice(device.identity)
    fleet.authenticate(attacker)
    keys = auth_sets(client, admin, device.id)
    assert log_in(client).status_code == 303

    pending = page(client.get("/devices?status=pending"))
    assert f'/devices/{device.id}"' in pending  # accepted, yet a key of it awaits a decision
    for key in keys:
        assert f'name="auth_id" value="{key["id"]}"' in pending
        assert key["fingerprint"][:16] in pending
    assert f'aria-label="Accept device {device.id}"' not in pending  # no blind accept
    assert "from 127.0.0.1" in pending

    response = post(client, f"/devices/{device.id}/status", {"status": "accepted"})
    assert response.status_code == 409  # the device's form without a key, as an old page sends
    response = post(client, f"/devices/{device.id}/status",
                    {"status": "rejected", "auth_id": keys[1]["id"]})
    assert response.status_code == 303
    assert f'/devices/{device.id}"' not in page(client.get("/devices?status=pending"))
    assert fleet.next(device).status_code == 204


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_migration_hashes_identities_and_gives_live_tokens_their_key(engine, tmp_path, request):
    url = (f"sqlite:///{tmp_path / 'old.db'}" if engine == "sqlite" else
           request.getfixturevalue("postgres").create_database("tern_migration"))
    command.upgrade(alembic_config(url), "0002")
    database = create_engine(url)
    now = "2026-11-29 12:00:00"
    with database.begin() as connection:
        connection.execute(text(
            "INSERT INTO devices (id, identity, status, created_at, updated_at) VALUES "
            f"('d1', '{{\"mac\":\"m1\"}}', 'accepted', '{now}', '{now}'), "
            f"('d2', '{{\"mac\":\"m2\"}}', 'pending', '{now}', '{now}')"))
        connection.execute(text(
            "INSERT INTO auth_sets (id, device_id, pubkey, status, created_at) VALUES "
            f"('a1', 'd1', 'old', 'rejected', '{now}'), ('a2', 'd1', 'new', 'accepted', '{now}'),"
            f" ('a3', 'd2', 'k', 'pending', '{now}')"))
        connection.execute(text(
            "INSERT INTO tokens (id, kind, subject, created_at, expires_at) VALUES "
            f"('t1', 'device', 'd1', '{now}', '2099-01-01'), "
            f"('t2', 'device', 'd2', '{now}', '2099-01-01'), "
            f"('t3', 'user', 'u1', '{now}', '2099-01-01')"))
    command.upgrade(alembic_config(url), "head")
    with database.connect() as connection:
        hashes = dict(connection.execute(text("SELECT id, identity_hash FROM devices")).all())
        tokens = {row.id: row for row in connection.execute(
            text("SELECT id, auth_set_id, revoked_at FROM tokens"))}
    database.dispose()
    assert hashes == {"d1": identity_hash('{"mac":"m1"}'), "d2": identity_hash('{"mac":"m2"}')}
    assert tokens["t1"].auth_set_id == "a2" and tokens["t1"].revoked_at is None
    assert tokens["t2"].auth_set_id is None and tokens["t2"].revoked_at is not None
    assert tokens["t3"].auth_set_id is None and tokens["t3"].revoked_at is None
