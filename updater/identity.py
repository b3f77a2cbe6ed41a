"""Who the device is to the server: its key, its identity and its inventory.

cryptography is imported only where a key is used: the daemon signs in a forked child
(`ForkedSigner`, updater/forked.py), so that cryptography and its OpenSSL bindings never
stay resident in it between polls (BENCHMARKS.md).
"""
import base64
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from . import __version__
from .atomic import write_atomically
from .config import Config
from .forked import in_child

ETHERNET = "1"  # ARPHRD_ETHER in /sys/class/net/*/type
CLIENT_VERSION = f"tern-updater {__version__}"  # the package's version on a device
# An Ed25519 private key in PKCS #8 is this DER prefix and the 32-byte seed (RFC 8410 §7).
ED25519_PKCS8 = bytes.fromhex("302e020100300506032b657004220420")
PEM_ARMOUR = ("-----BEGIN PRIVATE KEY-----", "-----END PRIVATE KEY-----")


def device_key_file(data_dir: Path) -> Path:
    """The device's key file, made on first start: an Ed25519 key (instant even on an
    emulated CPU), the PKCS #8 PEM that cryptography writes, made from a random seed
    without it."""
    path = data_dir / "device-key.pem"
    if not path.exists():
        seed = os.urandom(32)
        body = base64.encodebytes(ED25519_PKCS8 + seed).decode()
        data_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(path, f"{PEM_ARMOUR[0]}\n{body}{PEM_ARMOUR[1]}\n".encode(),
                         mode=0o600)
    return path


def device_key(data_dir: Path):
    """The device's key (cryptography's), made on first start. Its own Ed25519 key is read
    without cryptography's serialization package (2.5 MiB more on the device,
    BENCHMARKS.md); any other key a device maker puts there is read by it."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    pem = device_key_file(data_dir).read_bytes()
    text = pem.decode("ascii", errors="replace").strip()
    if text.startswith(PEM_ARMOUR[0]) and text.endswith(PEM_ARMOUR[1]):
        der = base64.b64decode("".join(text[len(PEM_ARMOUR[0]):-len(PEM_ARMOUR[1])].split()))
        if len(der) == 48 and der.startswith(ED25519_PKCS8):
            return ed25519.Ed25519PrivateKey.from_private_bytes(der[16:])
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(pem, password=None)


def sign(key, body: bytes) -> str:
    """X-MEN-Signature: base64 of the signature over the raw body."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

    if isinstance(key, rsa.RSAPrivateKey):
        return base64.b64encode(key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return base64.b64encode(key.sign(body)).decode()
    raise ValueError(f"unsupported device key type {type(key).__name__}")


# An auth request's body, made from the device's public key (PEM); what a signer signs.
AuthBody = Callable[[str], bytes]


class KeySigner:
    """Signs auth requests with a key held in this process (the fleet simulator's devices,
    which share one interpreter and its threads, and tests)."""

    def __init__(self, key):
        self.key = key

    def signed(self, build: AuthBody) -> tuple[bytes, str]:
        """The body `build` makes from the public key, and its signature."""
        # The encodings come from `_serialization` (which ed25519 and rsa import anyway),
        # not the serialization package, which the agent does not otherwise need.
        from cryptography.hazmat.primitives._serialization import Encoding, PublicFormat

        pem = self.key.public_key().public_bytes(Encoding.PEM,
                                                 PublicFormat.SubjectPublicKeyInfo)
        body = build(pem.decode())
        return body, sign(self.key, body)


class ForkedSigner:
    """The daemon's signer: the key file is read and the auth request signed in a forked
    child, so that cryptography with its OpenSSL bindings (3 to 4 MiB) never stays
    resident in the daemon between polls. Each authentication (at start, then when the
    token expires, a week by default) costs a fork and cryptography's import in the
    child."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        device_key_file(data_dir)  # made now, as the in-process key is: at start

    def signed(self, build: AuthBody) -> tuple[bytes, str]:
        return in_child(lambda: KeySigner(device_key(self.data_dir)).signed(build),
                        (ValueError, OSError))


def identity(config: Config, net: Path = Path("/sys/class/net")) -> dict[str, str]:
    """The identity script's KEY=VALUE lines, or the first ethernet interface's mac."""
    if config.identity_script:
        output = subprocess.run(config.identity_script, shell=True, check=True,
                                capture_output=True, text=True, timeout=60).stdout
        found = dict(line.strip().split("=", 1) for line in output.splitlines() if "=" in line)
        if not found:
            raise ValueError(f"{config.identity_script}: printed no KEY=VALUE line")
        return found
    for interface in sorted(net.iterdir()):
        if (interface / "type").read_text().strip() == ETHERNET:
            return {"mac": (interface / "address").read_text().strip()}
    raise ValueError(f"no ethernet interface in {net}: set identity_script")


ADAPTIVE = "block-index-2"  # the block index format the adaptive install reads


def inventory(device_type: str, provides: dict[str, str],
              adaptive: bool = False) -> dict[str, str]:
    """The attributes sent to the server; `adaptive`: the device installs an artifact with
    a block index from the blocks its slots hold (`delta_update`, an inventory attribute
    and not a provide, so that no artifact's depends or clears_provides meets it)."""
    system = os.uname()  # what platform.node() and release() read, without that module
    attributes = {**provides, "device_type": device_type, "client_version": CLIENT_VERSION,
                  "hostname": system.nodename, "kernel": system.release}
    if adaptive:
        attributes["delta_update"] = ADAPTIVE
    return attributes
