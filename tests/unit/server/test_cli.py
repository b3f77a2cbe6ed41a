"""`tern-server` on a data directory, in-process (no server running)."""
import json

import pytest
from click.testing import CliRunner

from server.cli import cli
from testkit.artifacts import single_file_artifact
from testkit.devices import SimulatedDevice

from .conftest import public_key_fingerprint


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
    assert [d["id"] for d in json.loads(run("deployments", "list", "--json"))] == \
        [deployment["id"]]
    assert f"{deployment['id']}  first  app-1.0  aborted" in run("deployments", "list")
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


def test_users_with_roles_list_passwd_revoke_tokens_and_delete(run):
    assert "admin@example.com" in run("user", "create", "admin@example.com")
    assert ", read-only" in run("user", "create", "viewer@example.com", "--role", "read-only")
    assert "Invalid value for '--role'" in run("user", "create", "x@example.com", "--role",
                                               "root", ok=False)
    listed = json.loads(run("user", "list", "--json"))
    assert [(u["email"], u["role"]) for u in listed] == [
        ("admin@example.com", "admin"), ("viewer@example.com", "read-only")]
    assert f"{listed[1]['id']}  viewer@example.com  read-only" in run("user", "list")
    assert json.loads(run("user", "role", "viewer@example.com", "admin", "--json"))[
        "role"] == "admin"
    assert "password of viewer@example.com changed" in run("user", "passwd",
                                                           "viewer@example.com")
    assert "revoked 0 tokens of viewer@example.com" in run("user", "revoke-tokens",
                                                           "viewer@example.com")
    assert "deleted user viewer@example.com" in run("user", "delete", "viewer@example.com")
    assert "Error: 404: no user viewer@example.com" in run("user", "delete",
                                                          "viewer@example.com", ok=False)
    assert "409: admin@example.com is the last admin" in run("user", "delete",
                                                             "admin@example.com", ok=False)


def test_init_keeps_the_data_directory_and_database_private(run, tmp_path):
    data_dir = tmp_path / "data"
    for path, mode in ((data_dir, 0o700), (data_dir / "tern.db", 0o600),
                       (data_dir / "config.json", 0o600), (data_dir / "secret.key", 0o600)):
        assert path.stat().st_mode & 0o777 == mode, path
    data_dir.chmod(0o755)  # as an older tern-server made them
    (data_dir / "tern.db").chmod(0o644)
    run("init")
    assert data_dir.stat().st_mode & 0o777 == 0o700
    assert (data_dir / "tern.db").stat().st_mode & 0o777 == 0o600


def test_init_warns_when_it_cannot_make_the_data_directory_private(run, tmp_path, monkeypatch):
    """A directory of another user (so chmod is refused): a warning, not a traceback."""
    import os
    from pathlib import Path

    os.chmod(tmp_path / "data", 0o755)

    def refuse(self, mode):
        raise PermissionError(1, "Operation not permitted", str(self))

    monkeypatch.setattr(Path, "chmod", refuse)
    output = run("init")
    assert f"warning: cannot make {tmp_path / 'data'} mode 700" in output
    assert "data directory ready" in output


def test_decommission_asks_first_or_takes_yes(run, tmp_path):
    device = SimulatedDevice({"mac": "old"})
    pubkey = tmp_path / "device.pub"
    pubkey.write_text(device.pubkey)
    created = json.loads(run("devices", "preauthorize", "--identity", "mac=old",
                             "--pubkey", str(pubkey), "--json"))
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path / "data"), "devices",
                                      "decommission", created["id"]], input="n\n")
    assert result.exit_code == 1 and "Aborted" in result.output
    assert len(json.loads(run("devices", "list", "--json"))) == 1
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path / "data"), "devices",
                                      "decommission", created["id"]], input="y\n")
    assert result.exit_code == 0 and f"{created['id']}: decommissioned" in result.output
    assert json.loads(run("devices", "list", "--json")) == []
    assert f"404: no device {created['id']}" in run("devices", "decommission", created["id"],
                                                     "--yes", ok=False)


def test_artifacts_list_shows_the_signature_state_and_key(run, tmp_path, keys):
    settings_path = tmp_path / "data" / "config.json"
    settings = json.loads(settings_path.read_text())
    (tmp_path / "data" / "keys").mkdir()
    (tmp_path / "data" / "keys" / "release.pub").write_bytes(keys["rsa"].public_path.read_bytes())
    settings_path.write_text(json.dumps({**settings, "artifact_verify_keys": ["keys/release.pub"]}))
    run("artifacts", "upload", str(single_file_artifact(tmp_path, "app-1.0",
                                                   signing_key=keys["rsa"].private_key)))
    fingerprint = public_key_fingerprint(keys["rsa"].public_path)
    assert f"verified by keys/release.pub (SHA-256 {fingerprint[:16]}...)" in \
        run("artifacts", "list")
    refused = run("artifacts", "upload", str(single_file_artifact(tmp_path, "app-2.0")), ok=False)
    assert "400: artifact refused: this server accepts only artifacts signed" in refused

    settings_path.write_text(json.dumps(settings))
    run("artifacts", "upload", str(single_file_artifact(tmp_path, "app-3.0",
                                                   signing_key=keys["rsa"].private_key)))
    run("artifacts", "upload", str(single_file_artifact(tmp_path, "app-4.0")))
    listed = run("artifacts", "list")
    assert "app-3.0  qemux86-64" in listed and "signed, not verified (no keys configured)" in listed
    assert listed.rstrip().endswith("unsigned")


@pytest.mark.parametrize("args", [
    ["artifacts", "upload", "missing.mender"],
    ["devices", "preauthorize", "--identity", "mac=x", "--pubkey", "missing.pub"],
    ["--ca-cert", "missing.crt", "devices", "list"],
])
def test_a_bad_file_path_is_one_line(run, args):
    output = run(*args, ok=False)
    assert output.count("\n") == 1 and output.startswith("Error: ") and "missing." in output


@pytest.mark.parametrize("settings, message", [
    ('{"artifact_verify_keys": ["keys/nope.pub"]}', "config.json: artifact verify key "
                                                    "keys/nope.pub: cannot read "),
    ("{not json", "config.json: Expecting property name"),
    ('{"database_url": "postgresql+psycopg://tern@127.0.0.1:1/tern"}',
     "database postgresql+psycopg://tern@127.0.0.1:1/tern: connection failed: "),
])
def test_a_bad_data_directory_is_one_line(run, tmp_path, settings, message):
    (tmp_path / "data" / "config.json").write_text(settings)
    output = run("artifacts", "list", ok=False)
    assert output.count("\n") == 1 and output.startswith("Error: ") and message in output


@pytest.mark.parametrize("data_dir, options, message", [
    ("/proc/no-such-dir", [], "Error: cannot create /proc/no-such-dir: No such file"),
    ("{tmp}/pg", ["--database-url", "postgresql+psycopg://tern:secret@127.0.0.1:1/tern"],
     "Error: database postgresql+psycopg://tern:***@127.0.0.1:1/tern: connection failed: "),
])
def test_init_failures_are_one_line(tmp_path, data_dir, options, message):
    result = CliRunner().invoke(cli, ["--data-dir", data_dir.format(tmp=tmp_path), "init",
                                      *options])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith(message)


def accepted_devices(run, tmp_path, count: int) -> list[str]:
    """`count` devices preauthorized and accepted through the CLI; their ids."""
    ids = []
    for index in range(count):
        device = SimulatedDevice({"mac": f"cli-{index}"}, "ed25519")
        pubkey = tmp_path / f"device-{index}.pub"
        pubkey.write_text(device.pubkey)
        created = json.loads(run("devices", "preauthorize", "--identity", f"mac=cli-{index}",
                                 "--pubkey", str(pubkey), "--json"))
        run("devices", "accept", created["id"], "--json")
        ids.append(created["id"])
    return ids


def test_phased_deployment_pause_resume_release_phase(run, tmp_path):
    run("user", "create", "admin@example.com")
    accepted_devices(run, tmp_path, 4)
    run("artifacts", "upload", str(single_file_artifact(tmp_path, "app-1.0")))
    run("artifacts", "upload", str(single_file_artifact(tmp_path, "app-1.1")))
    deployment = json.loads(run(
        "deployments", "create", "--name", "ramp", "--artifact-name", "app-1.0",
        "--all-devices", "--phase", "1", "--phase", "50%,after=100%,max-failures=0",
        "--phase", "rest,release", "--max-failures", "10%", "--retries", "2",
        "--start-at", "2026-01-01T00:00:00Z", "--window", "22:00-04:00", "--json"))
    assert [(p["size"], p["after_success"], p["release"], p["max_failures"])
            for p in deployment["phases"]] == [(1, None, False, "10%"), (2, "100%", False, 0),
                                               (1, None, True, "10%")]
    assert (deployment["retries"], deployment["window"]) == (2, "22:00-04:00")
    assert deployment["start_at"] == "2026-01-01T00:00:00+00:00"

    paused = json.loads(run("deployments", "pause", deployment["id"], "--reason", "lunch",
                            "--json"))
    assert (paused["status"], paused["pause_reason"]) == ("paused", "lunch")
    assert "  paused: lunch" in run("deployments", "show", deployment["id"])
    assert "409: deployment is paused: resume it first" in run(
        "deployments", "release-phase", deployment["id"], ok=False)
    resumed = json.loads(run("deployments", "resume", deployment["id"], "--artifact-name",
                             "app-1.1", "--json"))
    assert (resumed["status"], resumed["artifact_name"]) == ("pending", "app-1.1")
    released = json.loads(run("deployments", "release-phase", deployment["id"], "--json"))
    assert released["phases"][1]["started_at"] is not None
    assert "phase 3: 1 devices, waiting" in run("deployments", "list")
    from server import create_app
    from server.audit import entries
    from server.config import data_dir_config

    with create_app(data_dir_config(tmp_path / "data")).app_context():
        actions = [e["action"] for e in entries(20, 0) if e["target"] == deployment["id"]]
    assert actions == ["deployment.phase_start", "deployment.resume", "deployment.pause",
                       "deployment.phase_start", "deployment.create"]


def test_a_phase_of_the_devices_matching_a_condition_or_a_dynamic_group(run, tmp_path):
    from server import create_app
    from server.config import data_dir_config
    from server.database import db
    from server.inventory import service as inventory

    ids = accepted_devices(run, tmp_path, 4)
    with create_app(data_dir_config(tmp_path / "data")).app_context():
        for device_id, site in zip(ids, ("lab", "lab", "field", "field"), strict=True):
            inventory.update(device_id, {"site": (site, None)}, replace=False)
        db.session.commit()
    run("artifacts", "upload", str(single_file_artifact(tmp_path, "app-1.0")))
    run("groups", "create", "lab", "--where", "site=lab")
    for first in ("where=site=lab", "dynamic-group=lab"):
        deployment = json.loads(run(
            "deployments", "create", "--name", "lab first", "--artifact-name", "app-1.0",
            "--all-devices", "--phase", first, "--phase", "rest,after=100%", "--json"))
        site_lab = [{"attribute": "site", "type": "$eq", "value": "lab"}]
        assert [(p["size"], p["filter"]) for p in deployment["phases"]] == [
            (2, site_lab), (2, None)]
        assert 'phase 1: 2 devices (site $eq "lab"), started' in run(
            "deployments", "show", deployment["id"])
        run("deployments", "abort", deployment["id"])


@pytest.mark.parametrize("args, message", [
    (["--phase", "10%,soon"], "--phase 10%,soon: expected SIZE|where=CONDITION|"
                              "dynamic-group=NAME[,release|after=N%|at=TIME]"),
    (["--phase", "where=site", "--phase", "rest,release"], "--where 'site': expected"),
    (["--phase", "dynamic-group=nowhere"], "404: no dynamic group nowhere"),
    (["--phase", "ten"], "400: phases[0].size must be an integer of at least 1"),
    (["--window", "9-5"], "400: window must be HH:MM-HH:MM"),
    (["--max-failures", "-1"], "400: max_failures must be an integer of at least 0"),
])
def test_bad_rollout_options_are_one_line(run, tmp_path, args, message):
    run("artifacts", "upload", str(single_file_artifact(tmp_path, "app-1.0")))
    output = run("deployments", "create", "--name", "x", "--artifact-name", "app-1.0",
                 "--all-devices", *args, ok=False)
    assert message in output and "Traceback" not in output
    assert len(output.strip().splitlines()) == 1, output
