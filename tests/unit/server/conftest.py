"""Server unit tests: Flask's test client over SQLite and a real PostgreSQL, one per run each.

Every test that takes `app` runs twice, once per database; the schema comes from the
Alembic migrations, and the tables are emptied before each test.
"""
import base64
import hashlib
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import text

from server import create_app
from server.artifacts.keys import init_app as init_artifact_keys
from server.database import db
from server.migrate import upgrade
from server.models import Base
from testkit.artifacts import single_file_artifact
from testkit.devices import SimulatedDevice

PASSWORD = "correct horse battery"


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request, tmp_path_factory):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'tern.db'}"
    else:
        url = request.getfixturevalue("postgres").create_database("tern_unit")
    upgrade(url)
    return url


@pytest.fixture
def app(database_url, tmp_path):
    app = create_app({"DATABASE_URL": database_url, "SECRET_KEY": "test-secret-" + "x" * 32,
                      "ARTIFACTS_DIR": str(tmp_path / "artifacts"), "TESTING": True,
                      # the test client reads a stream to its end: a short life
                      "EVENT_STREAM_SECONDS": 0.3, "EVENT_POLL_SECONDS": 0.05})
    with db.engine(app).begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(text(f"DELETE FROM {table.name}"))
    yield app
    db.dispose(app)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def admin(app, client) -> dict[str, str]:
    """Headers of a logged-in user."""
    from server.users.service import create_user

    with app.app_context():
        create_user("admin@example.com", PASSWORD)
    credentials = base64.b64encode(f"admin@example.com:{PASSWORD}".encode()).decode()
    response = client.post("/api/management/v1/auth/login",
                           headers={"Authorization": f"Basic {credentials}"})
    assert response.status_code == 200, response.json
    return {"Authorization": f"Bearer {response.json['token']}"}


class Fleet:
    """Make devices and drive them through admission, as the real client would."""

    def __init__(self, client, admin):
        self.client, self.admin = client, admin

    def authenticate(self, device: SimulatedDevice):
        body, headers = device.auth_request()
        response = self.client.post("/api/devices/v1/authentication/auth_requests", data=body,
                                    headers=headers)
        if response.status_code == 200:
            device.token = response.get_data(as_text=True)
        return response

    def device_id(self, device: SimulatedDevice) -> str:
        devices = self.client.get("/api/management/v1/devices", headers=self.admin).json
        return next(d["id"] for d in devices if d["identity_data"] == device.identity)

    def accepted(self, mac: str = "52:54:00:00:00:01", key_kind: str = "rsa",
                 device_type: str = "qemux86-64", artifact_name: str = "release-0"):
        device = SimulatedDevice({"mac": mac}, key_kind)
        assert self.authenticate(device).status_code == 401
        device.id = self.device_id(device)
        response = self.client.put(f"/api/management/v1/devices/{device.id}/status",
                                   json={"status": "accepted"}, headers=self.admin)
        assert response.status_code == 200, response.json
        assert self.authenticate(device).status_code == 200
        response = self.client.put("/api/devices/v1/inventory/device/attributes", json=[
            {"name": "device_type", "value": device_type},
            {"name": "artifact_name", "value": artifact_name}], headers=device.headers)
        assert response.status_code == 200
        device.provides = {"device_type": device_type, "artifact_name": artifact_name}
        return device

    def next(self, device: SimulatedDevice, provides: dict | None = None):
        return self.client.post("/api/devices/v2/deployments/device/deployments/next",
                                json={"device_provides": provides or device.provides,
                                      "update_control_map": False},
                                headers=device.headers)

    def status(self, device: SimulatedDevice, deployment_id: str, status: str):
        return self.client.put(
            f"/api/devices/v1/deployments/device/deployments/{deployment_id}/status",
            json={"status": status}, headers=device.headers)


@pytest.fixture
def fleet(client, admin) -> Fleet:
    return Fleet(client, admin)


def public_key_fingerprint(path: Path) -> str:
    """As the README tells operators to compute it: openssl's DER of the key, SHA-256."""
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", str(path), "-outform", "DER"],
                         check=True, capture_output=True).stdout
    return hashlib.sha256(der).hexdigest()


def configure_verify_keys(app, paths: list[str], data_dir: Path | None = None) -> None:
    """As `artifact_verify_keys` in a data directory's config.json (relative paths from it)."""
    app.config["ARTIFACT_VERIFY_KEYS"] = paths
    if data_dir is not None:
        app.config["DATA_DIR"] = str(data_dir)
    init_artifact_keys(app)


@pytest.fixture
def upload(client, admin, tmp_path):
    """Upload a fresh artifact; returns the API's view of it."""
    def upload(name: str, device_types=("qemux86-64",), **options) -> dict:
        path = single_file_artifact(tmp_path, name, device_types, **options)
        response = client.post("/api/management/v1/artifacts", data=path.read_bytes(),
                               headers={**admin, "Content-Type": "application/octet-stream"})
        assert response.status_code == 201, response.json
        return response.json
    return upload
