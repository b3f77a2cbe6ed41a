"""`make demo`: an over-the-air update, end to end, on the embedded defaults.

tern-server (SQLite, HTTPS with its self-signed certificate) in a temporary data directory;
one emulated ARM64 device on release-1 running `tern-updater daemon`; release-2 uploaded
and deployed; the device writes slot B, reboots, passes its health checks and commits.
Logs (the device's console, the server's output) stay in build/demo/.
"""
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from qemu.device import Device, make_overlay
from qemu.guest import QEMU_MAC, release
from testkit.admin import ServerAdmin
from testkit.enroll import enroll
from testkit.live_server import LiveServer

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "build" / "images"
LOGS = ROOT / "build" / "demo"


def step(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def say(text: str) -> None:
    print(f"   {text}", flush=True)


def follow(admin: ServerAdmin, deployment: str, device_id: str, done: threading.Event,
           started: float) -> None:
    """Print each status the server gets from the device, as it gets it."""
    last = None
    while not done.is_set():
        status = admin.device_status(deployment, device_id)
        if status != last:
            say(f"{time.monotonic() - started:5.1f} s  server: deployment status {status}")
            last = status
        if status in ("success", "failure", "aborted"):
            return
        time.sleep(1)


def main() -> int:
    if not (IMAGES / "release-2.mender").exists():
        print("demo: build/images/release-2.mender is missing: run `make image`",
              file=sys.stderr)
        return 1
    LOGS.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="tern-demo-"))
    live = device = None
    try:
        step("tern-server on the embedded defaults (SQLite, HTTPS, self-signed certificate), "
             "trusting the release key")
        live = LiveServer(work / "server", names=("10.0.2.2",),  # and the release key
                          settings={"artifact_verify_keys": [str(IMAGES / "keys" /
                                                                 "artifact.pub")]})
        live.output = LOGS / "server.log"
        live.start()
        admin = ServerAdmin(live)
        say(f"{live.url} (the device reaches it at https://10.0.2.2:{live.port}); "
            f"log: {live.output.relative_to(ROOT)}")

        step("One emulated device boots release-1 (QEMU, real U-Boot, A/B slots, /data)")
        device = Device("demo", make_overlay(IMAGES / "disk.img", work / "demo.qcow2"),
                        LOGS / "device-console.log", ssh_key=IMAGES / "keys" / "ssh_ed25519")
        device.log_path.unlink(missing_ok=True)
        started = time.monotonic()
        device.transition("shell")
        say(f"booted slot {device.slot}, {release(device)}, in {time.monotonic() - started:.0f} s;"
            f" console: {device.log_path.relative_to(ROOT)}")
        device.run_check("echo 'written before the update' > /data/marker && sync")

        step("The daemon starts and asks to join; the operator accepts it")
        say("writing /data/tern/updater.toml and the server's certificate over the console")
        device_id = enroll(admin, device, live.port)
        say(f"accepted: {device_id} (mac {QEMU_MAC}); inventory: artifact_name="
            f"{admin.attributes(device_id)['artifact_name']}")

        step("Upload release-2 and deploy it")
        artifact = admin.cli("artifacts", "upload", str(IMAGES / "release-2.mender"))
        verified_by = artifact.get("verified_by") or {}
        say(f"{artifact['name']}: {artifact['size']} bytes, signature {artifact['signature']}"
            f"{' by ' + verified_by['name'] if verified_by else ''}")
        deployment = admin.cli("deployments", "create", "--name", "demo", "--artifact-name",
                               "release-2", "--device", device_id)["id"]
        started = time.monotonic()
        done = threading.Event()
        follower = threading.Thread(target=follow, daemon=True,
                                    args=(admin, deployment, device_id, done, started))
        follower.start()
        slot = device.expect_reboot(timeout=600)
        say(f"{time.monotonic() - started:5.1f} s  device: rebooted into slot {slot}")
        follower.join(300)
        done.set()

        step("The result")
        shown = admin.cli("deployments", "show", deployment)
        status = shown["devices"][0]["status"]
        say(f"deployment {deployment}: {shown['status']}, device: {status}, "
            f"{time.monotonic() - started:.0f} s from deploy to {status}")
        attributes = admin.attributes(device_id)
        say("server's inventory: " + ", ".join(f"{key}={attributes[key]}" for key in
                                                 ("artifact_name", "device_type", "hostname")))
        for line in admin.device_log(deployment, device_id):
            say(f"device log: {line}")
        say(f"device: prompt device-{device.slot}#, /etc/tern-release: {release(device)}, "
            f"/data/marker: {device.run_check('cat /data/marker').strip()}")
        return 0 if status == "success" and release(device) == "release-2" else 1
    finally:
        if device:
            device.close()
        if live:
            live.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
