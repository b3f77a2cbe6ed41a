"""`tern-updater daemon` (file bootloader, slot files) against a live tern-server over
HTTPS through the fault-injecting proxy: a reset or a stall in the middle of the download
is resumed with HTTP Range and the slot gets the exact image; a server gone for longer
than the download deadline gets the failure once it is back, and the device stays on its
old slot; statuses queued while the server is away arrive in order, across a reboot."""
import json
import os
import time
from pathlib import Path

import pytest

from testkit import wait_for
from testkit.admin import ServerAdmin
from testkit.faultproxy import FaultProxy
from testkit.host_device import new_device as new_host_device

from .conftest import deploy, register

pytestmark = pytest.mark.slow
IMAGE = os.urandom(900_000)  # incompressible: the download is as long as the image
FAULT_AT = 300_000  # bytes into an answer: only the download's is that long


@pytest.fixture
def proxy(server):
    proxy = FaultProxy(server.live.port).start()
    yield proxy
    proxy.stop()


def new_device(tmp_path: Path, proxy: FaultProxy, server: ServerAdmin, mac: str,
               **settings):
    return new_host_device(
        tmp_path / mac, server_url=proxy.url, server_certificate=str(server.live.certificate),
        identity_script=f"echo mac={mac}", poll_interval=0.5, inventory_interval=3600.0,
        retry_interval=1.0, reboot_command="kill -KILL $PPID",
        **{"download_timeout": 2.0, "download_retries": 5, **settings})


def release(make_artifact, name: str, **options) -> Path:
    return make_artifact({"rootfs.ext4": IMAGE}, name=name, compression="none", **options)


def reboot(device, daemon, daemons) -> None:
    """The reboot command killed the daemon: power on, `resume` as the boot does, daemon."""
    assert daemon.process.wait(60) == -9, daemon.log.read_text()
    assert device.power_on() == "b"
    assert device.run("resume") == 0
    daemons(device)


def messages(server: ServerAdmin, deployment: str, device_id: str) -> str:
    return "\n".join(server.device_log(deployment, device_id))


@pytest.mark.parametrize("fault", ["reset", "stall"])
def test_a_broken_download_resumes_with_range_to_success(fault, server, proxy, daemons,
                                                         make_artifact, tmp_path):
    device = new_device(tmp_path, proxy, server, f"net-{fault}")
    device_id, daemon = register(server, daemons, device, f"net-{fault}")
    artifact = release(make_artifact, f"release-{fault}")
    getattr(proxy, f"{fault}_after")(FAULT_AT)
    deployment = deploy(server, artifact, f"release-{fault}", device_id)

    reboot(device, daemon, daemons)
    wait_for(lambda: server.device_status(deployment, device_id) == "success", timeout=30,
             what="success")
    assert proxy.faults_done == 1
    log = messages(server, deployment, device_id)
    assert "download interrupted at byte" in log
    if fault == "stall":
        assert "timed out" in log
    # Logged once the answer was a 206 whose Content-Range starts at that byte.
    assert "download: resumed at byte" in log
    assert device.slot("b").read_bytes()[:len(IMAGE)] == IMAGE
    assert device.last_result()["status"] == "success"


def test_a_server_gone_past_the_deadline_hears_the_failure_when_back(
        server, proxy, daemons, make_artifact, tmp_path):
    deadline = 6.0
    device = new_device(tmp_path, proxy, server, "net-gone", download_deadline=deadline,
                        download_retries=1000)
    device_id, _ = register(server, daemons, device, "net-gone")
    artifact = release(make_artifact, "release-gone")
    proxy.stall_after(FAULT_AT)
    deployment = deploy(server, artifact, "release-gone", device_id)
    wait_for(lambda: proxy.faults_done, timeout=30, what="the download")
    proxy.refuse()  # the server stops in the middle of the download
    gone = time.monotonic()

    wait_for(lambda: (device.last_result() or {}).get("status") == "failure",
             timeout=deadline + 5, what="the failure at the deadline")
    failed = time.monotonic() - gone
    assert failed < deadline + 3, failed
    assert f"download deadline of {deadline:g} s passed" in device.last_result()["error"]
    queued = json.loads((device.config.data / "status-queue.json").read_text())
    assert [entry.get("status", "log") for entry in queued] == ["log", "failure"]
    assert server.device_status(deployment, device_id) == "downloading"

    time.sleep(max(0.0, deadline + 2 - (time.monotonic() - gone)))  # gone past the deadline
    proxy.passing()
    back = time.monotonic()
    wait_for(lambda: server.device_status(deployment, device_id) == "failure", timeout=15,
             interval=0.2, what="the failure on the server")
    print(f"failure at the deadline {failed:.1f} s after the server went away; "
          f"on the server {time.monotonic() - back:.1f} s after it was back")
    assert "download deadline" in messages(server, deployment, device_id)
    assert device.env()["mender_boot_part"] == "2" and device.env()["upgrade_available"] == "0"
    assert device.provides().get("artifact_name", "factory") == "factory"


def test_statuses_queued_while_the_server_is_away_arrive_in_order(
        server, proxy, daemons, make_artifact, tmp_path):
    device = new_device(tmp_path, proxy, server, "net-queue")
    go = tmp_path / "go"
    wait = f"#!/bin/sh\nwhile [ ! -e {go} ]; do sleep 0.1; done\n".encode()
    artifact = release(make_artifact, "release-queue",
                       scripts={"ArtifactInstall_Enter_00": wait})
    device_id, daemon = register(server, daemons, device, "net-queue")
    deployment = deploy(server, artifact, "release-queue", device_id)
    wait_for(lambda: server.device_status(deployment, device_id) == "installing", timeout=30,
             what="installing")
    proxy.refuse()
    go.touch()  # "rebooting" cannot be sent; the reboot comes all the same

    reboot(device, daemon, daemons)
    queue = device.config.data / "status-queue.json"
    wait_for(lambda: [e.get("status", "log") for e in json.loads(queue.read_text())]
             == ["rebooting", "log", "success"], timeout=30, what="the queued statuses")
    assert server.device_status(deployment, device_id) == "installing"

    proxy.passing()
    wait_for(lambda: server.device_status(deployment, device_id) == "success", timeout=30,
             what="success")
    assert "release-queue: committed" in messages(server, deployment, device_id)
    assert json.loads(queue.read_text()) == []
