"""What the emulated over-the-air tests share: a server the guests reach at 10.0.2.2 (QEMU's
user network), a fault proxy in front of it (of the module's `server`), and deploying a
release to a device enrolled with it (qemu.guest.enroll)."""
import pytest

from testkit.admin import ServerAdmin
from testkit.faultproxy import FaultProxy
from testkit.live_server import LiveServer


@pytest.fixture
def server(tmp_path):
    """The server as deployed (2 gunicorn workers), with a certificate for 10.0.2.2."""
    with LiveServer(tmp_path / "server", workers=2, names=("10.0.2.2",)) as live:
        yield ServerAdmin(live)


@pytest.fixture
def proxy(server):
    proxy = FaultProxy(server.live.port).start()
    yield proxy
    proxy.stop()


def deploy(server: ServerAdmin, base_image, name: str, device_id: str) -> str:
    server.cli("artifacts", "upload", str(base_image.release(name).with_suffix(".mender")))
    return server.cli("deployments", "create", "--name", name, "--artifact-name", name,
                      "--device", device_id)["id"]
