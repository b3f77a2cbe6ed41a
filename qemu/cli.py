"""tern-qemu: boot an emulated device with its console in this terminal, or attach to one."""
import json
import os
import select
import shutil
import subprocess
import sys
import termios
import time
import tty
from pathlib import Path

import click

from qemu.console import SHELL_PROMPT, Console
from qemu.device import free_port, make_overlay
from qemu.guest import configure_daemon, start_daemon
from qemu.launch import QemuConfig, build_command, connect_unix
from qemu.qmp import QMP

RUNTIME = Path("/tmp/tern-qemu")
DETACH_KEY = b"\x1d"  # Ctrl-]


def attach(console: Path, on_connected=None) -> None:
    """Pass the terminal through to the serial console until Ctrl-] (or QEMU exits)."""
    sock = connect_unix(console, time.monotonic() + 10)
    if on_connected:
        on_connected()
    click.echo("[console attached: Ctrl-] to detach]\r", err=True)
    stdin = sys.stdin.fileno()
    saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
    if saved:
        tty.setraw(stdin)
    try:
        while True:
            readable, _, _ = select.select([sock, stdin], [], [])
            if sock in readable:
                data = sock.recv(4096)
                if not data:
                    break
                os.write(sys.stdout.fileno(), data)
            if stdin in readable:
                data = os.read(stdin, 1024)
                if not data or DETACH_KEY in data:
                    break
                sock.sendall(data)
    finally:
        if saved:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        sock.close()
    click.echo("\n[console detached]", err=True)


def device_dir(name: str) -> Path:
    return RUNTIME / name


def is_running(name: str) -> bool:
    info = device_dir(name) / "info.json"
    if not info.exists():
        return False
    try:
        os.kill(json.loads(info.read_text())["pid"], 0)
        return True
    except ProcessLookupError:
        return False


@click.group()
def main() -> None:
    """Emulated ARM64 devices (QEMU virt + U-Boot) for Tern."""


@main.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", default="device", show_default=True, help="Name to attach to later.")
@click.option("--detach", is_flag=True, help="Keep it running; attach with `tern-qemu console`.")
def run(image: Path, name: str, detach: bool) -> None:
    """Boot a device on a fresh qcow2 overlay of IMAGE (build/images/disk.img)."""
    workdir = device_dir(name)
    if is_running(name):
        raise click.ClickException(f"{name} is already running: tern-qemu console {name}")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    config = QemuConfig(disk=make_overlay(image, workdir / "disk.qcow2"),
                        console_socket=workdir / "console", qmp_socket=workdir / "qmp",
                        ssh_port=free_port())
    with open(workdir / "qemu.log", "w") as log:
        process = subprocess.Popen(build_command(config), stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    (workdir / "info.json").write_text(json.dumps({"pid": process.pid,
                                                   "ssh_port": config.ssh_port}))
    try:
        qmp = QMP(connect_unix(config.qmp_socket, time.monotonic() + 10))
    except OSError as error:
        process.kill()
        raise click.ClickException(f"QEMU did not start:\n{(workdir / 'qemu.log').read_text()}"
                                   ) from error
    click.echo(f"{name}: ssh -p {config.ssh_port} root@127.0.0.1 "
               f"(key: build/images/keys/ssh_ed25519)", err=True)
    if detach:
        qmp.execute("cont")
        qmp.close()
        click.echo(f"{name}: running; tern-qemu console {name} / tern-qemu stop {name}", err=True)
        return
    try:
        attach(config.console_socket, on_connected=lambda: qmp.execute("cont"))
    finally:
        qmp.execute("quit")
        process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


@main.command()
@click.argument("name")
def console(name: str) -> None:
    """Attach this terminal to the console of the running device NAME."""
    if not is_running(name):
        raise click.ClickException(f"no running device named {name}")
    attach(device_dir(name) / "console")


@main.command()
@click.argument("names", nargs=-1, required=True)
def stop(names: tuple[str, ...]) -> None:
    """Power off the devices NAMES and delete their overlays."""
    for name in names:
        workdir = device_dir(name)
        if is_running(name):
            QMP(connect_unix(workdir / "qmp", time.monotonic() + 10)).execute("quit")
        shutil.rmtree(workdir, ignore_errors=True)


class Shell:
    """The shell of a detached device over its console socket (the `run_check` that
    qemu.guest's helpers use)."""

    def __init__(self, name: str, console: Console):
        self.name = name
        self.console = console

    def run_check(self, command: str, timeout: float = 60) -> str:
        output, code = self.console.run(command, time.monotonic() + timeout)
        if code != 0:
            raise click.ClickException(f"{self.name}: {command!r} exited {code}:\n{output}")
        return output


@main.command()
@click.argument("count", type=click.IntRange(1, 250))
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default="build/images/disk.img", show_default=True)
@click.option("--prefix", default="fleet", show_default=True,
              help="Names are PREFIX-1 ... PREFIX-COUNT.")
@click.option("--server-url", required=True,
              help="As the devices reach it; the host is 10.0.2.2 (QEMU's user network).")
@click.option("--server-certificate", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The CA (or self-signed) certificate the devices trust.")
@click.option("--memory", type=click.IntRange(128), default=384, show_default=True,
              help="MiB per device (one vCPU each).")
@click.option("--poll-interval", type=float, default=2.0, show_default=True)
@click.option("--boot-timeout", type=float, default=600.0, show_default=True)
def fleet(count: int, image: Path, prefix: str, server_url: str, server_certificate: Path,
          memory: int, poll_interval: float, boot_timeout: float) -> None:
    """Boot COUNT devices from IMAGE (one overlay and MAC each), each running the updater
    daemon against the server; prints their names. `tern-qemu stop NAME...` ends them."""
    names = [f"{prefix}-{number}" for number in range(1, count + 1)]
    busy = [name for name in names if is_running(name)]
    if busy:
        raise click.ClickException(f"already running: {' '.join(busy)}")
    shells = []
    try:
        for number, name in enumerate(names, 1):
            shells.append(Shell(name, start_detached(image, name, memory,
                                                     f"52:54:00:fe:00:{number:02x}")))
        deadline = time.monotonic() + boot_timeout
        for shell in shells:
            shell.console.expect(SHELL_PROMPT, deadline)
            configure_daemon(shell, server_url, server_certificate.read_bytes(),
                             poll_interval=poll_interval)
            start_daemon(shell)
            shell.console.close()
            info = json.loads((device_dir(shell.name) / "info.json").read_text())
            click.echo(f"{shell.name}: mac {info['mac']}, console log "
                       f"{device_dir(shell.name) / 'console.log'}", err=True)
    except BaseException:
        for name in names:
            if is_running(name):
                QMP(connect_unix(device_dir(name) / "qmp", time.monotonic() + 10)
                    ).execute("quit")
            shutil.rmtree(device_dir(name), ignore_errors=True)
        raise
    click.echo("\n".join(names))


def start_detached(image: Path, name: str, memory: int, mac: str) -> Console:
    """Start a device on a fresh overlay, its console attached from the first byte (so
    that the boot is seen whole) and also logged to console.log; returns the console."""
    workdir = device_dir(name)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    config = QemuConfig(disk=make_overlay(image, workdir / "disk.qcow2"),
                        console_socket=workdir / "console", qmp_socket=workdir / "qmp",
                        ssh_port=free_port(), memory_mib=memory, mac=mac,
                        console_log=workdir / "console.log")
    with open(workdir / "qemu.log", "w") as log:
        process = subprocess.Popen(build_command(config), stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    (workdir / "info.json").write_text(json.dumps({"pid": process.pid, "mac": mac,
                                                   "ssh_port": config.ssh_port}))
    deadline = time.monotonic() + 10
    console = Console(connect_unix(config.console_socket, deadline), None)
    qmp = QMP(connect_unix(config.qmp_socket, deadline))
    qmp.execute("cont")
    qmp.close()
    return console


@main.command(name="replay")
@click.argument("recording", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default="build/images", show_default=True,
              help="The image's build (layout.json, the release rootfs images, the SSH key).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Draws the partial epochs (and the groups booted, with --limit).")
@click.option("--samples", type=click.IntRange(1), default=1, show_default=True,
              help="Draws of each kind of partial epoch between two flush points.")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Boot at most this many distinct states (default: all).")
@click.option("--fresh-updates", type=click.IntRange(0), default=0, show_default=True,
              help="From the first N states checked, also a fresh update (needs --update-url).")
@click.option("--update-url", default=None,
              help="Where the guest finds release-1.mender and release-2.mender "
                   "(e.g. http://10.0.2.2:8000).")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the report (JSON) here.")
@click.option("--parallel", type=click.IntRange(1), default=1, show_default=True,
              help="Boot this many states at once, each on its own device.")
@click.option("--dry-run", is_flag=True, help="Count the states and groups, boot none.")
def replay_command(recording: Path, images: Path, seed: int, samples: int, limit: int | None,
                   fresh_updates: int, update_url: str | None, report: Path | None,
                   parallel: int, dry_run: bool) -> None:
    """Boot the crash states of a RECORDING (a directory with recording.json, the write
    log and the base disk, as testkit.replay records them): the disk at every flush point
    and sampled partial epochs between them, one boot per group of identical states."""
    from qemu import replay

    try:
        recorded = replay.Recording.load(recording)
        layout = json.loads((images / "layout.json").read_text())
        if dry_run:
            _, states, groups = replay.plan(recorded, layout, images, seed, samples)
            click.echo(f"{len(states)} states, {len(groups)} distinct; "
                       f"{sum(s.kind == 'flush' for s in states)} flush points")
            return
        urls = {name: f"{update_url}/{name}.mender" for name in ("release-1", "release-2")}
        result = replay.replay(recorded, layout, images, seed, samples, limit, fresh_updates,
                               urls if update_url else None, progress=click.echo,
                               parallel=parallel)
    except (OSError, KeyError, ValueError, replay.LogError) as error:
        raise click.ClickException(str(error)) from None
    if report:
        report.write_text(json.dumps(result.to_json(), indent=1))
    click.echo(f"{len(result.booted)} states booted, {len(result.failures)} failed")
    if result.failures:
        sys.exit(1)
