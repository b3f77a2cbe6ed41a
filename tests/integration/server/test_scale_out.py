"""Two `tern-server serve` instances (gunicorn, HTTPS) sharing one PostgreSQL and one artifact
directory, as behind a load balancer: whatever one instance does, the other sees."""
import hashlib
import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import jwt
import psycopg
import pytest
import requests
from sqlalchemy import create_engine, text

from server.config import new_secret
from server.tls import ensure_self_signed
from testkit.admin import ServerAdmin
from testkit.devices import AUTH_PATH, SimulatedDevice
from testkit.live_server import LiveServer

from .conftest import NEXT, PROVIDES, make_artifact

pytestmark = pytest.mark.slow


@pytest.fixture
def instances(postgres, tmp_path):
    """Two data directories as on two hosts: the same config.json, secret.key and certificate;
    started together, so both migrate the empty database at once."""
    database_url = postgres.create_database("tern_scale_out")
    shared_artifacts = tmp_path / "shared-artifacts"
    settings = {"database_url": database_url, "artifacts_dir": str(shared_artifacts)}
    secret = new_secret()
    ensure_self_signed(tmp_path / "tls", ["localhost", "127.0.0.1"])
    servers = []
    for name in ("host1", "host2"):
        data_dir = tmp_path / name
        data_dir.mkdir()
        (data_dir / "config.json").write_text(json.dumps(settings))
        (data_dir / "secret.key").write_text(secret)
        shutil.copytree(tmp_path / "tls", data_dir / "tls")
        servers.append(LiveServer(data_dir, workers=2))
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(LiveServer.start, servers))
        yield servers
    finally:
        for server in servers:
            server.stop()
    with create_engine(database_url).connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1


def test_two_instances_share_database_and_artifacts(instances, tmp_path):
    one, two = instances
    assert one.certificate.read_bytes() == two.certificate.read_bytes()
    admin = ServerAdmin(one)
    over_one = ("--server", one.url, "--token", admin.token, "--ca-cert", str(one.certificate))

    artifact = make_artifact(tmp_path)
    uploaded = admin.cli(*over_one, "artifacts", "upload", str(artifact))

    device = SimulatedDevice({"mac": "02:00:00:00:00:01"}, "ed25519")
    body, headers = device.auth_request()
    auth_two = f"{two.url}{AUTH_PATH}"
    assert requests.post(auth_two, data=body, headers=headers,
                         verify=two.certificate).status_code == 401
    [pending] = admin.cli(*over_one, "devices", "list", "--status", "pending")
    admin.cli(*over_one, "devices", "accept", pending["id"])
    response = requests.post(auth_two, data=body, headers=headers, verify=two.certificate)
    assert response.status_code == 200
    device.token = response.text
    deployment = admin.cli(*over_one, "deployments", "create", "--name", "scale",
                           "--artifact-name", "app-1.0", "--device", pending["id"])

    for server in (two, one):  # the token issued by instance 2 works on both
        response = requests.post(f"{server.url}{NEXT}", json=PROVIDES, headers=device.headers,
                                 verify=server.certificate)
        assert response.status_code == 200, response.text
        assert response.json()["id"] == deployment["id"]
    answer = requests.post(f"{two.url}{NEXT}", json=PROVIDES, headers=device.headers,
                           verify=two.certificate).json()
    uri = answer["artifact"]["source"]["uri"]
    assert uri.startswith(two.url)
    download = requests.get(uri, verify=two.certificate)
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == uploaded["sha256"]

    status_url = (f"{two.url}/api/devices/v1/deployments/device/deployments/"
                  f"{deployment['id']}/status")
    for status in ("downloading", "installing", "success"):
        assert requests.put(status_url, json={"status": status}, headers=device.headers,
                            verify=two.certificate).status_code == 204
    assert admin.device_status(deployment["id"], pending["id"]) == "success"  # via instance 1
    assert admin.get(f"/deployments/{deployment['id']}")["status"] == "finished"


def test_a_busy_worker_keeps_its_database_connections(postgres, tmp_path):
    """Each worker pools as many connections as it has threads: with every thread answering
    at once, no connection is closed on its return and opened again for the next request.
    (With SQLAlchemy's default of 5 and 8 threads, a worker opened a new PostgreSQL backend
    every few dozen polls under load.)"""
    server = LiveServer(tmp_path / "data", workers=1, threads=8,
                        database_url=postgres.create_database("tern_pool")).start()
    try:
        secret = (tmp_path / "data" / "secret.key").read_text().strip()
        token = jwt.encode({"iss": "tern", "jti": "no-such-token", "sub": "no-such-device",
                            "kind": "device", "exp": 2**40}, secret, algorithm="HS256")

        def poll_as_the_same_device(_):
            with requests.Session() as session:  # one keep-alive connection each
                for _ in range(50):  # each is one token lookup: unknown, so a 401
                    response = session.post(f"{server.url}{NEXT}", json=PROVIDES,
                                            headers={"Authorization": f"Bearer {token}"},
                                            verify=server.certificate)
                    assert response.status_code == 401

        with psycopg.connect(host=str(postgres.directory), port=postgres.port,
                             user="postgres", dbname="tern_pool", autocommit=True) as stats:
            def sessions() -> int:
                return stats.execute("SELECT sessions FROM pg_stat_database "
                                     "WHERE datname = 'tern_pool'").fetchone()[0]

            before = sessions()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(poll_as_the_same_device, range(16)))
            assert sessions() - before <= 8
    finally:
        server.stop()
