"""A daemon deployment of an artifact with a block index, from the live server over HTTPS:
the device fetches only the chunks its slots lack (counted in the server's request log),
announces the capability in its inventory, reports what it fetched (the API's
device row and the dashboard show it), and after a cut mid-delta resumes from the blocks
the target slot already holds."""
import random

import pytest

from artifact import ArtifactReader
from artifact.block_index import index_anchor
from testkit import wait_for
from testkit.artifacts import write_indexed_artifact_file
from testkit.host_device import new_device as new_host_device
from updater.failpoints import CRASH_EXIT

from .conftest import deploy, register

pytestmark = pytest.mark.slow
MiB = 1 << 20


def images() -> tuple[bytes, bytes]:
    rng = random.Random(16)
    old = bytearray(rng.randbytes(12 * MiB))  # incompressible: the full artifact is 12 MiB
    new = bytearray(old)
    for start in (2 * MiB, 9 * MiB + 5000):
        new[start:start + 30_000] = rng.randbytes(30_000)
    return bytes(old), bytes(new)


OLD, NEW = images()


def index_size(artifact) -> int:
    with open(artifact, "rb") as stream, ArtifactReader(stream) as reader:
        return index_anchor(reader.header).area


def device_row(server, deployment: str, device_id: str) -> dict:
    rows = server.get(f"/deployments/{deployment}/devices")
    return next(row for row in rows if row["device_id"] == device_id)


def new_device(tmp_path, server, mac: str, **settings):
    device = new_host_device(
        tmp_path / mac, server_url=server.live.url, server_certificate=str(server.live.certificate),
        identity_script=f"echo mac={mac}", poll_interval=0.5, inventory_interval=3600.0,
        retry_interval=1.0, reboot_command="kill -KILL $PPID", **settings)
    device.slot("a").write_bytes(OLD)
    return device


def test_a_delta_deployment_fetches_only_the_planned_share(server, daemons, tmp_path):
    mac = "adaptive"
    device = new_device(tmp_path, server, mac)
    device_id, daemon = register(server, daemons, device, mac)
    assert server.attributes(device_id)["delta_update"] == "block-index-2"
    artifact = write_indexed_artifact_file(tmp_path / "r2.mender", NEW, name="release-delta")
    before = server.live.sent_bytes()
    deployment = deploy(server, artifact, "release-delta", device_id)
    assert daemon.process.wait(60) == -9, daemon.log.read_text()  # the reboot into b
    sent = server.live.sent_bytes() - before
    assert device.slot("b").read_bytes() == NEW
    # the head probe (64 KiB), the index's top and the changed chunks' leaves, 3 chunks of 64 KiB
    assert sent < 0.03 * artifact.stat().st_size

    assert device.power_on() == "b"
    assert device.run("resume") == 0
    daemons(device)
    wait_for(lambda: server.device_status(deployment, device_id) == "success", timeout=60,
             what="success")
    download = device_row(server, deployment, device_id)["download"]
    assert download["mode"] == "adaptive"
    assert download == {"mode": "adaptive", "fetched": sent,
                        "full": artifact.stat().st_size - index_size(artifact)}


def test_a_cut_delta_deployment_resumes_from_the_target_slot(server, daemons, tmp_path):
    mac = "adaptive-cut"
    device = new_device(tmp_path, server, mac, failpoints=f"payload:{10 * MiB}")
    device_id, daemon = register(server, daemons, device, mac)
    artifact = write_indexed_artifact_file(tmp_path / "r3.mender", NEW, name="release-cut")
    deployment = deploy(server, artifact, "release-cut", device_id)
    assert daemon.process.wait(60) == CRASH_EXIT, daemon.log.read_text()
    assert device.stored()["state"].value == "Download"

    del device.settings["failpoints"]
    assert device.power_on() == "a"
    assert device.run("resume") == 2  # the daemon resumes it
    daemon = daemons(device)
    assert daemon.process.wait(60) == -9, daemon.log.read_text()
    assert device.slot("b").read_bytes() == NEW
    assert device.power_on() == "b"
    assert device.run("resume") == 0
    daemons(device)
    wait_for(lambda: server.device_status(deployment, device_id) == "success", timeout=60,
             what="success")
    log = server.device_log(deployment, device_id)
    plans = [m for m in log if m.startswith("adaptive install: of ")]
    # the blocks written before the cut are kept in place: only the change at 9 MiB is left
    assert int(plans[-1].split(", ")[1].split()[0]) >= 10 * MiB // 4096
    assert device_row(server, deployment, device_id)["download"]["mode"] == "adaptive"
