"""The agent's footprint on the emulated device, beside Debian's mender-client 3.4 on the
same device, against the same server, in the same run.

    .venv/bin/python -m bench.agent [--polls 100]

One QEMU device (the image from `make image`) with a second, read-only disk holding
mender-client and what it alone pulls in beside the image's packages, unpacked from Debian's
arm64 packages (`images/build.py --mender-client`), mounted at /mnt/mender. tern-server
(HTTPS, SQLite) on the host. For each agent, one after the other: its daemon is enrolled
(accepted on the server), stopped, and started again with a 1 s poll interval; then

- start-up: from the start command to its first `deployments/next` on the server;
- CPU: user + system seconds of the daemon over `--polls` polls (from /proc/PID/stat);
- idle RSS and PSS after them (/proc/PID/smaps_rollup);
- install peak: the daemon stopped, a standalone install of the signed release-2 artifact
  (192 MiB rootfs, gzip) over plain HTTP into the inactive slot, its VmHWM sampled every
  0.5 s, then a rollback;
- disk: the agent's own files, and with the runtime it alone needs (Python 3.11 and its
  packages for tern; the libraries mender-client adds beside the image's for mender).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.ota import serve_directory
from qemu.device import Device, make_overlay
from qemu.guest import configure_daemon, put_file
from testkit import wait_for
from testkit.admin import ServerAdmin
from testkit.live_server import LiveServer

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "build" / "images"
MENDER_MAC = "02:00:00:00:00:0b"  # mender's identity: not the NIC's, which tern uses
MENDER = ("LD_LIBRARY_PATH=/mnt/mender/usr/lib/aarch64-linux-gnu /mnt/mender/usr/bin/mender "
          "--config /data/mender.conf --data /data/mender")
TERN = "tern-updater --config /data/tern/updater.toml"
# What each agent's disk figures count, on the device (du -sk): its own files, and those
# with the runtime it alone needs (Python 3.11 and its packages; what mender-client's
# packages add beside the image's, all of /mnt/mender).
DISK = {
    "tern": {"agent": ["/usr/lib/tern-updater", "/usr/bin/tern-updater"],
             "with runtime": ["/usr/lib/tern-updater", "/usr/bin/tern-updater",
                              "/usr/bin/python3.11", "/usr/lib/python3.11", "/usr/lib/python3"]},
    "mender": {"agent": ["/mnt/mender/usr/bin/mender", "/mnt/mender/usr/share/mender",
                         "/mnt/mender/etc"],
               "with runtime": ["/mnt/mender"]},
}


class Agent:
    def __init__(self, name: str, device: Device, admin: ServerAdmin, identity: dict,
                 daemon: str, install: str, rollback: str):
        self.name, self.device, self.admin, self.identity = name, device, admin, identity
        self.daemon_command, self.install_command = daemon, install
        self.rollback_command = rollback
        self.process_name = daemon.split(" --")[0].rsplit("/", 1)[-1]  # its /proc Name
        self.pid = 0

    def start(self) -> None:
        output = self.device.run_check(f"{self.daemon_command} >/dev/null 2>&1 </dev/null & "
                                       "echo pid=$!")
        self.pid = int(re.search(r"pid=(\d+)", output).group(1))

    def stop(self) -> None:
        self.device.run_check(f"kill {self.pid}; while [ -e /proc/{self.pid} ]; do sleep 0.2; "
                              "done", timeout=60)

    def proc(self, name: str) -> str:
        return self.device.run_check(f"cat /proc/{self.pid}/{name}")

    def cpu_seconds(self) -> float:
        fields = self.proc("stat").rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory(self) -> dict[str, float]:
        """RSS and PSS (smaps_rollup), peak RSS (VmHWM) in MiB, of the agent's process (its
        name checked: the pid is the daemon's, not a shell's or a child's)."""
        status = self.proc("status")
        name = re.search(r"^Name:\s+(\S+)", status, re.M).group(1)
        if name != self.process_name:
            raise RuntimeError(f"pid {self.pid} is {name}, not {self.process_name}")
        rollup = self.proc("smaps_rollup") + status
        found = {key: int(re.search(rf"^{key}:\s+(\d+) kB", rollup, re.M).group(1)) / 1024
                 for key in ("Rss", "Pss", "VmHWM")}
        print(f"{self.name}: pid {self.pid} ({name}): Rss {found['Rss'] * 1024:.0f} kB, "
              f"Pss {found['Pss'] * 1024:.0f} kB", flush=True)
        return found

    def install_peak(self, url: str) -> tuple[float, float, str]:
        """Seconds, peak RSS (MiB) and the output's last line of an install from `url`."""
        script = (f"{self.install_command} {url} >/tmp/install.log 2>&1 & pid=$!; peak=0; "
                  "while [ -e /proc/$pid ]; do "
                  "h=$(sed -n 's/^VmHWM:[^0-9]*\\([0-9]*\\).*/\\1/p' /proc/$pid/status); "
                  "[ -n \"$h\" ] && peak=$h; sleep 0.5; done; wait $pid; "
                  "echo \"exit=$? peak=$peak\"; tail -n 1 /tmp/install.log")
        start = time.monotonic()
        output = self.device.run_check(script, timeout=1800)
        seconds = time.monotonic() - start
        found = re.search(r"exit=(\d+) peak=(\d+)", output)
        if found.group(1) != "0":
            raise RuntimeError(f"{self.name} install failed: {output}")
        self.device.run(f"{self.rollback_command} >/dev/null 2>&1", timeout=300)
        return seconds, int(found.group(2)) / 1024, output.strip().splitlines()[-1]


def polls(server_log: Path) -> int:
    return server_log.read_text(errors="replace").count("/deployments/next")


def measure(agent: Agent, server_log: Path, count: int, url: str) -> dict:
    """Enrolled already: restart, time to the first poll, then `count` idle polls."""
    before = polls(server_log)
    start = time.monotonic()
    agent.start()
    wait_for(lambda: polls(server_log) > before, timeout=600, interval=0.1,
             what=f"{agent.name}'s first poll")
    result = {"start-up to the first poll (s)": time.monotonic() - start}
    cpu_start, first = agent.cpu_seconds(), polls(server_log)
    wait_for(lambda: polls(server_log) >= first + count, timeout=60 * count, interval=1,
             what=f"{count} polls")
    result[f"CPU seconds over {count} idle polls"] = agent.cpu_seconds() - cpu_start
    memory = agent.memory()
    result["idle RSS (MiB)"], result["idle PSS (MiB)"] = memory["Rss"], memory["Pss"]
    agent.stop()
    seconds, peak, _ = agent.install_peak(url)
    result["peak RSS, 192 MiB install (MiB)"] = peak
    result["install time (s)"] = seconds
    return result


def disk_kib(device: Device, paths: list[str]) -> int:
    output = device.run_check("du -sk " + " ".join(paths) + " 2>/dev/null | "
                              "awk '{s += $1} END {print s}'")
    return int(output.strip().splitlines()[-1])


def prepare_mender(device: Device, url: str, certificate: str) -> None:
    """mender-client from the second disk: its fixed paths (/usr/share/mender, the
    identity script) on the root filesystem, remounted read-write for the benchmark."""
    device.run_check("mount -o remount,rw / && mkdir -p /mnt/mender /data/mender && "
                     "mount -o ro /dev/vdb /mnt/mender && mkdir -p /usr/share/mender/identity && "
                     "ln -sfn /mnt/mender/usr/share/mender/inventory /usr/share/mender/inventory "
                     "&& ln -sfn /mnt/mender/usr/share/mender/modules /usr/share/mender/modules")
    put_file(device, "/usr/share/mender/identity/mender-device-identity",
             f"#!/bin/sh\necho mac={MENDER_MAC}\n".encode())
    device.run_check("chmod 755 /usr/share/mender/identity/mender-device-identity && "
                     "echo device_type=qemu-arm64 > /data/mender/device_type")
    config = {"ServerURL": url, "ServerCertificate": certificate,
              "UpdatePollIntervalSeconds": 1, "InventoryPollIntervalSeconds": 86400,
              "RetryPollIntervalSeconds": 1, "RootfsPartA": "/dev/vda2",
              "RootfsPartB": "/dev/vda3", "DeviceTypeFile": "/data/mender/device_type",
              "ArtifactVerifyKey": "/etc/tern/artifact.pub"}
    put_file(device, "/data/mender.conf", json.dumps(config).encode())


def enroll(agent: Agent, admin: ServerAdmin) -> None:
    agent.start()
    device_id = admin.accept(agent.identity, timeout=600)
    wait_for(lambda: admin.attributes(device_id).get("artifact_name"), timeout=600,
             what=f"{agent.name}'s inventory")
    agent.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=100, help="idle polls to count CPU over")
    parser.add_argument("--install-only", action="store_true",
                        help="only the installs' peak RSS and time (no daemon, no server)")
    args = parser.parse_args()
    subprocess.run([sys.executable, str(ROOT / "images" / "build.py")], check=True)
    subprocess.run([sys.executable, str(ROOT / "images" / "build.py"), "--mender-client"],
                   check=True)
    load_at_start = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="tern-bench-agent-"))
    live = device = httpd = None
    results = {}
    try:
        live = LiveServer(work / "server", names=("10.0.2.2",)).start()
        admin = ServerAdmin(live)
        httpd = serve_directory(IMAGES)
        artifact_url = f"http://10.0.2.2:{httpd.server_address[1]}/release-2.mender"
        device = Device("agent", make_overlay(IMAGES / "disk.img", work / "agent.qcow2"),
                        work / "console.log", extra_disks=[IMAGES / "mender-client.ext4"])
        device.transition("shell")
        server_url = f"https://10.0.2.2:{live.port}"
        configure_daemon(device, server_url, live.certificate.read_bytes(), poll_interval=1,
                         retry_interval=1)
        device.run_check("echo 'inventory_interval = 86400.0' >> /data/tern/updater.toml")
        prepare_mender(device, server_url, "/data/tern/server.crt")
        agents = [
            Agent("tern", device, admin, {"mac": "52:54:00:12:34:56"},
                  f"{TERN} daemon", f"{TERN} install", f"{TERN} rollback"),
            Agent("mender", device, admin, {"mac": MENDER_MAC},
                  f"{MENDER} daemon", f"{MENDER} install", f"{MENDER} rollback"),
        ]
        server_log = live.output
        for agent in agents:
            if args.install_only:
                seconds, peak, _ = agent.install_peak(artifact_url)
                results[agent.name] = {"peak RSS, 192 MiB install (MiB)": peak,
                                       "install time (s)": seconds}
                print(f"{agent.name}: {results[agent.name]}", flush=True)
                continue
            enroll(agent, admin)
            results[agent.name] = measure(agent, server_log, args.polls, artifact_url)
            for part, paths in DISK[agent.name].items():
                results[agent.name][f"disk, {part} (KiB)"] = disk_kib(device, paths)
            print(f"{agent.name}: {results[agent.name]}", flush=True)
    finally:
        if httpd:
            httpd.shutdown()
        if device:
            device.close()
        if live:
            live.stop()
    shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()[0]
    print(f"\n1-minute load average: {load_at_start:.2f} at the start, {load:.2f} at the end\n")
    print("| measurement (same device, same run) | tern | mender-client 3.4 | tern / mender |")
    print("|---|---:|---:|---:|")
    for key in results["tern"]:
        tern, mender = results["tern"][key], results["mender"][key]
        ratio = f"{tern / mender:.2f}x" if mender else "-"
        print(f"| {key} | {tern:.1f} | {mender:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
