"""A mixed fleet through one deployment: emulated devices (`tern-qemu fleet`, real U-Boot,
the updater daemon on the device) beside simulated ones (`tern-fleet`), all deployed
release-2 in ONE deployment to every accepted device. The server hands each device type
its own artifact of that name: the image's release-2 to the QEMU devices, a small one to
the simulated devices. This is the one test that runs several QEMU guests at once."""
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


def release_in(name: str) -> str:
    """/etc/tern-release of a running detached device, over its console."""
    console = Console(connect_unix(device_dir(name) / "console", time.monotonic() + 10), None)
    try:
        console.sendline()
        return console.run("cat /etc/tern-release", time.monotonic() + 60)[0].strip()
    finally:
        console.close()


def test_qemu_and_simulated_devices_through_one_deployment(server, qemu_fleet, base_image,
                                                           keys, tmp_path):
    macs = [f"52:54:00:fe:00:{number:02x}" for number in range(1, QEMU_DEVICES + 1)]
    qemu_ids = [server.accept({"mac": mac}) for mac in macs]
    server.cli("artifacts", "upload", str(base_image.directory / "release-2.mender"))
    small = write_rootfs_artifact(tmp_path / "release-2-sim.mender", "release-2",
                                  "tern-simulated", keys["ed25519"].private_key)

    started = time.monotonic()
    fleet = subprocess.run(
        [BIN / "tern-fleet", "run", "--server", server.live.url,
         "--ca-cert", str(server.live.certificate), "--token", server.token,
         "--devices", str(SIMULATED_DEVICES), "--artifact", str(small), "--deploy-to", "all",
         "--verify-key", str(keys["ed25519"].public_path), "--poll-interval", "2",
         "--retry-interval", "2", "--fleet-id", "9", "--timeout", "600", "--json"],
        capture_output=True, text=True, timeout=900)
    assert fleet.returncode == 0, fleet.stderr + fleet.stdout[-3000:]
    report = json.loads(fleet.stdout)
    print(f"{SIMULATED_DEVICES} simulated devices: {report['wall_seconds']} s")
    deployment = report["deployment_id"]
    assert report["results"] == {"success": SIMULATED_DEVICES}

    def statuses() -> dict[str, str]:
        return {d["device_id"]: d["status"]
                for d in server.get(f"/deployments/{deployment}/devices")}

    wait_for(lambda: all(statuses()[device] in ("success", "failure") for device in qemu_ids),
             timeout=1200, interval=5, what="the QEMU devices' results")
    print(f"deployment → every result: {time.monotonic() - started:.0f} s")
    final = statuses()
    assert len(final) == SIMULATED_DEVICES + QEMU_DEVICES
    assert set(final.values()) == {"success"}, final
    for name, device in zip(qemu_fleet, qemu_ids, strict=True):
        assert server.attributes(device)["artifact_name"] == "release-2"
        log = (device_dir(name) / "console.log").read_text(errors="replace")
        assert "device-B# " in log  # rebooted into slot B
        assert release_in(name) == "release-2"
