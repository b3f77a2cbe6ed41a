"""What tests do in a device's shell: read and write the boot environment, install to B,
point the updater daemon at a server (enrolling it there, with the server's admin:
testkit.enroll)."""
import base64
import re

QEMU_MAC = "52:54:00:12:34:56"  # QEMU's default for the first NIC: the device's identity
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


def put_file(device, path: str, data: bytes) -> None:
    """Write a file over the console: base64 in lines well under the tty's 4096 bytes."""
    encoded = base64.b64encode(data).decode()
    device.run_check(f": > {path}.b64")
    for start in range(0, len(encoded), 1024):
        device.run_check(f"echo {encoded[start:start + 1024]} >> {path}.b64")
    device.run_check(f"base64 -d {path}.b64 > {path} && rm {path}.b64 && sync")


def configure_daemon(device, server_url: str, certificate: bytes, poll_interval: float = 2,
                     retry_interval: float = 2) -> None:
    """Point the device's updater daemon at a server: /data/tern/updater.toml (the image's
    defaults plus the server) and the server's CA certificate. rcS (or, on the systemd
    image, tern-updater.service) starts the daemon at the next boot; `start_daemon` starts
    it now."""
    put_file(device, "/data/tern/server.crt", certificate)
    settings = (f'server_url = "{server_url}"\n'
                'server_certificate = "/data/tern/server.crt"\n'
                f"poll_interval = {float(poll_interval)}\n"
                f"retry_interval = {float(retry_interval)}\n")
    put_file(device, "/data/tern/server.toml", settings.encode())
    device.run_check("cat /etc/tern/updater.toml /data/tern/server.toml "
                     "> /data/tern/updater.toml && rm /data/tern/server.toml && sync")


def boot_resume_finished(device) -> bool:
    """Whether the boot's `tern-updater resume` has run: on the busybox image its line in the
    log rcS gives it, on the systemd image its oneshot unit's exit (a failed resume exits
    too, and the daemon reports it)."""
    return device.run("if [ -d /run/systemd/system ]; then [ \"$(systemctl show "
                      "-p ExecMainExitTimestampMonotonic --value tern-updater-resume.service)\" "
                      "!= 0 ]; else grep -q 'no update in progress' /data/tern/updater.log; fi",
                      timeout=60)[1] == 0


def start_daemon(device) -> None:
    """On the systemd image its unit (which returns once the daemon says READY=1), on the
    busybox image in the background."""
    device.run_check("if [ -d /run/systemd/system ]; then systemctl start tern-updater.service; "
                     "else tern-updater --config /data/tern/updater.toml "
                     "--log /data/tern/updater.log daemon >/dev/null 2>&1 </dev/null & fi",
                     timeout=600)
