"""Who the device is to the server: its key, its identity and its inventory."""
import base64
import os
import platform
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from . import __version__
from .atomic import write_atomically
from .config import Config

ETHERNET = "1"  # ARPHRD_ETHER in /sys/class/net/*/type
CLIENT_VERSION = f"tern-updater {__version__}"  # the package's version on a device
# An Ed25519 private key in PKCS #8 is this DER prefix and the 32-byte seed (RFC 8410 §7).
ED25519_PKCS8 = bytes.fromhex("302e020100300506032b657004220420")
PEM_ARMOUR = ("-----BEGIN PRIVATE KEY-----", "-----END PRIVATE KEY-----")


def device_key(data_dir: Path):
    """The device's key, made on first start (Ed25519: instant even on an emulated CPU).
    Its own Ed25519 key is read without cryptography's serialization package, which would
    stay resident in the daemon for nothing but this (2.5 MiB on the device,
    BENCHMARKS.md); any other key a device maker puts there is read by it."""
    path = data_dir / "device-key.pem"
    if not path.exists():
        seed = os.urandom(32)
        body = base64.encodebytes(ED25519_PKCS8 + seed).decode()
        data_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(path, f"{PEM_ARMOUR[0]}\n{body}{PEM_ARMOUR[1]}\n".encode())
        os.chmod(path, 0o600)
    pem = path.read_bytes()
    text = pem.decode("ascii", errors="replace").strip()
    if text.startswith(PEM_ARMOUR[0]) and text.endswith(PEM_ARMOUR[1]):
        der = base64.b64decode("".join(text[len(PEM_ARMOUR[0]):-len(PEM_ARMOUR[1])].split()))
        if len(der) == 48 and der.startswith(ED25519_PKCS8):
            return ed25519.Ed25519PrivateKey.from_private_bytes(der[16:])
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(pem, password=None)


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


ADAPTIVE = "block-index-1"  # the block index format the adaptive install reads


def inventory(device_type: str, provides: dict[str, str],
              adaptive: bool = False) -> dict[str, str]:
    """The attributes sent to the server; `adaptive`: the device installs an artifact with
    a block index from the blocks its slots hold (`delta_update`, an inventory attribute
    and not a provide, so that no artifact's depends or clears_provides meets it)."""
    attributes = {**provides, "device_type": device_type, "client_version": CLIENT_VERSION,
                  "hostname": platform.node(), "kernel": platform.release()}
    if adaptive:
        attributes["delta_update"] = ADAPTIVE
    return attributes
