"""Strings that are not valid Unicode (lone surrogates), which the server once answered 500
to, or stored and then failed to show: refused with a 400 wherever JSON enters."""
import json

import pytest

from testkit.devices import SimulatedDevice

from .test_ui import log_in, page, post

LONE = "\ud800"  # valid JSON ("\ud800"), but no Unicode string: it cannot be UTF-8 encoded
NEXT = "/api/devices/v1/deployments/device/deployments"
MANAGEMENT = "/api/management/v1"


@pytest.fixture
def deployed(fleet, admin, upload, client):
    """An accepted device with a deployment open."""
    device = fleet.accepted()
    upload("app-1.0")
    device.deployment_id = client.post(f"{MANAGEMENT}/deployments", json={
        "name": "d", "artifact_name": "app-1.0", "devices": [device.id]}, headers=admin).json["id"]
    return device


# (method, path, body, who): every route that reads a JSON body
JSON_ROUTES = [
    ("PUT", "/api/devices/v1/inventory/device/attributes",
     [{"name": "artifact_name", "value": LONE}], "device"),
    ("PATCH", "/api/devices/v1/inventory/device/attributes",
     [{"name": LONE, "value": "x"}], "device"),
    ("POST", "/api/devices/v2/deployments/device/deployments/next",
     {"device_provides": {"device_type": LONE}}, "device"),
    ("POST", f"{NEXT}/next", {"device_type": "qemux86-64", "artifact_name": LONE}, "device"),
    ("PUT", f"{NEXT}/{{deployment}}/status", {"status": "installing", "substate": LONE},
     "device"),
    ("PUT", f"{NEXT}/{{deployment}}/log", {"messages": [{"message": LONE}]}, "device"),
    ("POST", f"{MANAGEMENT}/devices", {"identity_data": {"mac": LONE}, "pubkey": "{pubkey}"},
     "user"),
    ("PUT", f"{MANAGEMENT}/devices/{{device}}/status", {"status": "accepted", "auth_id": LONE},
     "user"),
    ("PUT", f"{MANAGEMENT}/devices/{{device}}/group", {"group": LONE}, "user"),
    ("POST", f"{MANAGEMENT}/deployments", {"name": LONE, "artifact_name": "app-1.0",
                                           "all_devices": True}, "user"),
    ("POST", f"{MANAGEMENT}/users", {"email": "x@example.com", "password": LONE}, "user"),
    ("POST", f"{MANAGEMENT}/tokens", {"name": LONE}, "user"),
]


@pytest.mark.parametrize("method, path, body, who", JSON_ROUTES,
                         ids=[f"{m} {p.rsplit('/', 2)[-2]}/{p.rsplit('/', 1)[-1]}"
                              for m, p, _, _ in JSON_ROUTES])
def test_a_lone_surrogate_in_json_is_a_400(client, admin, deployed, method, path, body, who):
    path = path.format(deployment=deployed.deployment_id, device=deployed.id)
    if isinstance(body, dict) and body.get("pubkey") == "{pubkey}":
        body = {**body, "pubkey": SimulatedDevice({}).pubkey}
    response = client.open(path, method=method, json=body,
                           headers=deployed.headers if who == "device" else admin)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "not valid Unicode" in response.json["error"]
    assert client.get(f"{MANAGEMENT}/devices/{deployed.id}", headers=admin).status_code == 200


@pytest.mark.parametrize("where", ["id_data", "body"])
def test_a_lone_surrogate_in_an_auth_request_is_a_400(client, admin, where):
    device = SimulatedDevice({"mac": "m"})
    identity = json.dumps({"mac": LONE}) if where == "id_data" else json.dumps(device.identity)
    document = {"id_data": identity, "pubkey": device.pubkey}
    if where == "body":
        document["tenant_token"] = LONE
    body = json.dumps(document).encode()
    response = client.post("/api/devices/v1/authentication/auth_requests", data=body,
                           headers={"X-MEN-Signature": device.sign(body)})
    assert response.status_code == 400
    assert "not valid Unicode" in response.json["error"]
    assert client.get(f"{MANAGEMENT}/devices", headers=admin).json == []


def test_a_lone_surrogate_in_the_dashboards_identity_is_a_400(app, admin, client):
    assert log_in(client).status_code == 303
    response = post(client, "/devices/preauthorize", data={
        "identity": '{"mac": "\\ud800"}', "pubkey": SimulatedDevice({}).pubkey})
    assert response.status_code == 400
    assert "not valid Unicode" in response.get_data(as_text=True)
    assert "No preauthorized devices" in page(client.get("/devices?status=preauthorized"))


def test_a_surrogate_pair_is_a_character_and_shows(fleet, client, admin, app):
    device = fleet.accepted()
    response = client.put("/api/devices/v1/inventory/device/attributes",
                          data='[{"name": "artifact_name", "value": "smile \\ud83d\\ude00"}]',
                          headers={**device.headers, "Content-Type": "application/json"})
    assert response.status_code == 200
    assert log_in(client).status_code == 303
    assert "smile \U0001F600" in page(client.get(f"/devices/{device.id}"))
    assert "smile \U0001F600" in page(client.get("/devices"))
