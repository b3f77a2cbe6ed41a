"""A mixed fleet through one phased deployment: emulated devices (`tern-qemu fleet`, real
U-Boot, the updater daemon on the device) are the canary, simulated ones (`tern-fleet`) the
phase behind. The deployment of release-2 goes to every accepted device; its first phase is
chosen by an inventory filter (device_type = the QEMU board's, "the lab devices first"), the
second starts once every canary device succeeded. The server hands each device type its own
artifact of that name: the image's release-2 to the QEMU devices, a small one to the
simulated devices. This is the one test that runs several QEMU guests at once."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet.artifacts import write_rootfs_artifact
from qemu.cli import device_dir
from qemu.console import Console
from qemu.launch import connect_unix
from testkit import wait_for

pytestmark = [pytest.mark.qemu, pytest.mark.slow]
BIN = Path(sys.executable).parent
QEMU_DEVICES, SIMULATED_DEVICES = 4, 200
DEVICE_TYPE = "qemu-arm64"  # images/build.py's, which the canary's filter names


@pytest.fixture
def qemu_fleet(server, base_image):
    """tern-qemu fleet: the devices' names, stopped at the end whatever happens."""
    started = time.monotonic()
    result = subprocess.run(
        [BIN / "tern-qemu", "fleet", str(QEMU_DEVICES), "--image", str(base_image.disk),
         "--prefix", "mixed", "--server-url", f"https://10.0.2.2:{server.live.port}",
         "--server-certificate", str(server.live.certificate), "--memory", "320"],
        capture_output=True, text=True, timeout=900)
    names = [f"mixed-{number}" for number in range(1, QEMU_DEVICES + 1)]
    try:
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == names
        print(f"{QEMU_DEVICES} QEMU devices booted and configured in "
              f"{time.monotonic() - started:.0f} s")
        yield names
    finally:
        subprocess.run([BIN / "tern-qemu", "stop", *names], check=True, timeout=60)


@pytest.fixture
def simulated_fleet(server, tmp_path):
    """The options of `tern-fleet run` for the simulated devices; their registration
    (preauthorized, accepted) runs while the QEMU devices boot (`registered` waits for it)."""
    options = [
        BIN / "tern-fleet", "run", "--server", server.live.url,
        "--ca-cert", str(server.live.certificate), "--token", server.token,
        "--devices", str(SIMULATED_DEVICES), "--fleet-id", "9",
        "--workdir", str(tmp_path / "fleet"), "--poll-interval", "5", "--retry-interval", "2",
        "--timeout", "1200", "--json"]
    registering = subprocess.Popen([*options, "--scenario", "register"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def registered() -> None:
        out, err = registering.communicate(timeout=600)
        assert registering.returncode == 0, err + out[-3000:]

    try:
        yield options, registered
    finally:
        registering.kill()
        registering.wait()


def release_in(name: str) -> str:
    """/etc/tern-release of a running detached device, over its console."""
    console = Console(connect_unix(device_dir(name) / "console", time.monotonic() + 10), None)
    try:
        console.sendline()
        return console.run("cat /etc/tern-release", time.monotonic() + 60)[0].strip()
    finally:
        console.close()


def events_of(server, deployment: str) -> list[dict]:
    """The deployment's events, oldest first."""
    found, after = [], 0
    while page := server.get(f"/events?after={after}&limit=1000"):
        found += [e for e in page if e["data"].get("deployment_id") == deployment]
        after = page[-1]["id"]
    return found


def test_qemu_devices_are_the_canary_of_simulated_ones_in_one_deployment(
        server, simulated_fleet, qemu_fleet, base_image, keys, tmp_path):
    macs = [f"52:54:00:fe:00:{number:02x}" for number in range(1, QEMU_DEVICES + 1)]
    qemu_ids = [server.accept({"mac": mac}) for mac in macs]
    server.cli("artifacts", "upload", str(base_image.directory / "release-2.mender"))
    small = write_rootfs_artifact(tmp_path / "release-2-sim.mender", "release-2",
                                  "tern-simulated", keys["ed25519"].private_key)
    server.cli("artifacts", "upload", str(small))
    fleet_options, registered = simulated_fleet
    registered()
    wait_for(lambda: all(server.attributes(device).get("device_type") == DEVICE_TYPE
                         for device in qemu_ids),
             timeout=300, interval=2, what="the QEMU devices' inventory")

    deployment = server.cli(
        "deployments", "create", "--name", "release-2", "--artifact-name", "release-2",
        "--all-devices", "--phase", f"where=device_type={DEVICE_TYPE}",
        "--phase", "rest,after=100%")
    assert [(p["size"], p["started_at"] is not None) for p in deployment["phases"]] == [
        (QEMU_DEVICES, True), (SIMULATED_DEVICES, False)]
    started = time.monotonic()
    fleet = subprocess.run(
        [*fleet_options, "--scenario", "update", "--deployment", deployment["id"],
         "--artifact", str(small), "--verify-key", str(keys["ed25519"].public_path)],
        capture_output=True, text=True, timeout=1500)
    assert fleet.returncode == 0, fleet.stderr + fleet.stdout[-3000:]
    report = json.loads(fleet.stdout)
    print(f"deployment → the simulated devices' last result: "
          f"{time.monotonic() - started:.0f} s")
    assert report["results"] == {"success": SIMULATED_DEVICES}

    final = {d["device_id"]: d["status"]
             for d in server.get(f"/deployments/{deployment['id']}/devices")}
    assert len(final) == SIMULATED_DEVICES + QEMU_DEVICES
    assert set(final.values()) == {"success"}, final
    # Nothing reached a simulated device before the canary succeeded: every QEMU device
    # finished, and no simulated device had reported anything, before phase 2 started.
    events = events_of(server, deployment["id"])
    [second] = [index for index, e in enumerate(events)
                if e["type"] == "deployment.phase_started" and e["data"]["phase"] == 2]
    assert events[second]["data"]["why"] == "phase 1 reached 100% success (4 of 4 devices)"
    of_devices = [(index, e["data"]["device_id"]) for index, e in enumerate(events)
                  if e["type"] in ("deployment.device_status", "deployment.device_finished")]
    canary_finished = {e["data"]["device_id"] for e in events[:second]
                       if e["type"] == "deployment.device_finished"
                       and e["data"]["status"] == "success"}
    assert canary_finished == set(qemu_ids)
    assert all(index > second for index, device in of_devices if device not in qemu_ids)
    assert all(index < second for index, device in of_devices if device in qemu_ids)
    assert len({device for _, device in of_devices}) == SIMULATED_DEVICES + QEMU_DEVICES
    for name, device in zip(qemu_fleet, qemu_ids, strict=True):
        assert server.attributes(device)["artifact_name"] == "release-2"
        log = (device_dir(name) / "console.log").read_text(errors="replace")
        assert "device-B# " in log  # rebooted into slot B
        assert release_in(name) == "release-2"
