"""Deployments: `next` in its three forms, matching, status reports, logs, abort, statistics,
and one device's deployment out of another's reach."""
import pytest

DEPLOYMENTS = "/api/management/v1/deployments"
DEVICE_DEPLOYMENTS = "/api/devices/v1/deployments/device/deployments"


@pytest.fixture
def deploy(client, admin):
    def deploy(artifact_name: str, **target) -> dict:
        response = client.post(DEPLOYMENTS, json={"name": f"deploy {artifact_name}",
                                                  "artifact_name": artifact_name, **target},
                               headers=admin)
        assert response.status_code == 201, response.json
        return response.json
    return deploy


def test_no_deployment_is_204(fleet):
    assert fleet.next(fleet.accepted()).status_code == 204


def test_next_answers_in_the_shape_mender_client_requires(fleet, upload, deploy):
    device = fleet.accepted()
    artifact = upload("app-1.0")
    deployment = deploy("app-1.0", devices=[device.id])
    answer = fleet.next(device).json
    assert answer["id"] == deployment["id"]
    assert answer["artifact"]["id"] == artifact["id"]
    assert answer["artifact"]["artifact_name"] == "app-1.0"
    assert answer["artifact"]["device_types_compatible"] == ["qemux86-64"]
    assert answer["artifact"]["source"]["uri"].startswith("http://localhost/api/devices/")
    assert answer["artifact"]["source"]["expire"]


def test_v1_post_and_get_forms(fleet, client, upload, deploy):
    device = fleet.accepted()
    upload("app-1.0")
    deployment = deploy("app-1.0", devices=[device.id])
    by_post = client.post(f"{DEVICE_DEPLOYMENTS}/next", json=device.provides,
                          headers=device.headers)
    by_get = client.get(f"{DEVICE_DEPLOYMENTS}/next", query_string=device.provides,
                        headers=device.headers)
    assert by_post.json["id"] == by_get.json["id"] == deployment["id"]
    assert client.get(f"{DEVICE_DEPLOYMENTS}/next", headers=device.headers).status_code == 400


def test_status_reports_and_statistics(fleet, client, admin, upload, deploy):
    device = fleet.accepted()
    upload("app-1.0")
    deployment = deploy("app-1.0", devices=[device.id])
    fleet.next(device)
    for status in ("downloading", "installing"):
        assert fleet.status(device, deployment["id"], status).status_code == 204
    assert client.get(f"{DEPLOYMENTS}/{deployment['id']}", headers=admin).json["status"] == \
        "inprogress"
    assert fleet.status(device, deployment["id"], "success").status_code == 204
    shown = client.get(f"{DEPLOYMENTS}/{deployment['id']}", headers=admin).json
    assert shown["status"] == "finished"
    assert shown["statistics"]["success"] == 1
    assert fleet.next(device).status_code == 204
    assert fleet.status(device, deployment["id"], "bogus").status_code == 400


def test_status_after_abort_is_409(fleet, client, admin, upload, deploy):
    device = fleet.accepted()
    upload("app-1.0")
    deployment = deploy("app-1.0", devices=[device.id])
    fleet.next(device)
    fleet.status(device, deployment["id"], "downloading")
    response = client.put(f"{DEPLOYMENTS}/{deployment['id']}/status", json={"status": "aborted"},
                          headers=admin)
    assert response.json["status"] == "aborted"
    assert fleet.status(device, deployment["id"], "installing").status_code == 409
    assert fleet.next(device).status_code == 204
    assert client.get(f"{DEPLOYMENTS}/{deployment['id']}/statistics",
                      headers=admin).json["aborted"] == 1
    again = client.put(f"{DEPLOYMENTS}/{deployment['id']}/status", json={"status": "aborted"},
                       headers=admin)
    assert again.status_code == 409


def test_device_cannot_touch_another_devices_deployment(fleet, client, upload, deploy):
    owner, other = fleet.accepted(mac="owner"), fleet.accepted(mac="other")
    upload("app-1.0")
    deployment = deploy("app-1.0", devices=[owner.id])
    assert fleet.status(other, deployment["id"], "failure").status_code == 404
    response = client.put(f"{DEVICE_DEPLOYMENTS}/{deployment['id']}/log",
                          json={"messages": [{"message": "x"}]}, headers=other.headers)
    assert response.status_code == 404
    assert fleet.next(other).status_code == 204
    assert fleet.next(owner).status_code == 200


def test_failure_log_is_readable_by_operators(fleet, client, admin, upload, deploy):
    device = fleet.accepted()
    upload("app-1.0")
    deployment = deploy("app-1.0", devices=[device.id])
    fleet.next(device)
    fleet.status(device, deployment["id"], "failure")
    messages = [{"timestamp": "2026-11-27T08:48:25Z", "level": "error", "message": "boom"}]
    response = client.put(f"{DEVICE_DEPLOYMENTS}/{deployment['id']}/log",
                          json={"messages": messages}, headers=device.headers)
    assert response.status_code == 204
    log = client.get(f"{DEPLOYMENTS}/{deployment['id']}/devices/{device.id}/log", headers=admin)
    assert log.json == {"messages": messages}
    [row] = client.get(f"{DEPLOYMENTS}/{deployment['id']}/devices", headers=admin).json
    assert row["status"] == "failure" and row["has_log"]


def test_artifact_is_chosen_by_device_type(fleet, upload, deploy):
    pi = fleet.accepted(mac="pi", device_type="raspberrypi4")
    qemu = fleet.accepted(mac="qemu", device_type="qemux86-64")
    for_pi = upload("app-1.0", ("raspberrypi4",))
    for_qemu = upload("app-1.0", ("qemux86-64",))
    deploy("app-1.0", all_devices=True)
    assert fleet.next(pi).json["artifact"]["id"] == for_pi["id"]
    assert fleet.next(qemu).json["artifact"]["id"] == for_qemu["id"]


def test_incompatible_device_gets_noartifact_unless_forced(fleet, client, admin, upload,
                                                            deploy):
    device = fleet.accepted(device_type="qemux86-64")
    upload("pi-1.0", ("raspberrypi4",))
    plain = deploy("pi-1.0", devices=[device.id])
    assert fleet.next(device).status_code == 204
    assert client.get(f"{DEPLOYMENTS}/{plain['id']}/statistics",
                      headers=admin).json["noartifact"] == 1
    deploy("pi-1.0", devices=[device.id], force=True)
    assert fleet.next(device).json["artifact"]["artifact_name"] == "pi-1.0"


def test_depends_are_matched_against_the_device_provides(fleet, upload, deploy):
    device = fleet.accepted(artifact_name="release-1")
    upload("app-2.0", depends={"artifact_name": ["release-2"]})
    deploy("app-2.0", devices=[device.id])
    assert fleet.next(device).status_code == 204
    upload("app-3.0", payload_depends={"rootfs-image.version": "r1"})
    deploy("app-3.0", devices=[device.id])
    provides = {**device.provides, "rootfs-image.version": "r1"}
    assert fleet.next(device, provides).json["artifact"]["artifact_name"] == "app-3.0"


def test_installed_artifact_is_already_installed_on_the_server(fleet, client, admin, upload,
                                                                deploy):
    device = fleet.accepted(artifact_name="app-1.0")
    upload("app-1.0")
    deployment = deploy("app-1.0", devices=[device.id])
    assert fleet.next(device).status_code == 204
    assert client.get(f"{DEPLOYMENTS}/{deployment['id']}/statistics",
                      headers=admin).json["already-installed"] == 1


def test_group_and_all_devices_targets(fleet, client, admin, upload, deploy):
    lab, field = fleet.accepted(mac="lab"), fleet.accepted(mac="field")
    client.put(f"/api/management/v1/devices/{lab.id}/group", json={"group": "lab"},
               headers=admin)
    upload("app-1.0")
    assert deploy("app-1.0", group="lab")["device_count"] == 1
    assert fleet.next(field).status_code == 204
    assert deploy("app-1.0", all_devices=True)["device_count"] == 2
    assert fleet.next(field).status_code == 200


@pytest.mark.parametrize("body, message", [
    ({"name": "d", "artifact_name": "app-1.0"}, "exactly one of"),
    ({"name": "d", "artifact_name": "app-1.0", "group": "g", "all_devices": True},
     "exactly one of"),
    ({"name": "d", "artifact_name": "nope", "all_devices": True}, "no artifact"),
    ({"name": "d", "artifact_name": "app-1.0", "devices": ["missing"]}, "unknown device"),
    ({"name": "d", "artifact_name": "app-1.0", "group": "empty"}, "no devices"),
    ({"name": 5, "artifact_name": "app-1.0", "all_devices": True}, "'name'"),
])
def test_bad_deployments_are_400(fleet, client, admin, upload, body, message):
    fleet.accepted()
    upload("app-1.0")
    response = client.post(DEPLOYMENTS, json=body, headers=admin)
    assert response.status_code == 400
    assert message in response.json["error"]


def test_oldest_open_deployment_comes_first(fleet, upload, deploy):
    device = fleet.accepted()
    upload("app-1.0")
    upload("app-2.0")
    first = deploy("app-1.0", devices=[device.id])
    deploy("app-2.0", devices=[device.id])
    assert fleet.next(device).json["id"] == first["id"]
    fleet.status(device, first["id"], "success")
    assert fleet.next(device).json["artifact"]["artifact_name"] == "app-2.0"
