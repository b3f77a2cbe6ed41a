"""Enrol an emulated device with a live server: its daemon pointed at the server, the device
accepted by the server's admin."""
from qemu.guest import QEMU_MAC, boot_resume_finished, configure_daemon, release, start_daemon
from testkit import wait_for
from testkit.admin import ServerAdmin


def enroll(admin: ServerAdmin, device, port: int, settings: dict | None = None,
           timeout: float = 300) -> str:
    """Boot the device and start the daemon, talking to 10.0.2.2:`port` (the server, or a
    proxy in front of it) with `settings` added to its configuration; accept the device
    as `admin` (testkit's ServerAdmin) and wait for an inventory that names the
    release it runs. Returns its id on the server.

    `timeout` for each wait: under emulation on a loaded host, the daemon's first start
    (Python, the device key, TLS) can take minutes."""
    device.transition("shell")
    # The boot's resume first: a daemon's start beside it on the one slow vCPU can delay
    # it past the watchdog's timeout, and the board resets in the middle of the enrolment.
    wait_for(lambda: boot_resume_finished(device), timeout=timeout, interval=2,
             what="the boot's resume")
    running = release(device)
    configure_daemon(device, f"https://10.0.2.2:{port}", admin.live.certificate.read_bytes())
    if settings:
        lines = "\\n".join(f"{key} = {value}" for key, value in settings.items())
        device.run_check(f"printf '{lines}\\n' >> /data/tern/updater.toml && sync")
    start_daemon(device)
    device_id = admin.accept({"mac": QEMU_MAC}, timeout)
    wait_for(lambda: admin.attributes(device_id).get("artifact_name") == running,
             timeout=timeout, what="the inventory")
    return device_id
