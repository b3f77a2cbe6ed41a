import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from artifact.cli import EXIT_INVALID, cli


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "rootfs.ext4"
    path.write_bytes(os.urandom(10_000))
    return path


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_read_takes_mender_artifacts_no_progress_and_prints_the_same(tmp_path, image):
    out = tmp_path / "r.mender"
    run("write", "rootfs-image", "-f", image, "-n", "release-3", "-t", "qemu-arm64", "-o", out)
    quiet = run("read", "--no-progress", out)
    assert quiet.exit_code == 0, quiet.output
    assert quiet.output == run("read", out).output
    assert "read draws no progress bar" in " ".join(run("read", "--help").output.split())


def test_write_read_validate(tmp_path, image, keys):
    out = tmp_path / "r.mender"
    result = run("write", "rootfs-image", "-f", image, "-n", "release-3", "-t", "qemu-arm64",
                 "-t", "rpi4", "-k", keys["rsa"].private_path, "-p", "os:debian",
                 "-d", "rootfs-image.version:release-2", "-N", "release-2", "-g", "beta",
                 "--compression", "lzma", "-o", out)
    assert result.exit_code == 0, result.output

    document = json.loads(run("read", "--json", "-k", keys["rsa"].public_path, out).output)
    assert document["name"] == "release-3"
    assert document["device_types"] == ["qemu-arm64", "rpi4"]
    assert document["signature"] == "verified"
    assert document["compression"] == "lzma"
    assert document["artifact_group"] == "beta"
    assert document["artifact_depends"] == {"artifact_name": ["release-2"]}
    payload = document["payloads"][0]
    assert payload["artifact_provides"]["os"] == "debian"
    assert payload["artifact_depends"] == {"rootfs-image.version": "release-2"}
    assert payload["files"] == [{"name": "rootfs.ext4", "size": 10_000,
                                 "checksum": payload["artifact_provides"]["rootfs-image.checksum"]}]

    assert run("validate", "-k", keys["rsa"].public_path, out).exit_code == 0
    human = run("read", out).output
    assert "Name: release-3" in human and "signed but no key" in human


def test_validate_reports_the_reason_and_exits_non_zero(tmp_path, image, keys):
    out = tmp_path / "r.mender"
    run("write", "rootfs-image", "-f", image, "-n", "r", "-t", "d", "-o", out)
    result = run("validate", "-k", keys["rsa"].public_path, out)
    assert result.exit_code == EXIT_INVALID
    assert "missing signature" in result.output

    signed = tmp_path / "s.mender"
    run("write", "rootfs-image", "-f", image, "-n", "r", "-t", "d", "-k",
        keys["ecdsa"].private_path, "-o", signed)
    result = run("validate", signed)
    assert result.exit_code == EXIT_INVALID
    assert "give a key" in result.output


def test_sign_in_place_refuses_to_resign_without_force(tmp_path, image, keys):
    out = tmp_path / "r.mender"
    run("write", "rootfs-image", "-f", image, "-n", "r", "-t", "d", "-o", out)
    assert run("sign", "-k", keys["ed25519"].private_path, out).exit_code == 0
    assert run("validate", "-k", keys["ed25519"].public_path, out).exit_code == 0

    again = run("sign", "-k", keys["rsa"].private_path, out)
    assert again.exit_code == EXIT_INVALID
    assert "already signed" in again.output
    assert run("validate", "-k", keys["ed25519"].public_path, out).exit_code == 0

    assert run("sign", "-f", "-k", keys["rsa"].private_path, out).exit_code == 0
    assert run("validate", "-k", keys["rsa"].public_path, out).exit_code == 0
    assert run("validate", "-k", keys["ed25519"].public_path, out).exit_code == EXIT_INVALID


def test_sign_refuses_a_damaged_artifact_and_leaves_no_output(tmp_path, image, keys):
    out = tmp_path / "r.mender"
    run("write", "rootfs-image", "-f", image, "-n", "r", "-t", "d", "--compression", "none",
        "-o", out)
    data = bytearray(out.read_bytes())
    data[data.find(image.read_bytes()[5000:5100])] ^= 0xFF
    out.write_bytes(bytes(data))
    signed = tmp_path / "signed.mender"
    result = run("sign", "-k", keys["rsa"].private_path, out, "-o", signed)
    assert result.exit_code == EXIT_INVALID
    assert "invalid checksum" in result.output
    assert not signed.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".signed")]


def test_module_image_with_meta_data(tmp_path, keys):
    files = []
    for name, content in {"dest_dir": b"/opt\n", "filename": b"a\n", "a": b"payload"}.items():
        (tmp_path / name).write_bytes(content)
        files += ["-f", tmp_path / name]
    meta = tmp_path / "meta.json"
    meta.write_text('{"run_args": "-p 80:80"}')
    out = tmp_path / "m.mender"
    result = run("write", "module-image", "-T", "single-file", *files, "-m", meta, "-n", "app-1",
                 "-t", "qemu-arm64", "--software-name", "app", "--software-version", "1.0.1",
                 "-o", out)
    assert result.exit_code == 0, result.output
    payload = json.loads(run("read", "--json", out).output)["payloads"][0]
    assert payload["type"] == "single-file"
    assert payload["meta_data"] == {"run_args": "-p 80:80"}
    assert payload["artifact_provides"] == {"rootfs-image.app.version": "1.0.1"}
    assert payload["clears_artifact_provides"] == ["rootfs-image.app.*"]
    assert [f["name"] for f in payload["files"]] == ["dest_dir", "filename", "a"]


def test_bad_inputs_get_clear_errors(tmp_path, image, keys):
    weak = tmp_path / "weak.key"
    subprocess.run(["openssl", "genrsa", "-traditional", "-out", weak, "2048"], check=True,
                   capture_output=True)
    result = run("write", "rootfs-image", "-f", image, "-n", "r", "-t", "d", "-k", weak,
                 "-o", tmp_path / "x.mender")
    assert result.exit_code == EXIT_INVALID
    assert "at least 3072" in result.output

    result = run("write", "rootfs-image", "-f", image, "-n", "r", "-t", "d", "-p", "novalue")
    assert result.exit_code == 2
    assert "KEY:VALUE" in result.output

    script = tmp_path / "Sync_Enter_00"
    script.write_text("#!/bin/sh\n")
    result = run("write", "rootfs-image", "-f", image, "-n", "r", "-t", "d", "-s", script,
                 "-o", tmp_path / "y.mender")
    assert result.exit_code == EXIT_INVALID
    assert "not a valid artifact state script name" in result.output


@pytest.mark.parametrize("command", ["tern-artifact", "tern-updater", "tern-server", "tern-qemu",
                                     "tern-fleet"])
def test_every_console_script_works_or_says_it_is_not_built(command):
    executable = os.path.join(os.path.dirname(sys.executable), command)
    result = subprocess.run([executable, "--help"], capture_output=True, text=True)
    built = result.returncode == 0 and "usage" in result.stdout.lower()
    not_built = result.returncode == 2 and "not built yet" in result.stderr
    assert built or not_built, (result.returncode, result.stdout, result.stderr)
