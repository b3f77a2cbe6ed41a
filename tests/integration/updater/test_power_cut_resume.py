"""A power cut in the middle of a daemon deployment's rootfs write: the updater dies (a fail
point's `os._exit`, as power loss ends it), the device powers on, `resume` at boot leaves
the download to the daemon, and the daemon asks the server for a fresh link and goes on
from the last checkpoint with HTTP Range. The server's answers after the cut (counted by
the proxy in front of it) are a fraction of the artifact, and the slot gets the exact
image; the deployment ends in success."""
import json
import os
from pathlib import Path

import pytest

from testkit import wait_for
from testkit.faultproxy import FaultProxy
from testkit.host_device import new_device as new_host_device
from updater.failpoints import CRASH_EXIT

from .conftest import deploy, register

pytestmark = pytest.mark.slow
MiB = 1 << 20
IMAGE = os.urandom(12 * MiB) + b"tail"  # incompressible: the download is as long as the image
CUT = 11 * MiB  # in the third 4 MiB write: checkpoints at about 4 and 8 MiB are recorded


@pytest.fixture
def proxy(server):
    proxy = FaultProxy(server.live.port).start()
    yield proxy
    proxy.stop()


def test_a_power_cut_mid_write_resumes_from_the_checkpoint(server, proxy, daemons,
                                                            make_artifact, tmp_path):
    mac = "cut-resume"
    device = new_host_device(
        tmp_path / mac, server_url=proxy.url, server_certificate=str(server.live.certificate),
        identity_script=f"echo mac={mac}", poll_interval=0.5, inventory_interval=3600.0,
        retry_interval=1.0, reboot_command="kill -KILL $PPID",
        download_progress_interval=MiB, failpoints=f"payload:{CUT}")
    device_id, daemon = register(server, daemons, device, mac)
    artifact = make_artifact({"rootfs.ext4": IMAGE}, name="release-cut")
    deployment = deploy(server, artifact, "release-cut", device_id)

    assert daemon.process.wait(60) == CRASH_EXIT, daemon.log.read_text()
    stored = device.stored()
    assert stored["state"] == "Download"
    checkpoint = stored["update"].progress.checkpoints[-1]
    assert checkpoint.image_offset >= 7 * MiB
    # The stored link no longer works (as an expired one would not): the daemon must ask
    # the server for a fresh one.
    store = Path(device.settings["data_dir"]) / "state.json"
    document = json.loads(store.read_text())
    document["update"]["source"] += "0"  # a broken signature: 403
    store.write_text(json.dumps(document))

    del device.settings["failpoints"]
    assert device.power_on() == "a"
    assert device.run("resume") == 2  # nothing to do at boot: the daemon resumes it
    answered_before = proxy.answer_bytes
    daemon = daemons(device)
    assert daemon.process.wait(120) == -9, daemon.log.read_text()  # the reboot into b
    fetched = proxy.answer_bytes - answered_before
    assert fetched < artifact.stat().st_size - checkpoint.artifact_offset + MiB
    assert device.slot("b").read_bytes() == IMAGE

    assert device.power_on() == "b"
    assert device.run("resume") == 0
    daemons(device)
    wait_for(lambda: server.device_status(deployment, device_id) == "success", timeout=60,
             what="success")
    log = "\n".join(server.device_log(deployment, device_id))
    assert f"resuming the download at byte {checkpoint.artifact_offset}: slot b keeps " \
           f"{checkpoint.image_offset} of {len(IMAGE)} bytes" in log
    assert "cannot resume" not in log
