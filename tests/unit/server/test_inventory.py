"""Inventory reported by devices, filters over it, static groups."""
import pytest

ATTRIBUTES = "/api/devices/v1/inventory/device/attributes"
DEVICES = "/api/management/v1/devices"


def attributes_of(client, admin, device_id):
    shown = client.get(f"{DEVICES}/{device_id}", headers=admin).json
    return {a["name"]: a["value"] for a in shown["attributes"]}


def test_put_replaces_and_patch_merges(fleet, client, admin):
    device = fleet.accepted()
    client.put(ATTRIBUTES, json=[{"name": "ip", "value": ["10.0.0.2", "fe80::1"]},
                                 {"name": "os", "value": "Debian"}], headers=device.headers)
    assert attributes_of(client, admin, device.id) == {"ip": ["10.0.0.2", "fe80::1"],
                                                       "os": "Debian"}
    response = client.patch(ATTRIBUTES, json=[{"name": "os", "value": "Debian 12"},
                                              {"name": "cpus", "value": 2}],
                            headers=device.headers)
    assert response.status_code == 200
    assert attributes_of(client, admin, device.id) == {"ip": ["10.0.0.2", "fe80::1"],
                                                       "os": "Debian 12", "cpus": "2"}


@pytest.mark.parametrize("body", [{"name": "x"}, [{"value": "no name"}], [{"name": "x"}],
                                  [{"name": "x", "value": {"nested": 1}}], ["text"],
                                  [{"name": "", "value": "v"}]])
def test_malformed_inventory_is_400(fleet, client, body):
    device = fleet.accepted()
    assert client.put(ATTRIBUTES, json=body, headers=device.headers).status_code == 400


def test_unaccepted_device_cannot_report_inventory(fleet, client):
    device = fleet.accepted()
    client.put(f"{DEVICES}/{device.id}/status", json={"status": "rejected"}, headers=fleet.admin)
    response = client.put(ATTRIBUTES, json=[{"name": "a", "value": "b"}],
                          headers=device.headers)
    assert response.status_code == 401


def test_filter_by_status_and_attributes(fleet, client, admin):
    pi = fleet.accepted(mac="pi", device_type="raspberrypi4")
    fleet.accepted(mac="qemu", device_type="qemux86-64")
    client.patch(ATTRIBUTES, json=[{"name": "ip", "value": ["10.0.0.7", "10.0.0.8"]}],
                 headers=pi.headers)

    def ids(**query):
        return [d["identity_data"]["mac"]
                for d in client.get(DEVICES, query_string=query, headers=admin).json]

    assert ids(**{"attr.device_type": "raspberrypi4"}) == ["pi"]
    assert ids(**{"attr.ip": "10.0.0.8"}) == ["pi"]
    assert sorted(ids(status="accepted")) == ["pi", "qemu"]
    assert ids(status="pending") == []
    assert ids(**{"attr.device_type": "nothing"}) == []
    assert client.get(DEVICES, query_string={"status": "bogus"},
                      headers=admin).status_code == 400


def test_static_groups(fleet, client, admin):
    one, two = fleet.accepted(mac="one"), fleet.accepted(mac="two")
    for device in (one, two):
        response = client.put(f"{DEVICES}/{device.id}/group", json={"group": "lab"},
                              headers=admin)
        assert response.json["group"] == "lab"
    client.delete(f"{DEVICES}/{two.id}/group", headers=admin)
    assert client.get("/api/management/v1/groups", headers=admin).json == [
        {"name": "lab", "devices": 1}]
    listed = client.get(DEVICES, query_string={"group": "lab"}, headers=admin).json
    assert [d["id"] for d in listed] == [one.id]
    response = client.put(f"{DEVICES}/{one.id}/group", json={"group": "../etc"}, headers=admin)
    assert response.status_code == 400
