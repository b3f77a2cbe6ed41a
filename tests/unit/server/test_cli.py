"""`tern-server` on a data directory, in-process (no server running)."""
import json

import pytest
from click.testing import CliRunner

from server.cli import cli
from testkit.artifacts import single_file_artifact
from testkit.devices import SimulatedDevice


@pytest.fixture
def run(tmp_path):
    data_dir = tmp_path / "data"

    def run(*args: str, ok: bool = True):
        result = CliRunner().invoke(cli, ["--data-dir", str(data_dir), *args],
                                    env={"TERN_PASSWORD": "correct horse battery"})
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    run("init")
    return run


def test_init_makes_a_data_directory_and_is_idempotent(run, tmp_path):
    data_dir = tmp_path / "data"
    assert (data_dir / "secret.key").stat().st_mode & 0o077 == 0
    secret = (data_dir / "secret.key").read_text()
    run("init")
    assert (data_dir / "secret.key").read_text() == secret
    assert json.loads((data_dir / "config.json").read_text()) == {"database_url": None}


def test_commands_need_an_initialised_data_directory(tmp_path):
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path / "nothing"), "devices", "list"])
    assert result.exit_code != 0
    assert "run `tern-server --data-dir" in result.output


def test_manage_devices_artifacts_and_deployments(run, tmp_path):
    assert "created user admin@example.com" in run("user", "create", "admin@example.com")
    device = SimulatedDevice({"mac": "cli"})
    pubkey = tmp_path / "device.pub"
    pubkey.write_text(device.pubkey)
    [created] = [json.loads(run("devices", "preauthorize", "--identity", "mac=cli",
                                "--pubkey", str(pubkey), "--json"))]
    assert created["status"] == "preauthorized"
    assert json.loads(run("devices", "list", "--status", "preauthorized", "--json"))[0]["id"] == \
        created["id"]
    assert json.loads(run("devices", "reject", created["id"], "--json"))["status"] == "rejected"
    assert json.loads(run("devices", "accept", created["id"], "--json"))["status"] == "accepted"

    artifact = single_file_artifact(tmp_path, "app-1.0")
    uploaded = json.loads(run("artifacts", "upload", str(artifact), "--json"))
    assert uploaded["name"] == "app-1.0" and uploaded["size"] == artifact.stat().st_size
    assert "app-1.0" in run("artifacts", "list")
    assert "409" in run("artifacts", "upload", str(artifact), ok=False)

    deployment = json.loads(run("deployments", "create", "--name", "first", "--artifact-name",
                                "app-1.0", "--all-devices", "--json"))
    assert deployment["device_count"] == 1
    shown = json.loads(run("deployments", "show", deployment["id"], "--json"))
    assert shown["devices"][0]["device_id"] == created["id"]
    assert json.loads(run("deployments", "abort", deployment["id"], "--json"))["status"] == \
        "aborted"
    assert "400: give exactly one of" in run("deployments", "create", "--name", "x",
                                             "--artifact-name", "app-1.0", ok=False)


def test_local_actions_are_audited_as_the_cli(run, tmp_path):
    run("user", "create", "admin@example.com")
    from server import create_app
    from server.audit import entries
    from server.config import data_dir_config

    app = create_app(data_dir_config(tmp_path / "data"))
    with app.app_context():
        [entry] = entries(10, 0)
    assert entry["action"] == "user.create"
    assert entry["actor"].startswith("local:") and entry["actor"].endswith("@cli")
