"""What tests do in a device's shell: read and write the boot environment, install to B."""
import re

TRIAL_B = {"mender_boot_part": 3, "mender_boot_part_hex": 3, "upgrade_available": 1,
           "bootcount": 0}
COMMIT = {"upgrade_available": 0, "bootcount": 0}


def fw_env(device) -> dict[str, str]:
    """The environment as Linux's fw_printenv sees it."""
    output = device.run_check("fw_printenv")
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def fw_setenv(device, variables: dict) -> None:
    """Set several variables in one environment write (fw_setenv -s takes name=value lines)."""
    lines = "\\n".join(f"{name}={value}" for name, value in variables.items())
    device.run_check(f"printf '{lines}\\n' > /tmp/env && fw_setenv -s /tmp/env")


def install_to_b(device, source: str = "/dev/vdb") -> None:
    """Write a rootfs image to slot B and make B the trial slot, from the device shell."""
    device.run_check(f"dd if={source} of=/dev/vda3 bs=1M conv=fsync 2>/dev/null", timeout=120)
    fw_setenv(device, TRIAL_B)


def uboot_choices(device) -> list[tuple[str, str, str]]:
    """Every (mender_boot_part, upgrade_available, bootcount) the boot script used, in order."""
    pattern = r"tern: mender_boot_part=(\d) upgrade_available=(\d) bootcount=(\w+)"
    return re.findall(pattern, device.log_path.read_text())


def release(device) -> str:
    return device.run_check("cat /etc/tern-release").strip()


def put_data_marker(device, text: str = "survives") -> None:
    device.run_check(f"echo {text} > /data/marker && sync")


def data_marker(device) -> str:
    return device.run_check("cat /data/marker").strip()
