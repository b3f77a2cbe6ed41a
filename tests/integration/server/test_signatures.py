"""Artifact signatures on a real `tern-server serve` with two verify keys in config.json (a
rotation): artifacts made by `tern-artifact` and uploaded with the `tern-server` executable
over HTTPS; signed by either key they are stored with the key that verified them; unsigned,
signed by another key or tampered with they are refused in one line and nothing is kept."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.admin import ServerAdmin
from testkit.live_server import LiveServer

from .conftest import tern_artifact
from .test_cli_failures import TERN_SERVER, assert_fails_in_one_line, remote, tern_server

pytestmark = pytest.mark.slow


def init_with_keys(data_dir: Path, keys: dict[str, Path]) -> None:
    """`tern-server init`, then the keys copied into DATA_DIR/keys and named in config.json."""
    subprocess.run([sys.executable, "-m", "server", "--data-dir", str(data_dir), "init"],
                   check=True, capture_output=True)
    (data_dir / "keys").mkdir()
    for name, source in keys.items():
        (data_dir / "keys" / name).write_bytes(source.read_bytes())
    settings = json.loads((data_dir / "config.json").read_text())
    settings["artifact_verify_keys"] = [f"keys/{name}" for name in keys]
    (data_dir / "config.json").write_text(json.dumps(settings))


@pytest.fixture(scope="module")
def admin(tmp_path_factory, keys):
    data_dir = tmp_path_factory.mktemp("signatures") / "data"
    init_with_keys(data_dir, {"old.pub": keys["rsa"].public_path,
                              "new.pub": keys["ecdsa"].public_path})
    live = LiveServer(data_dir).start()
    try:
        yield ServerAdmin(live)
    finally:
        live.stop()


def test_rotation_accepts_either_key_and_shows_which(admin, keys, tmp_path):
    old = tern_artifact(tmp_path, "app-1.0", keys["rsa"].private_path)
    new = tern_artifact(tmp_path, "app-2.0", keys["ecdsa"].private_path)
    for artifact, key_name in ((old, "old.pub"), (new, "new.pub")):
        uploaded = admin.cli(*remote(admin, "artifacts", "upload", str(artifact)))
        assert uploaded["signature"] == "verified"
        assert uploaded["verified_by"]["name"] == f"keys/{key_name}"
    fingerprints = {a["name"]: a["verified_by"]["fingerprint"] for a in admin.get("/artifacts")}
    listed = tern_server(*remote(admin, "artifacts", "list")).stdout.splitlines()
    assert len(listed) == 2
    for line, (name, key_name) in zip(listed, (("app-1.0", "old.pub"), ("app-2.0", "new.pub")),
                                      strict=True):
        assert f"  {name}  " in line
        assert line.endswith(f"verified by keys/{key_name} (SHA-256 {fingerprints[name][:16]}...)")


def test_unsigned_unknown_key_and_tampered_are_refused_and_nothing_is_kept(admin, keys,
                                                                          tmp_path):
    before = sorted(p.name for p in (admin.live.data_dir / "artifacts").iterdir())
    # large: refused after its first bytes, it must still get the answer, not a closed
    # connection under its upload
    unsigned = tern_artifact(tmp_path, "unsigned-1.0", mib=48)
    unknown = tern_artifact(tmp_path, "unknown-1.0", keys["other-rsa"].private_path)
    tampered = tern_artifact(tmp_path, "tampered-1.0", keys["rsa"].private_path)
    data = tampered.read_bytes()
    at = data.index(b"  data/0000/tampered-1.0.txt") - 1  # the payload's checksum, signed
    tampered.write_bytes(data[:at] + (b"0" if data[at:at + 1] != b"0" else b"1") + data[at + 1:])
    for artifact, refusal in ((unsigned, "missing signature"),
                              (unknown, "signature does not verify with any key"),
                              (tampered, "signature does not verify with any key")):
        result = tern_server(*remote(admin, "artifacts", "upload", str(artifact)))
        assert_fails_in_one_line(result, "Error: 400: artifact refused: this server accepts "
                                         "only artifacts signed with one of its verify keys: ")
        assert refusal in result.stderr
    assert sorted(p.name for p in (admin.live.data_dir / "artifacts").iterdir()) == before
    assert {a["name"] for a in admin.get("/artifacts")} <= {"app-1.0", "app-2.0"}


@pytest.mark.parametrize("problem", ["missing", "not a key"])
def test_serve_with_a_key_it_cannot_use_stops_in_one_line(tmp_path, problem):
    bad_key = tmp_path / "bad.pub"
    if problem == "not a key":
        bad_key.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    data_dir = tmp_path / "data"
    init_with_keys(data_dir, {})
    settings = json.loads((data_dir / "config.json").read_text())
    (data_dir / "config.json").write_text(json.dumps(
        {**settings, "artifact_verify_keys": [str(bad_key)]}))
    result = subprocess.run([TERN_SERVER, "--data-dir", str(data_dir), "serve", "--bind",
                             "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    assert_fails_in_one_line(result, f"config.json: artifact verify key {bad_key}")
    assert ("No such file or directory" if problem == "missing"
            else "not a PKIX PEM public key") in result.stderr
