"""Over the air on an emulated device, with the network in the way: the device reaches
tern-server at 10.0.2.2 through the fault-injecting proxy on the host's loopback. An
abort during the download stops the device on A; then a connection reset in the middle
of the download is resumed with HTTP Range, to success on B."""
import json

import pytest

from qemu.guest import data_marker, put_data_marker, release
from testkit import wait_for
from testkit.enroll import enroll

from .conftest import deploy

pytestmark = pytest.mark.qemu
# Short enough for a test, long enough for an emulated device's TLS handshakes.
DEVICE_SETTINGS = {"download_timeout": 10.0, "abort_check_interval": 2.0}


@pytest.fixture
def enrolled(server, proxy, make_device):
    """A device on release-1, its daemon talking to the server through the proxy, accepted,
    and a marker on /data."""
    device = make_device()
    device_id = enroll(server, device, proxy.port, DEVICE_SETTINGS)
    put_data_marker(device)
    return device, device_id


def test_abort_during_the_download_then_a_reset_download_resumes(
        server, proxy, enrolled, base_image):
    """One device for both cases (a boot is most of an emulated test's time)."""
    device, device_id = enrolled
    proxy.stall_after(4 << 20)  # the download hangs there until the device gives up on it
    deployment = deploy(server, base_image, "release-2", device_id)
    wait_for(lambda: proxy.faults_done, timeout=120, what="4 MiB of the download")
    assert server.device_status(deployment, device_id) == "downloading"
    server.cli("deployments", "abort", deployment)

    result = wait_for(lambda: last_result(device), timeout=120, what="the device's result")
    assert result["status"] == "failure"
    assert "aborted on the server" in result["error"]
    assert server.device_status(deployment, device_id) == "aborted"
    assert device.slot == "A"  # no reboot: the prompt is still device-A#
    assert release(device) == "release-1"
    env = device.run_check("fw_printenv mender_boot_part upgrade_available")
    assert "mender_boot_part=2" in env and "upgrade_available=0" in env

    proxy.reset_after(8 << 20)
    deployment = server.cli("deployments", "create", "--name", "again", "--artifact-name",
                            "release-2", "--device", device_id)["id"]
    assert device.expect_reboot(timeout=600) == "B"
    wait_for(lambda: server.device_status(deployment, device_id) == "success", timeout=180,
             what="success on the server")
    assert proxy.faults_done == 2
    log = "\n".join(server.device_log(deployment, device_id))
    assert "download interrupted at byte" in log
    assert "download: resumed at byte" in log  # after a 206 from that byte
    assert "release-2: committed" in log
    assert release(device) == "release-2"
    assert data_marker(device) == "survives"


def last_result(device) -> dict | None:
    output, code = device.run("cat /data/tern/last-result.json")
    return json.loads(output) if code == 0 else None
