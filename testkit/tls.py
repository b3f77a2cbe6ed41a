"""Which TLS 1.3 suite a client agrees on with a server on loopback."""
import os
import subprocess
import sys
from pathlib import Path

# The emulated image's OpenSSL configuration: ChaCha20-Poly1305 offered first, as on a board
# without AES instructions (docs/porting.md).
IMAGE_OPENSSL_CONF = Path(__file__).resolve().parents[1] / "images/rootfs/etc/ssl/openssl.cnf"

CLIENT = ("import socket, ssl, sys; context = ssl._create_unverified_context(); "
          "connection = socket.create_connection(('127.0.0.1', int(sys.argv[1]))); "
          "print(context.wrap_socket(connection).cipher()[0])")


def negotiated_cipher(port: int, openssl_conf: Path | None = None) -> str:
    """The suite of a handshake from a fresh client process (OpenSSL reads its configuration
    once, at the process's start): with `openssl_conf`, or with OpenSSL's defaults."""
    env = {k: v for k, v in os.environ.items() if k != "OPENSSL_CONF"}
    if openssl_conf is not None:
        env["OPENSSL_CONF"] = str(openssl_conf)
    return subprocess.run([sys.executable, "-c", CLIENT, str(port)], env=env, check=True,
                          capture_output=True, text=True, timeout=30).stdout.strip()
