"""The nginx block of server/README.md, run for real in front of `tern-server serve`: only its
addresses and paths are replaced, so the documentation and this test cannot drift apart."""
import json
import os
import re
import shutil
import socket
import ssl
import tempfile
import time
from pathlib import Path

import pytest
import requests

from testkit import wait_for
from testkit.admin import ServerAdmin
from testkit.artifacts import build_artifact
from testkit.live_server import LiveServer
from testkit.nginx import README, Nginx, documented_block
from testkit.tls import IMAGE_OPENSSL_CONF, negotiated_cipher
from testkit.trickle import Trickler

pytestmark = pytest.mark.slow

HOLD = "POST /api/devices/v1/authentication/auth_requests HTTP/1.1\r\nHost: ota.example.com" \
       "\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"


def hold(port: int) -> ssl.SSLSocket:
    """A request whose headers are in and whose body never comes."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30))
    sock.sendall(HOLD.encode())
    return sock


def connections_to(port: int) -> int:
    """Established TCP connections on this host to 127.0.0.1:`port` (/proc/net/tcp)."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for line in lines
               if line.split()[2] == f"0100007F:{port:04X}" and line.split()[3] == "01")


def closed_after(sock: ssl.SSLSocket, opened: float) -> float:
    """Seconds from `opened` until the server closed `sock`."""
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass
    return time.monotonic() - opened


def test_the_documented_nginx_config(tmp_path, large_artifact):
    tern = LiveServer(tmp_path / "data", workers=2, names=("ota.example.com",)).start()
    nginx = Nginx([tern.port], tern.certificate)
    work, port, url, verify = nginx.work, nginx.port, nginx.url, tern.certificate
    try:
        nginx.start()
        admin = ServerAdmin(tern)
        # the upstream's certificate is checked: /api/health passed through
        assert requests.get(f"{url}/api/health", verify=verify, timeout=10).status_code == 204
        # the client's TLS suite order: ChaCha20 for a board without AES instructions
        assert negotiated_cipher(port, IMAGE_OPENSSL_CONF) == "TLS_CHACHA20_POLY1305_SHA256"
        assert negotiated_cipher(port) == "TLS_AES_256_GCM_SHA384"

        trickler = Trickler("127.0.0.1", port, ["handshake", "headers"]).start()
        limit = re.search(r"limit_conn tern_addr (\d+);", documented_block())
        assert limit, "the README's nginx block limits no connections"
        limit = int(limit[1])
        opened = time.monotonic()
        held = [hold(port) for _ in range(limit)]
        # once nginx has read every held request's headers (a loaded machine: not at once)
        wait_for(lambda: requests.get(f"{url}/api/health", verify=verify,
                                      timeout=5).status_code == 429,
                 timeout=5, interval=0.2, what="a request over the connection limit to get 429")
        assert connections_to(tern.port) < limit / 2, \
            "nginx passed the held requests on to tern before their bodies came"
        body_timeout = [closed_after(sock, opened) for sock in held]
        wait_for(lambda: all(t.closed_after for t in trickler.trickles), timeout=20,
                 interval=0.2, what="nginx to close the trickling connections")
        trickler.stop()
        assert all(9 < t < 20 for t in body_timeout), body_timeout
        assert all(9 < t.closed_after < 20 for t in trickler.trickles), trickler.trickles
        assert "auth_requests" not in tern.output.read_text()

        too_big = requests.put(f"{url}/api/devices/v1/inventory/device/attributes",
                               data=b"[" + b" " * (2 << 20) + b"]", verify=verify, timeout=30)
        assert too_big.status_code == 413
        with large_artifact.open("rb") as body:
            uploaded = requests.post(f"{url}/api/management/v1/artifacts", data=body,
                                     headers={"Authorization": f"Bearer {admin.token}"},
                                     verify=verify, timeout=60)
        assert uploaded.status_code == 201, uploaded.text
        assert uploaded.json()["size"] == large_artifact.stat().st_size
        error_log = (work / "error.log").read_text()
        assert "buffered to a temporary file" not in error_log, error_log  # streamed through
        downloaded = requests.get(f"{url}/api/management/v1/artifacts/"
                                  f"{uploaded.json()['id']}/download",
                                  headers={"Authorization": f"Bearer {admin.token}"},
                                  verify=verify, timeout=60)
        assert downloaded.content == large_artifact.read_bytes()
    finally:
        nginx.stop()
        tern.stop()


def accel_location(artifacts_dir: Path) -> str:
    """The README's X-Accel location, aliased to `artifacts_dir`."""
    [line] = [b for b in re.findall(r"```nginx\n(.*?)```", README.read_text(), re.S)
              if "/_artifacts/" in b]
    assert "alias /srv/tern/artifacts/;" in line
    return line.replace("/srv/tern/artifacts/", f"{artifacts_dir}/")


def test_ranges_through_nginx_x_accel_redirect(tmp_path):
    """With `accel_redirect_prefix`, nginx sends the stored artifact for a device's signed
    link and answers its Range requests: one range (206 with Content-Range, what an adaptive
    install asks), several (nginx's multipart/byteranges), one past the end (416)."""
    artifacts_dir = Path(tempfile.mkdtemp(prefix="tern-accel-"))
    artifacts_dir.chmod(0o755)  # nginx's workers run as nobody
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "config.json").write_text(json.dumps(
        {"accel_redirect_prefix": "/_artifacts/", "artifacts_dir": str(artifacts_dir)}))
    tern = LiveServer(data_dir, names=("ota.example.com",)).start()
    nginx = Nginx([tern.port], tern.certificate, lambda config: config.replace(
        "    location / {\n", f"    {accel_location(artifacts_dir)}    location / {{\n", 1))
    verify, url = tern.certificate, nginx.url
    try:
        nginx.start()
        admin = ServerAdmin(tern)
        payload = os.urandom(300_000)
        data = build_artifact({"rootfs.ext4": payload}, name="rootfs-1.0",
                              device_types=["qemux86-64"], compression="none")
        admin.api("POST", "/artifacts", data=data)
        link = admin.download_link("rootfs-1.0")
        through_nginx = link.replace(tern.url, url)
        assert through_nginx != link

        def get(range_header):
            return requests.get(through_nginx, headers={"Range": range_header},
                                verify=verify, timeout=30)

        one = get("bytes=2048-4095")
        assert one.status_code == 206, one.text[:200]
        assert one.headers["Content-Range"] == f"bytes 2048-4095/{len(data)}"
        assert one.content == data[2048:4096]
        tail = get("bytes=-1024")
        assert tail.status_code == 206 and tail.content == data[-1024:]
        several = get("bytes=0-9,100-109")
        assert several.status_code == 206
        assert several.headers["Content-Type"].startswith("multipart/byteranges")
        assert data[0:10] in several.content and data[100:110] in several.content
        assert get(f"bytes={len(data)}-").status_code == 416
        access_log = (nginx.work / "access.log").read_text()
        assert access_log.count(" 206 ") >= 3  # nginx counted the bytes it sent
    finally:
        nginx.stop()
        tern.stop()
        shutil.rmtree(artifacts_dir, ignore_errors=True)
