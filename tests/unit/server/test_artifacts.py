"""Artifact upload (streamed, validated), listing, download, deletion; device downloads."""
import os
import re

import pytest

from server.artifacts.keys import KeyConfigError
from testkit.artifacts import single_file_artifact

from .conftest import configure_verify_keys, public_key_fingerprint

ARTIFACTS = "/api/management/v1/artifacts"
OCTETS = {"Content-Type": "application/octet-stream"}


def test_upload_list_show_download_delete(client, admin, upload, app, tmp_path):
    uploaded = upload("app-1.0", ("qemux86-64", "raspberrypi4"))
    assert uploaded["device_types_compatible"] == ["qemux86-64", "raspberrypi4"]
    assert uploaded["signature"] == "unsigned"
    assert uploaded["info"]["provides"]["rootfs-image.single-file.version"] == "app-1.0"
    assert [a["id"] for a in client.get(ARTIFACTS, headers=admin).json] == [uploaded["id"]]
    assert client.get(f"{ARTIFACTS}/{uploaded['id']}", headers=admin).json["name"] == "app-1.0"
    downloaded = client.get(f"{ARTIFACTS}/{uploaded['id']}/download", headers=admin)
    assert downloaded.status_code == 200
    assert downloaded.data == (tmp_path / "app-1.0.mender").read_bytes()
    assert client.delete(f"{ARTIFACTS}/{uploaded['id']}", headers=admin).status_code == 204
    assert client.get(f"{ARTIFACTS}/{uploaded['id']}", headers=admin).status_code == 404
    assert os.listdir(app.config["ARTIFACTS_DIR"]) == []


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_invalid_artifact_is_refused_and_nothing_is_kept(client, admin, app, tmp_path, damage):
    data = bytearray(single_file_artifact(tmp_path, "bad-1.0").read_bytes())
    if damage == "truncate":
        data = data[:len(data) // 2]
    elif damage == "flip":
        data[-1500] ^= 0xFF  # inside the gzip'd data member
    else:
        data = bytearray(b"not an artifact" * 100)
    response = client.post(ARTIFACTS, data=bytes(data), headers={**admin, **OCTETS})
    assert response.status_code == 400
    assert response.json["error"].startswith("invalid artifact")
    assert client.get(ARTIFACTS, headers=admin).json == []
    assert os.listdir(app.config["ARTIFACTS_DIR"]) == []


@pytest.mark.parametrize("name", ["../../etc/passwd", "a/b", "..", "back\\slash", "nl\nname"])
def test_path_tricks_in_artifact_names_are_refused(client, admin, tmp_path, app, name):
    path = single_file_artifact(tmp_path, name, stem="tricky")
    response = client.post(ARTIFACTS, data=path.read_bytes(), headers={**admin, **OCTETS})
    assert response.status_code == 400
    assert "path or control character" in response.json["error"]
    assert os.listdir(app.config["ARTIFACTS_DIR"]) == []


def test_path_tricks_in_artifact_ids_find_nothing(client, admin, upload):
    upload("app-1.0")
    for path in (f"{ARTIFACTS}/..%2F..%2Fetc%2Fpasswd/download",
                 f"{ARTIFACTS}/%2E%2E/download"):
        assert client.get(path, headers=admin).status_code == 404


def test_duplicate_name_and_device_type_is_409_other_type_is_fine(upload, client, admin,
                                                                 tmp_path):
    upload("app-1.0", ("qemux86-64",))
    path = single_file_artifact(tmp_path, "app-1.0", ("qemux86-64", "other"))
    response = client.post(ARTIFACTS, data=path.read_bytes(), headers={**admin, **OCTETS})
    assert response.status_code == 409
    upload("app-1.0", ("raspberrypi4",))
    assert len(client.get(ARTIFACTS, query_string={"name": "app-1.0"}, headers=admin).json) == 2


@pytest.fixture
def rotation(app, keys):
    """Two verify keys, as during a rotation: the old one (RSA) and the new one (Ed25519),
    named as config.json would, relative to the data directory."""
    configure_verify_keys(app, ["rsa.pub", "ed25519.pub"], keys["rsa"].public_path.parent)


def test_with_two_keys_artifacts_signed_by_either_are_stored_with_the_key(
        client, admin, rotation, keys, tmp_path):
    for kind, name in (("rsa", "old-1.0"), ("ed25519", "new-1.0")):
        path = single_file_artifact(tmp_path, name, signing_key=keys[kind].private_key)
        response = client.post(ARTIFACTS, data=path.read_bytes(), headers={**admin, **OCTETS})
        assert response.status_code == 201, response.json
        assert response.json["signature"] == "verified"
        expected = {"name": f"{kind}.pub",
                    "fingerprint": public_key_fingerprint(keys[kind].public_path)}
        assert response.json["verified_by"] == expected
        assert client.get(f"{ARTIFACTS}/{response.json['id']}",
                          headers=admin).json["verified_by"] == expected


def _tamper_manifest(data: bytes) -> bytes:
    """One hex digit of the manifest's checksum of the payload changed: same length."""
    at = data.index(b"  data/0000/app-1.0.txt") - 1
    return data[:at] + (b"0" if data[at:at + 1] != b"0" else b"1") + data[at + 1:]


def _tamper_payload(data: bytes) -> bytes:
    return data[:-1500] + bytes([data[-1500] ^ 0xFF]) + data[-1499:]


@pytest.mark.parametrize("case, refusal", [
    ("unsigned", "artifact refused: this server accepts only artifacts signed with one of its "
                 "verify keys: missing signature"),
    ("unknown key", "signature does not verify with any key: rsa.pub: "),
    ("tampered manifest", "signature does not verify with any key"),
    ("tampered payload", "invalid artifact: "),
])
def test_with_keys_unsigned_unknown_and_tampered_artifacts_are_refused_and_nothing_is_kept(
        client, admin, app, rotation, keys, tmp_path, case, refusal):
    signer = {"unsigned": None, "unknown key": keys["other-rsa"].private_key}.get(
        case, keys["rsa"].private_key)
    data = single_file_artifact(tmp_path, "app-1.0", signing_key=signer).read_bytes()
    if case == "tampered manifest":
        data = _tamper_manifest(data)
    elif case == "tampered payload":
        data = _tamper_payload(data)
    response = client.post(ARTIFACTS, data=data, headers={**admin, **OCTETS})
    assert response.status_code == 400
    assert set(response.json) == {"error", "request_id"}
    assert refusal in response.json["error"]
    assert client.get(ARTIFACTS, headers=admin).json == []
    assert os.listdir(app.config["ARTIFACTS_DIR"]) == []  # the staged upload is gone too


def test_without_keys_signed_is_unverified_and_unsigned_is_unsigned(upload, keys):
    signed = upload("signed-1.0", signing_key=keys["ecdsa"].private_key)
    assert (signed["signature"], signed["verified_by"]) == ("unverified", None)
    unsigned = upload("unsigned-1.0")
    assert (unsigned["signature"], unsigned["verified_by"]) == ("unsigned", None)


@pytest.mark.parametrize("content, message", [
    (None, "artifact verify key missing.pub: cannot read "),
    (b"not a key", "artifact verify key "),
])
def test_a_verify_key_that_cannot_be_used_stops_the_app(app, tmp_path, content, message):
    key = tmp_path / "missing.pub"
    if content is not None:
        key.write_bytes(content)
    with pytest.raises(KeyConfigError, match="^" + re.escape(message)):
        configure_verify_keys(app, ["missing.pub"], tmp_path)


def test_upload_over_the_size_limit_is_413(client, admin, app, tmp_path):
    app.config["MAX_ARTIFACT_BYTES"] = 2048
    path = single_file_artifact(tmp_path, "big-1.0")
    response = client.post(ARTIFACTS, data=path.read_bytes(), headers={**admin, **OCTETS})
    assert response.status_code == 413


def test_artifact_in_use_cannot_be_deleted(fleet, client, admin, upload):
    device = fleet.accepted()
    artifact = upload("app-1.0")
    client.post("/api/management/v1/deployments", json={
        "name": "d", "artifact_name": "app-1.0", "devices": [device.id]}, headers=admin)
    assert fleet.next(device).status_code == 200
    assert client.delete(f"{ARTIFACTS}/{artifact['id']}", headers=admin).status_code == 409


def test_device_download_link_supports_range_and_expires(fleet, client, admin, upload, app,
                                                         tmp_path):
    device = fleet.accepted()
    upload("app-1.0")
    client.post("/api/management/v1/deployments", json={
        "name": "d", "artifact_name": "app-1.0", "devices": [device.id]}, headers=admin)
    uri = fleet.next(device).json["artifact"]["source"]["uri"]
    whole = (tmp_path / "app-1.0.mender").read_bytes()
    response = client.get(uri)  # no token: the link is the authorization
    assert response.status_code == 200 and response.data == whole
    partial = client.get(uri, headers={"Range": "bytes=100-199"})
    assert partial.status_code == 206 and partial.data == whole[100:200]
    resumed = client.get(uri, headers={"Range": "bytes=100-",  # as the updater resumes
                                       "If-Range": response.headers["ETag"]})
    assert resumed.status_code == 206 and resumed.data == whole[100:]
    assert resumed.headers["Content-Range"] == f"bytes 100-{len(whole) - 1}/{len(whole)}"
    tampered = uri.replace("signature=", "signature=0")
    assert client.get(tampered).status_code == 403
    expired = uri.split("expire=")[0] + "expire=1&signature=" + uri.split("signature=")[1]
    assert client.get(expired).status_code == 403
    assert client.get(uri.split("?")[0]).status_code == 403


def test_behind_nginx_a_checked_link_is_an_accel_redirect(fleet, client, admin, upload, app):
    app.config["ACCEL_REDIRECT_PREFIX"] = "/_artifacts/"
    device = fleet.accepted()
    artifact = upload("app-1.0")
    client.post("/api/management/v1/deployments", json={
        "name": "d", "artifact_name": "app-1.0", "devices": [device.id]}, headers=admin)
    uri = fleet.next(device).json["artifact"]["source"]["uri"]
    response = client.get(uri)
    assert response.status_code == 200 and response.data == b""
    assert response.headers["X-Accel-Redirect"] == f"/_artifacts/{artifact['id']}"
    assert client.get(uri.replace("signature=", "signature=0")).status_code == 403
