"""The server's auth token, kept across restarts and reboots (`<data_dir>/auth-token.json`),
so that a daemon that starts again (after an update's reboot, above all) reports at once,
without a new auth request: that costs a forked child that imports cryptography to sign,
seconds under emulation, and a round trip, before the update's result can be sent.

The token is bound to what it was issued for: the server's URL, the device's identity and
its key (a CRC-32 of the key file: it tells a new key from the old one; it is no
security boundary, whoever can write data_dir holds the key itself, and it needs no hashlib,
which the idle daemon never imports). It is used only when all three are the same now, so a
token is never sent to another server, and a device whose identity or key changed (an
update that changes the identity script, a new key) authenticates afresh. The server still
decides: a token it no longer takes (expired, revoked, the device decommissioned) gets a
401, and the client authenticates as it always did.

The file is written atomically with mode 0600 (it is a credential), apart from the state
store and the status queue: whatever happens to it, it can cost one auth request, never an
update's state or result. Any file that cannot be read or parsed is ignored.
"""
import binascii
import json
import os
import re
import sys
from pathlib import Path

from .atomic import write_atomically

VERSION = 1
# What a bearer token may hold (RFC 6750's b64token; a JWT is base64url and dots): anything
# else in a damaged file would break the Authorization header, and the request with it.
BEARER = re.compile(r"[A-Za-z0-9._~+/-]+=*")


class TokenStore:
    def __init__(self, path: Path, key_file: Path):
        """`key_file`: the device's key, whose CRC-32 the token is bound to."""
        self.path = path
        self.key_file = key_file

    def load(self, server_url: str, identity: dict[str, str]) -> str | None:
        """The stored token if it was issued by `server_url` to this identity and key;
        None otherwise, or when the file is missing, unreadable or not ours."""
        try:
            document = json.loads(self.path.read_bytes())
            bound = self._binding(server_url, identity)
        except (OSError, ValueError, RecursionError):  # missing, unreadable, not JSON
            return None
        if not isinstance(document, dict) or document.get("version") != VERSION:
            return None
        token = document.get("token")
        if not isinstance(token, str) or not BEARER.fullmatch(token) or any(
                document.get(name) != value for name, value in bound.items()):
            return None
        return token

    def save(self, server_url: str, identity: dict[str, str], token: str) -> None:
        """Keep `token`; a failure (disk full, read-only) is printed and costs only an auth
        request at the next start."""
        try:
            document = {"version": VERSION, **self._binding(server_url, identity),
                        "token": token}
            write_atomically(self.path, json.dumps(document).encode(), mode=0o600)
        except OSError as error:
            print(f"tern-updater: the auth token is not kept: {error}", file=sys.stderr,
                  flush=True)

    def discard(self) -> None:
        """The server refused the token: never offer it again."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as error:  # a stale token costs one 401 at the next start
            print(f"tern-updater: {self.path}: {error}", file=sys.stderr, flush=True)

    def _binding(self, server_url: str, identity: dict[str, str]) -> dict:
        return {"server_url": server_url.rstrip("/"), "identity": identity,
                "device_key_crc32": binascii.crc32(self.key_file.read_bytes())}
