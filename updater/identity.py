"""Who the device is to the server: its key, its identity and its inventory."""
import os
import platform
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from . import __version__
from .atomic import write_atomically
from .config import Config

ETHERNET = "1"  # ARPHRD_ETHER in /sys/class/net/*/type
CLIENT_VERSION = f"tern-updater {__version__}"  # the package's version on a device


def device_key(data_dir: Path):
    """The device's key, made on first start (Ed25519: instant even on an emulated CPU)."""
    path = data_dir / "device-key.pem"
    if not path.exists():
        key = ed25519.Ed25519PrivateKey.generate()
        data_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(path, key.private_bytes(serialization.Encoding.PEM,
                                                 serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
        os.chmod(path, 0o600)
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


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
