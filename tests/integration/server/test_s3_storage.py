"""The S3 artifact storage against a real S3-compatible server (moto's, in its own process):
uploads go into the bucket, devices download through presigned URLs straight from it, and
deleting the artifact deletes the object."""
import hashlib
import json
import os

import boto3
import pytest
import requests
from botocore.exceptions import ClientError

from testkit.admin import ServerAdmin
from testkit.artifacts import build_artifact
from testkit.devices import AUTH_PATH, SimulatedDevice
from testkit.live_server import LiveServer
from testkit.s3 import CREDENTIALS, S3Server

from .conftest import NEXT, PROVIDES

pytestmark = pytest.mark.slow

BUCKET = "tern-artifacts"


def large_artifact(tmp_path):
    """9 MiB that do not compress: above boto3's 8 MiB multipart threshold."""
    path = tmp_path / "app.mender"
    path.write_bytes(build_artifact({"payload.bin": os.urandom(9 << 20)}, name="app-1.0",
                                    device_types=["qemux86-64"], module_type="single-file",
                                    compression="none"))
    return path


@pytest.fixture
def s3_server(monkeypatch):
    """moto's S3 server on a loopback port; boto3 in tern-server finds the credentials in the
    environment it inherits."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with S3Server() as server:
        yield server.url


def test_s3_storage_presigned_download_and_delete(s3_server, tmp_path):
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket=BUCKET)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "config.json").write_text(json.dumps({"artifact_storage": {
        "backend": "s3", "bucket": BUCKET, "prefix": "artifacts/", "endpoint_url": s3_server}}))
    server = LiveServer(data_dir).start()
    try:
        admin = ServerAdmin(server)
        artifact = large_artifact(tmp_path)
        uploaded = admin.cli("artifacts", "upload", str(artifact))
        key = f"artifacts/{uploaded['id']}"
        stored = s3.head_object(Bucket=BUCKET, Key=key)
        assert stored["ContentLength"] == uploaded["size"] == artifact.stat().st_size
        assert stored["ETag"].strip('"').endswith("-2")  # uploaded in two parts
        assert not (data_dir / "artifacts").exists() or not any(
            (data_dir / "artifacts").iterdir())

        device = SimulatedDevice({"mac": "02:00:00:00:00:53"}, "ecdsa")
        body, headers = device.auth_request()
        auth = f"{server.url}{AUTH_PATH}"
        requests.post(auth, data=body, headers=headers, verify=server.certificate)
        [pending] = admin.cli("devices", "list", "--status", "pending")
        admin.cli("devices", "accept", pending["id"])
        device.token = requests.post(auth, data=body, headers=headers,
                                     verify=server.certificate).text
        deployment = admin.cli("deployments", "create", "--name", "s3", "--artifact-name",
                               "app-1.0", "--device", pending["id"])
        answer = requests.post(f"{server.url}{NEXT}", json=PROVIDES, headers=device.headers,
                               verify=server.certificate).json()
        uri = answer["artifact"]["source"]["uri"]
        assert uri.startswith(f"{s3_server}/{BUCKET}/{key}?")  # from the store, not the server
        assert "X-Amz-Signature=" in uri
        download = requests.get(uri, timeout=30)
        assert download.status_code == 200
        assert hashlib.sha256(download.content).hexdigest() == uploaded["sha256"]
        # Ranges, as an adaptive install fetches them: from the bucket, and through the
        # management download's redirect (the Range header follows it).
        data = artifact.read_bytes()
        for range_header, start, end in [("bytes=1000-1999", 1000, 1999),
                                         ("bytes=-4096", len(data) - 4096, len(data) - 1)]:
            part = requests.get(uri, headers={"Range": range_header}, timeout=30)
            assert part.status_code == 206, part.text[:200]
            assert part.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
            assert part.content == data[start:end + 1]
        redirected = requests.get(
            f"{server.url}/api/management/v1/artifacts/{uploaded['id']}/download",
            headers={"Authorization": f"Bearer {admin.token}", "Range": "bytes=10-19"},
            verify=server.certificate, timeout=30)
        assert redirected.history[0].status_code == 302
        assert redirected.status_code == 206 and redirected.content == data[10:20]

        admin.cli("deployments", "abort", deployment["id"])
        response = requests.delete(f"{server.url}/api/management/v1/artifacts/{uploaded['id']}",
                                   headers={"Authorization": f"Bearer {admin.token}"},
                                   verify=server.certificate)
        assert response.status_code == 204
        with pytest.raises(ClientError) as missing:
            s3.head_object(Bucket=BUCKET, Key=key)
        assert missing.value.response["Error"]["Code"] == "404"
    finally:
        server.stop()
