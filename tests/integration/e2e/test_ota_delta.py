"""Delta updates end to end on an emulated device (issue 19): a deployment of an artifact
with a block index, its power cut in the middle of the adaptive install and resumed from
the blocks the target slot holds, then one through a proxy that ignores Range, which the
device installs from the full artifact. One device for both: a boot is most of the time.

The device reaches `tern-server` at 10.0.2.2 through the fault proxy (a TCP relay), which
forwards to the server itself first, then to nginx in front of it, configured to drop
Range (testkit.nginx.ignoring_range)."""
import hashlib
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qemu.guest import data_marker, put_data_marker, release
from testkit import wait_for
from testkit.admin import ServerAdmin
from testkit.enroll import enroll
from testkit.live_server import LiveServer
from testkit.nginx import Nginx, ignoring_range

pytestmark = pytest.mark.qemu
MiB = 1 << 20
BLOCK = 4096
NEW_DATA = 6 * MiB  # random, so the delta must fetch it: about 15 % of the artifact
SETTINGS = {
    "console_markers": '"/dev/console"',  # tern-written: where the cut lands
    "download_progress_interval": 2 * MiB,  # the target slot synced every 2 MiB written
}
PLAN = re.compile(r"adaptive install: of (\d+) blocks, (\d+) in place, (\d+) from the active "
                  r"slot, (\d+) zero, (\d+) fetched in (\d+) ranges")


@pytest.fixture
def server(tmp_path):
    """As the e2e conftest's, its certificate also naming the host nginx checks upstream."""
    with LiveServer(tmp_path / "server", workers=2,
                    names=("10.0.2.2", "ota.example.com")) as live:
        yield ServerAdmin(live)


@pytest.fixture
def range_blind(server):
    """nginx in front of the server, answering every Range request with the whole body."""
    nginx = Nginx([server.live.port], server.live.certificate, config=ignoring_range)
    nginx.start()
    yield nginx
    nginx.stop()


def indexed_artifact(image: Path, name: str, key: Path, out: Path) -> Path:
    """The artifact as images/build.py writes it, with a block index."""
    subprocess.run([sys.executable, "-m", "artifact.cli", "write", "rootfs-image",
                    "-f", image, "-n", name, "-t", "qemu-arm64", "-k", key, "-o", out,
                    "--block-index"], check=True)
    return out


def release_2_with_new_data(base_image, directory: Path) -> tuple[Path, range]:
    """release-2's image with NEW_DATA random bytes in a new file (debugfs), so that the
    delta from release-1 fetches megabytes; and the slot bytes of that file's longest run."""
    image = directory / "release-2-data.ext4"
    shutil.copyfile(base_image.release("release-2"), image)
    data = directory / "new-data"
    data.write_bytes(random.Random(19).randbytes(NEW_DATA))
    subprocess.run(["debugfs", "-w", "-R", f"write {data} /usr/share/tern-new-data", image],
                   check=True, capture_output=True)
    return image, longest_changed_run(base_image.release("release-1"), image)


def longest_changed_run(old: Path, new: Path) -> range:
    runs, start = [], None
    with open(old, "rb") as a, open(new, "rb") as b:
        for block in range(new.stat().st_size // BLOCK + 1):
            changed = a.read(BLOCK) != b.read(BLOCK)
            if changed and start is None:
                start = block
            elif not changed and start is not None:
                runs.append(range(start * BLOCK, block * BLOCK))
                start = None
    return max(runs, key=len)


def cut_when_written(device, offset: int, timeout: float = 600) -> int:
    """Cut the power once the console says the slot is written up to `offset` or past it;
    returns the offset it said."""
    deadline = time.monotonic() + timeout
    while True:
        device.console.expect(r"tern-written: (\d+)\r?\n", deadline)
        written = int(device.console.match[1])
        if written >= offset:
            device.power_cut()
            return written


def test_a_delta_cut_by_power_loss_resumes_then_a_proxy_ignoring_range_gets_the_full_install(
        server, proxy, range_blind, make_device, base_image, tmp_path):
    key = base_image.directory / "keys" / "artifact.key"
    image, new_file = release_2_with_new_data(base_image, tmp_path)
    delta = indexed_artifact(image, "release-2", key, tmp_path / "release-2.mender")
    back = indexed_artifact(base_image.release("release-1"), "release-1", key,
                            tmp_path / "release-1.mender")
    device = make_device()
    device_id = enroll(server, device, proxy.port, SETTINGS)
    put_data_marker(device)
    assert server.attributes(device_id)["delta_update"] == "block-index-2"

    # 1. release-2 by delta, the power cut once two thirds of the new file are written
    started = time.monotonic()
    server.cli("artifacts", "upload", str(delta))
    deployment = server.cli("deployments", "create", "--name", "delta", "--artifact-name",
                            "release-2", "--device", device_id)["id"]
    cut_at = cut_when_written(device, new_file.start + 2 * len(new_file) // 3)
    device.transition("shell")  # power on: the daemon goes on with the deployment
    assert device.expect_reboot(timeout=600) == "B"
    wait_for(lambda: server.device_status(deployment, device_id) == "success", timeout=180,
             what="success on the server")
    sent = server.live.sent_bytes()  # its log counts each answer's Content-Length
    passed = proxy.answer_bytes
    print(f"release-2 (delta, cut at slot byte {cut_at}): {time.monotonic() - started:.0f} s "
          f"to success, {sent} of {delta.stat().st_size} bytes sent by the server's log, "
          f"{passed} passed to the device (API calls included)")
    log = server.device_log(deployment, device_id)
    assert "release-2: committed" in log
    assert not [m for m in log if "downloading the full artifact" in m]
    # One plan: the cut try's log lines were only in memory (the update is stored before
    # the write). A fresh plan fetches every block of the new file (they are in no slot);
    # the resumed one finds the synced third of them (at least) in place in slot B.
    [plan] = [PLAN.match(m) for m in log if PLAN.match(m)]
    assert int(plan[5]) < len(new_file) // BLOCK * 3 // 4
    # both tries together, from the server's request log: well under the full artifact
    assert sent < 0.4 * delta.stat().st_size
    row = device_row(server, deployment, device_id)
    assert row["download"]["mode"] == "adaptive" and row["download"]["fetched"] <= sent
    assert release(device) == "release-2"
    assert device.run_check("sha256sum /usr/share/tern-new-data").split()[0] == \
        hashlib.sha256((tmp_path / "new-data").read_bytes()).hexdigest()

    # 2. back to release-1 through the proxy that ignores Range: the full artifact
    proxy.forward_to(range_blind.port)
    started = time.monotonic()
    server.cli("artifacts", "upload", str(back))
    deployment = server.cli("deployments", "create", "--name", "fallback", "--artifact-name",
                            "release-1", "--device", device_id)["id"]
    assert device.expect_reboot(timeout=600) == "A"
    wait_for(lambda: server.device_status(deployment, device_id) == "success", timeout=180,
             what="success on the server")
    full = server.live.sent_bytes() - sent
    passed = proxy.answer_bytes - passed
    print(f"release-1 (through the proxy ignoring Range): {time.monotonic() - started:.0f} s "
          f"to success, {full} bytes sent by the server's log (the head probe's 200 counts "
          f"the whole artifact there), {passed} passed to the device")
    text = "\n".join(server.device_log(deployment, device_id))
    assert "answered 200 OK to a Range request" in text
    assert "; downloading the full artifact" in text
    assert "release-1: committed" in text
    size = back.stat().st_size  # the head probe's 200 was dropped unread: nothing counted
    assert device_row(server, deployment, device_id)["download"] == {
        "mode": "full", "fetched": size, "full": size}
    assert passed >= size  # and what was in flight of the probe's 200 when it was dropped
    assert release(device) == "release-1"
    assert data_marker(device) == "survives"
    assert "upgrade_available=0" in device.run_check("fw_printenv upgrade_available")


def device_row(server: ServerAdmin, deployment: str, device_id: str) -> dict:
    [row] = [r for r in server.get(f"/deployments/{deployment}/devices")
             if r["device_id"] == device_id]
    return row
