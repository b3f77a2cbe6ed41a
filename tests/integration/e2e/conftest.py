"""What the emulated over-the-air tests share: a server the guests reach at 10.0.2.2 (QEMU's
user network), enrolling a booted device with it, and deploying a release to it."""
import pytest

from qemu.guest import configure_daemon, put_data_marker, start_daemon
from server.testing import LiveServer, ServerAdmin, wait_for

QEMU_MAC = "52:54:00:12:34:56"  # QEMU's default for the first NIC: the device's identity


@pytest.fixture
def server(tmp_path):
    """The server as deployed (2 gunicorn workers), with a certificate for 10.0.2.2."""
    live = LiveServer(tmp_path / "server", workers=2, names=("10.0.2.2",))
    try:
        live.start()  # inside: a start that times out leaves no server behind
        yield ServerAdmin(live)
    finally:
        live.stop()


def enroll(server: ServerAdmin, device, port: int, settings: dict | None = None) -> str:
    """Start the daemon on a booted device on release-1 (with a data marker), talking to
    10.0.2.2:`port` (the server, or a proxy in front of it) with `settings` added to its
    configuration; accept it and wait for its inventory. Returns its id on the server."""
    device.transition("shell")
    put_data_marker(device)
    configure_daemon(device, f"https://10.0.2.2:{port}", server.live.certificate.read_bytes())
    if settings:
        lines = "\\n".join(f"{key} = {value}" for key, value in settings.items())
        device.run_check(f"printf '{lines}\\n' >> /data/tern/updater.toml && sync")
    start_daemon(device)
    # 300 s: under emulation on a loaded host, the daemon's first start (Python, the device
    # key, TLS) can take minutes.
    pending = wait_for(lambda: server.device({"mac": QEMU_MAC}), timeout=300,
                       what="the device's auth request")
    server.cli("devices", "accept", pending["id"])
    wait_for(lambda: server.attributes(pending["id"]).get("artifact_name") == "release-1",
             timeout=300, what="the inventory")
    return pending["id"]


def deploy(server: ServerAdmin, base_image, name: str, device_id: str) -> str:
    server.cli("artifacts", "upload", str(base_image.release(name).with_suffix(".mender")))
    return server.cli("deployments", "create", "--name", name, "--artifact-name", name,
                      "--device", device_id)["id"]
