"""Two `tern-server serve` instances (gunicorn, HTTPS) sharing one PostgreSQL and one artifact
directory, as behind a load balancer: whatever one instance does, the other sees; and with S3
storage behind nginx, one of them killed in the middle of a phased rollout."""
import argparse
import hashlib
from concurrent.futures import ThreadPoolExecutor

import jwt
import psycopg
import pytest
import requests
from sqlalchemy import create_engine, text

from bench import scale_out
from testkit.admin import ServerAdmin
from testkit.devices import AUTH_PATH, SimulatedDevice
from testkit.live_server import LiveServer
from testkit.scale_out import shared_instances, start_together

from .conftest import NEXT, PROVIDES, make_artifact

pytestmark = pytest.mark.slow


@pytest.fixture
def instances(postgres, tmp_path):
    """Two data directories as on two hosts: the same config.json, secret.key and certificate;
    started together, so both migrate the empty database at once."""
    database_url = postgres.create_database("tern_scale_out")
    servers = shared_instances(tmp_path, {"database_url": database_url,
                                          "artifacts_dir": str(tmp_path / "shared-artifacts")})
    try:
        start_together(servers)
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


def test_a_phased_rollout_through_nginx_survives_an_instance_killed_midway():
    """`bench/scale_out.py` on a small seeded sample: two instances on PostgreSQL and S3
    behind nginx, a phased deployment to 200 simulated devices (2 of them failing), instance
    1 SIGKILLed once 40 % of them finished and started again; nothing lost, no device
    counted twice (the checks are the benchmark's: `problems`)."""
    arguments = argparse.Namespace(
        devices=200, poll_interval=3.0, retry_interval=1.0, fleet_threads=32, kill_at=0.4,
        down=3.0, fail_rate=0.01, seed=1, timeout=600.0)
    results, problems = scale_out.run(arguments)
    print(results)
    assert problems == [], results
    assert results["devices_results"] == {"success": 198, "failure": 2}
    assert results["server_statistics"] == results["devices_results"]
    assert results["phases"] == [10, 60, 130]
    assert results["killed_after_finished"] >= 80
