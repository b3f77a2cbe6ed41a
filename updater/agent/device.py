"""What the device says about itself, read from its files: its device type and the provides
of the artifact it runs. The idle daemon's inventory and polls need them, and no more of
the steps (`steps.Steps` asks here too)."""
import json

from ..config import Config


def device_type(config: Config) -> str:
    if config.device_type:
        return config.device_type
    device_type = read_key_value(config.device_type_file).get("device_type")
    if not device_type:
        raise ValueError(f"no device type: set device_type, or device_type=NAME in "
                         f"{config.device_type_file}")
    return device_type


def provides(config: Config) -> dict[str, str]:
    try:
        return json.loads((config.data / "provides.json").read_text())
    except FileNotFoundError:
        info = read_key_value(config.artifact_info)
        return {"artifact_name": info.get("artifact_name", "unknown")}


def read_key_value(path: str) -> dict[str, str]:
    try:
        lines = open(path).read().splitlines()
    except FileNotFoundError:
        return {}
    return dict(line.strip().split("=", 1) for line in lines if "=" in line)
