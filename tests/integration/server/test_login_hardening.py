"""`tern-server serve` on its defaults, tried as an attacker and a careless operator would:
login throttling shared by gunicorn's workers (the state is in the database), and a data
directory only the server's user can read."""
import os
import re

import pytest
import requests

from testkit.admin import ServerAdmin
from testkit.live_server import LiveServer

pytestmark = pytest.mark.slow

LOGIN = "/api/management/v1/auth/login"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request, tmp_path_factory):
    """Two workers; their metrics files (one set per worker pid) show which ones answered."""
    database_url = None
    if request.param == "postgresql":
        database_url = request.getfixturevalue("postgres").create_database("tern_hardening")
    root = tmp_path_factory.mktemp("hardening")
    metrics_dir = root / "metrics"
    metrics_dir.mkdir()
    server = LiveServer(root / "data", workers=2, database_url=database_url)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # inherited by serve only
    try:
        server.start()
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
    server.metrics_dir = metrics_dir
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def admin(live) -> ServerAdmin:
    return ServerAdmin(live)


def workers_that_answered(live) -> set[str]:
    return {match.group(1) for path in live.metrics_dir.iterdir()
            if (match := re.fullmatch(r"\w+_(\d+)\.db", path.name))}


def test_a_metrics_token_for_prometheus_reads_metrics_only(live, admin):
    created = requests.post(f"{live.url}/api/management/v1/tokens",
                            json={"name": "prometheus", "scope": "metrics"},
                            headers={"Authorization": f"Bearer {admin.token}"},
                            verify=live.certificate, timeout=30)
    assert created.status_code == 201, created.text
    headers = {"Authorization": f"Bearer {created.json()['token']}"}
    metrics = requests.get(f"{live.url}/metrics", headers=headers, verify=live.certificate,
                           timeout=30)
    assert metrics.status_code == 200 and "tern_devices" in metrics.text
    devices = requests.get(f"{live.url}/api/management/v1/devices", headers=headers,
                           verify=live.certificate, timeout=30)
    assert devices.status_code == 403
    assert devices.json()["error"] == "a metrics token can only read /metrics"


def test_failed_logins_are_throttled_across_workers(live, admin):
    email, password = "admin@example.com", "tern admin password"
    answers = [requests.post(live.url + LOGIN, auth=(email, "wrong password"),
                             verify=live.certificate, timeout=30)  # a new connection each
               for _ in range(20)]
    assert [a.status_code for a in answers] == [401] * 5 + [429] * 15
    assert all(0 < int(a.headers["Retry-After"]) <= 300 for a in answers[5:])
    assert answers[-1].json()["error"].startswith("too many failed logins")
    assert len(workers_that_answered(live)) == 2  # both workers took part, and counted the same
    right = requests.post(live.url + LOGIN, auth=(email, password), verify=live.certificate,
                          timeout=30)
    assert right.status_code == 429  # from this address, for a while
    failures = [e for e in admin.get("/audit?limit=100") if e["action"] == "user.login_failed"]
    assert len(failures) == 5 and failures[0]["actor"] == "source:127.0.0.1"


def test_the_data_directory_and_database_are_private(live):
    """Under the usual umask 022 (the tests'), SQLite made its files 0644 before."""
    requests.get(f"{live.url}/api/management/v1/devices", verify=live.certificate, timeout=30)
    data_dir = live.data_dir
    assert data_dir.stat().st_mode & 0o777 == 0o700
    private = ["secret.key", "config.json"]  # config.json may hold a PostgreSQL password
    if live.database_url is None:  # SQLite's database, its WAL and shared memory too
        private += ["tern.db", "tern.db-wal", "tern.db-shm"]
    for name in private:
        assert (data_dir / name).stat().st_mode & 0o777 == 0o600, name
