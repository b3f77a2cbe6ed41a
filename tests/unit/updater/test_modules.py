"""Update modules: Debian's own (single-file, directory, script) with artifacts made by
Debian's mender-artifact, and a recording module for the call protocol."""
import subprocess
import tarfile

import pytest

MODULE_LOG_SCRIPT = """#!/bin/sh
echo "$1" >> "$(dirname "$0")/calls.log"
case "$1" in
    SupportsRollback) echo Yes ;;
    NeedsArtifactReboot) echo No ;;
    ArtifactInstall) grep -q fail "$2/files/payload.bin" && exit 4 ;;
esac
exit 0
"""


def mender_module_artifact(tmp_path, module, name, files: dict[str, bytes]):
    inputs = []
    for file_name, content in files.items():
        path = tmp_path / file_name
        path.write_bytes(content)
        inputs += ["-f", str(path)]
    out = tmp_path / f"{name}.mender"
    subprocess.run(["mender-artifact", "write", "module-image", "-T", module, "-n", name,
                    "-t", "qemu-arm64", *inputs, "-o", str(out)], check=True,
                   capture_output=True)
    return out


def test_single_file_module_install_commit(device, tmp_path, capfd):
    target = tmp_path / "etc-app"
    artifact = mender_module_artifact(tmp_path, "single-file", "app-1.0", {
        "dest_dir": str(target).encode(), "filename": b"app.conf", "permissions": b"640",
        "app.conf": b"answer = 42\n"})
    assert device.run("install", str(artifact)) == 0
    assert "Use 'commit' to update" in capfd.readouterr().out
    assert (target / "app.conf").read_bytes() == b"answer = 42\n"
    assert oct((target / "app.conf").stat().st_mode & 0o777) == "0o640"
    assert device.run("resume") == 2  # waits for the user's commit
    assert device.run("commit") == 0
    assert device.provides()["artifact_name"] == "app-1.0"
    assert device.provides()["rootfs-image.single-file.version"] == "app-1.0"
    assert device.run("commit") == 2
    assert device.env()["mender_boot_part"] == "2"  # the slots are not touched


def test_single_file_module_rollback_restores_the_old_file(device, tmp_path):
    target = tmp_path / "etc-app"
    target.mkdir()
    (target / "app.conf").write_text("old\n")
    artifact = mender_module_artifact(tmp_path, "single-file", "app-2.0", {
        "dest_dir": str(target).encode(), "filename": b"app.conf", "app.conf": b"new\n"})
    assert device.run("install", str(artifact)) == 0
    assert (target / "app.conf").read_text() == "new\n"
    assert device.run("rollback") == 0
    assert (target / "app.conf").read_text() == "old\n"
    assert device.last_result()["status"] == "failure"
    assert device.provides() == {}


def test_directory_module(device, tmp_path):
    source = tmp_path / "site"
    source.mkdir()
    (source / "index.html").write_text("<h1>v2</h1>\n")
    with tarfile.open(tmp_path / "update.tar", "w") as tar:
        tar.add(source / "index.html", arcname="index.html")
    target = tmp_path / "www"
    artifact = mender_module_artifact(tmp_path, "directory", "site-2", {
        "dest_dir": str(target).encode(), "update.tar": (tmp_path / "update.tar").read_bytes()})
    assert device.run("install", str(artifact)) == 0
    assert device.run("commit") == 0
    assert (target / "index.html").read_text() == "<h1>v2</h1>\n"


def test_script_module(device, tmp_path):
    marker = tmp_path / "ran"
    artifact = mender_module_artifact(tmp_path, "script", "job-1", {
        "job.sh": f"#!/bin/sh\necho done > {marker}\n".encode()})
    assert device.run("install", str(artifact)) == 0
    assert device.run("commit") == 0
    assert marker.read_text() == "done\n"


@pytest.fixture
def recording_module(device, tmp_path):
    modules = tmp_path / "modules"
    modules.mkdir()
    module = modules / "recorder"
    module.write_text(MODULE_LOG_SCRIPT)
    module.chmod(0o755)
    device.settings["modules_dir"] = str(modules)
    return modules / "calls.log"


def test_module_call_sequence_like_mender(device, make_artifact, recording_module):
    artifact = make_artifact({"payload.bin": b"ok"}, module_type="recorder")
    assert device.run("install", str(artifact)) == 0
    assert device.run("commit") == 0
    assert recording_module.read_text().split() == [
        "Download", "SupportsRollback", "ArtifactInstall", "NeedsArtifactReboot",
        "ArtifactCommit", "Cleanup"]


def test_failing_module_install_rolls_back(device, make_artifact, recording_module):
    artifact = make_artifact({"payload.bin": b"fail"}, module_type="recorder")
    assert device.run("install", str(artifact)) == 1
    assert recording_module.read_text().split() == [
        "Download", "SupportsRollback", "ArtifactInstall", "ArtifactRollback",
        "ArtifactFailure", "Cleanup"]
    assert "recorder ArtifactInstall: exit 4" in device.last_result()["error"]


def test_payload_type_without_a_module_is_rejected(device, make_artifact):
    before = device.env_bytes()
    assert device.run("install", str(make_artifact({"x": b"1"}, module_type="nope"))) == 1
    assert "no update module" in device.last_result()["error"]
    assert device.env_bytes() == before


def test_module_that_needs_a_reboot_commits_only_after_one(device, make_artifact, tmp_path):
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "rebooter").write_text(MODULE_LOG_SCRIPT.replace("echo No", "echo Yes"))
    (modules / "rebooter").chmod(0o755)
    device.settings["modules_dir"] = str(modules)
    assert device.run("install", str(make_artifact({"payload.bin": b"ok"},
                                                   module_type="rebooter"))) == 0
    assert device.stored()["state"] == "ArtifactReboot"
    assert device.run("resume") == 0  # the updater restarted, the device did not reboot
    assert device.stored()["state"] == "ArtifactReboot"
    assert device.run("commit") == 1
    device.power_on()
    assert device.run("resume") == 0
    calls = (modules / "calls.log").read_text().split()
    assert calls[-3:] == ["NeedsArtifactReboot", "ArtifactCommit", "Cleanup"]
    assert device.provides()["artifact_name"] == "release-2"
