"""`tern-updater daemon` against a live tern-server over HTTPS, on the simulated device of
the unit tests (file bootloader, slot files): it registers, is accepted, takes a
deployment through a reboot (the reboot command kills the daemon; the test powers the
device on, runs `resume` as the boot does, starts the daemon again) to success; an
abort stops a deployment on the old slot."""

import pytest
import requests

from testkit import wait_for
from testkit.host_device import add_health_check, payload_bytes

from .conftest import daemon_device, deploy, register

pytestmark = pytest.mark.slow


def test_deployment_through_reboot_to_success(server, daemons, make_artifact, tmp_path):
    device = daemon_device(tmp_path, server, "daemon-1")
    device_id, daemon = register(server, daemons, device, "daemon-1")
    deployment = deploy(server, make_artifact(name="release-2"), "release-2", device_id)

    assert daemon.process.wait(60) == -9, daemon.log.read_text()  # "rebooted"
    assert device.stored()["state"] == "ArtifactReboot"
    assert device.stored()["update"].auto_reboot  # a resume after a cut reboots too
    assert server.device_status(deployment, device_id) == "rebooting"
    assert device.power_on() == "b"
    assert device.run("resume") == 0  # at boot: health checks, commit; the report waits
    assert device.stored()["state"] == "UpdateStatusReport"
    assert server.device_status(deployment, device_id) == "rebooting"

    daemons(device)
    wait_for(lambda: server.device_status(deployment, device_id) == "success", timeout=30,
             what="success")
    wait_for(lambda: server.attributes(device_id).get("artifact_name") == "release-2",
             timeout=30, what="the inventory after the commit")
    assert "release-2: committed" in server.device_log(deployment, device_id)
    assert device.stored()["state"] == "Idle"
    assert device.env()["upgrade_available"] == "0"
    assert device.slot("b").read_bytes().startswith(payload_bytes("release-2"))
    assert device.last_result()["status"] == "success"


def test_abort_stops_on_the_old_slot(server, daemons, make_artifact, tmp_path):
    device = daemon_device(tmp_path, server, "daemon-2")
    go = tmp_path / "go"
    wait = f"#!/bin/sh\nwhile [ ! -e {go} ]; do sleep 0.1; done\n".encode()
    artifact = make_artifact(name="release-3", scripts={"ArtifactInstall_Enter_00": wait})
    device_id, daemon = register(server, daemons, device, "daemon-2")
    deployment = deploy(server, artifact, "release-3", device_id)

    wait_for(lambda: server.device_status(deployment, device_id) == "installing", timeout=30,
             what="installing")
    server.cli("deployments", "abort", deployment)
    go.touch()
    wait_for(lambda: (device.last_result() or {}).get("status") == "failure", timeout=30,
             what="the failure")
    assert "aborted" in device.last_result()["error"]
    assert daemon.process.poll() is None, "the daemon rebooted the device"
    assert server.device_status(deployment, device_id) == "aborted"
    assert device.env()["upgrade_available"] == "0"
    assert device.env()["mender_boot_part"] == "2"  # slot a
    assert device.provides().get("artifact_name", "factory") == "factory"
    wait_for(lambda: device.stored()["state"] == "Idle", timeout=10, what="Idle")


@pytest.mark.parametrize("log_limit", [None, 4 * 1024 * 1024], ids=["capped", "refused"])
def test_a_chatty_health_check_never_costs_the_result(server, daemons, make_artifact, tmp_path,
                                                      log_limit):
    """Health checks that print MiB: by default the log is capped to fit and the server has
    it, head and tail; with a limit above the server's 1 MiB, the server refuses the log
    (413) and still gets the result."""
    mac, name = f"daemon-chatty-{log_limit}", f"release-chatty-{log_limit}"
    device = daemon_device(tmp_path, server, mac)
    if log_limit:
        device.settings["deployment_log_limit"] = log_limit
    for check in ("10-chatty", "20-chatty"):
        add_health_check(device, check, f"echo {check} first; yes 'all is well' | "
                                             "head -c 3000000; echo; echo last")
    device_id, daemon = register(server, daemons, device, mac)
    deployment = deploy(server, make_artifact(name=name), name, device_id)
    assert daemon.process.wait(60) == -9, daemon.log.read_text()  # "rebooted"
    assert device.power_on() == "b"
    assert device.run("resume") == 0
    daemon = daemons(device)
    wait_for(lambda: server.device_status(deployment, device_id) == "success", timeout=60,
             what="success")
    if log_limit:
        with pytest.raises(requests.HTTPError, match="404"):
            server.device_log(deployment, device_id)  # no log
        assert "log refused for good, dropped: " in daemon.log.read_text()
        assert "413" in daemon.log.read_text()
    else:
        log = server.device_log(deployment, device_id)
        assert log[0].startswith(f"deployment {deployment}")
        assert f"{name}: committed" in log
        chatty = [line for line in log if line.startswith("health: ")]
        assert chatty[0].startswith("health: 10-chatty: pass: 10-chatty first")
        assert chatty[0].endswith("last") and "lines) cut ...]" in chatty[0]


def test_another_signed_artifact_at_the_link_is_refused(server, daemons, make_artifact,
                                                        tmp_path):
    """The store's file swapped for another release signed with the same key (a tampered
    store, or a plain-HTTP link intercepted): its signature verifies, but it is not the
    deployed artifact, and the slot is never made bootable."""
    device = daemon_device(tmp_path, server, "daemon-4")
    device_id, _ = register(server, daemons, device, "daemon-4")
    deployed = make_artifact(name="release-5", compression="none")
    other = make_artifact(name="release-6", compression="none")
    assert deployed.stat().st_size == other.stat().st_size
    server.cli("artifacts", "upload", str(deployed))
    stored = [path for path in (server.live.data_dir / "artifacts").rglob("*")
              if path.is_file() and path.read_bytes() == deployed.read_bytes()]
    assert len(stored) == 1
    stored[0].write_bytes(other.read_bytes())
    deployment = server.cli("deployments", "create", "--name", "release-5", "--artifact-name",
                            "release-5", "--device", device_id)["id"]

    wait_for(lambda: server.device_status(deployment, device_id) == "failure", timeout=60,
             what="the failure")
    assert any("holds artifact 'release-6', not the deployed 'release-5'" in line
               for line in server.device_log(deployment, device_id))
    assert device.env()["upgrade_available"] == "0"
    assert device.env()["mender_boot_part"] == "2"  # slot a
    assert device.provides().get("artifact_name", "factory") == "factory"
