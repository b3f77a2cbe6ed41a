"""nginx in front of Tern instances with the nginx block of server/README.md, only its
addresses and paths replaced, so the documentation and what the tests run cannot drift
apart."""
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import requests

from testkit import free_port, wait_for

README = Path(__file__).resolve().parents[1] / "server" / "README.md"
DOCUMENTED_UPSTREAMS = "    server 10.0.0.11:8443;\n    server 10.0.0.12:8443;\n"


def documented_block() -> str:
    [block] = [b for b in re.findall(r"```nginx\n(.*?)```", README.read_text(), re.S)
               if "upstream tern" in b]
    return block


def nginx_config(work: Path, ports: list[int], certificate: Path, port: int) -> str:
    """The README's block for instances on 127.0.0.1:`ports` (their certificate and key,
    `certificate` and its server.key beside, also nginx's own), nginx on 127.0.0.1:`port`."""
    block, key = documented_block(), certificate.with_name("server.key")
    upstreams = "".join(f"    server 127.0.0.1:{upstream};\n" for upstream in ports)
    for documented, here in [
            (DOCUMENTED_UPSTREAMS, upstreams),
            ("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
            ("/etc/ssl/ota.example.com.crt", str(certificate)),
            ("/etc/ssl/ota.example.com.key", str(key)),
            ("/etc/ssl/tern-instances.crt", str(certificate))]:
        assert documented in block, f"the README's nginx block no longer has {documented!r}"
        block = block.replace(documented, here)
    temp = " ".join(f"{kind}_temp_path {work}/{kind};"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (f"pid {work}/nginx.pid;\nerror_log {work}/error.log;\nevents {{}}\n"
            f"http {{\naccess_log {work}/access.log;\n{temp}\n{block}}}\n")


def ignoring_range(config: str) -> str:
    """`Nginx`'s config made a proxy that ignores Range, as some caches and middleboxes do:
    the instances never see Range (nor If-Range) and nginx cuts no range itself, so a
    Range request gets 200 and the whole body. And the client's Host with its port: the
    instances name it in signed download links (the documented `$host` has no port)."""
    documented = "    proxy_set_header Host $host;"
    assert documented in config, f"the README's nginx block no longer has {documented!r}"
    return config.replace(documented, '    proxy_set_header Range "";\n'
                                      '    proxy_set_header If-Range "";\n'
                                      '    max_ranges 0;\n'
                                      '    proxy_set_header Host $http_host;')


def answers(url: str, verify) -> bool:
    try:
        requests.get(f"{url}/api/health", verify=verify, timeout=2)
        return True
    except requests.ConnectionError:
        return False


class Nginx:
    """nginx (`nginx_config`) in the foreground, in a work directory of its own; `url`.
    `config` may change the configuration text before it starts."""

    def __init__(self, ports: list[int], certificate: Path, config=lambda text: text):
        self.work = Path(tempfile.mkdtemp(prefix="tern-nginx-"))
        self.work.chmod(0o755)  # nginx's workers run as nobody
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.certificate = certificate
        (self.work / "nginx.conf").write_text(
            config(nginx_config(self.work, ports, certificate, self.port)))
        self.process: subprocess.Popen | None = None

    def start(self) -> "Nginx":
        self.process = subprocess.Popen(
            ["nginx", "-c", str(self.work / "nginx.conf"), "-g", "daemon off;"],
            stderr=subprocess.PIPE)
        wait_for(lambda: answers(self.url, self.certificate), timeout=10, interval=0.2,
                 what="nginx")
        return self

    def stop(self) -> None:
        """Stopped, its work directory (logs included) deleted."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait()
        shutil.rmtree(self.work, ignore_errors=True)
