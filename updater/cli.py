"""tern-updater: the device updater's command line (standalone mode).

Exit codes as Mender's: 0 success, 1 failure, 2 nothing to commit or roll back; `resume`
also 3: the update it took up failed and is over (the previous artifact runs).
"""
import contextlib
import dataclasses
import json
import subprocess
import sys
from types import SimpleNamespace

from . import __version__, forked
from . import config as config_module
from .agent import device
from .agent.standalone import FAILED, OK, Busy, Standalone
from .agent.states import State
from .agent.statestore import StateStore
from .config import Config
from .synclog import log_to


def parser():
    import argparse

    parser = argparse.ArgumentParser(prog="tern-updater",
                                     description="Install Mender artifacts into the inactive "
                                                 "A/B slot; commit after a healthy trial boot.")
    parser.add_argument("--version", action="version", version=f"tern-updater {__version__}")
    config_module.add_arguments(parser)
    common = argparse.ArgumentParser(add_help=False)
    config_module.add_arguments(common, default=argparse.SUPPRESS)
    for parser_, default in ((parser, None), (common, argparse.SUPPRESS)):
        parser_.add_argument("--log", metavar="FILE", default=default,
                             help="append the output to FILE, each line synced (the boot's "
                                  "resume and daemon: a power cut never leaves garbage)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    install = commands.add_parser("install", parents=[common],
                                  help="install an artifact from a file or an http(s) URL")
    install.add_argument("artifact", metavar="FILE|URL")
    commands.add_parser("commit", parents=[common],
                        help="commit the update (after the trial boot's health checks)")
    commands.add_parser("rollback", parents=[common], help="roll the pending update back")
    commands.add_parser("resume", parents=[common],
                        help="at boot: go on with an update a reboot or power loss interrupted")
    daemon_command = commands.add_parser(
        "daemon", parents=[common],
        help="run deployments from the server (server_url) until stopped")
    daemon_command.add_argument("--at-boot", action="store_true",
                                help="at boot: first what `resume` does, in the same process ("
                                     "one interpreter start-up instead of two)")
    status = commands.add_parser("status", parents=[common], help="the updater's state")
    status.add_argument("--json", action="store_true", help="machine-readable")
    show_artifact = commands.add_parser("show-artifact", parents=[common],
                                        help="the installed artifact's name, or FILE's")
    show_artifact.add_argument("file", metavar="FILE", nargs="?",
                               help="an artifact: its name, once its signature is verified")
    commands.add_parser("show-provides", parents=[common], help="the device's provides")
    return parser


def read_command_line(argv: list[str] | None) -> tuple:
    """("exit", code) after --help, --version or a usage error (printed), or ("run", the
    arguments, the settings or None, the settings' error or None): plain values, which
    cross from the forked child `main` reads them in."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as exit:
        return "exit", exit.code if isinstance(exit.code, int) else FAILED
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    try:
        return "run", vars(args), dataclasses.asdict(config_module.load(args)), None
    except (OSError, ValueError) as error:
        return "run", vars(args), None, str(error)


def main(argv: list[str] | None = None) -> int:
    # Read in a forked child: argparse and tomllib (0.8 MiB) serve at start only, and the
    # daemon would hold them between polls (BENCHMARKS.md).
    read = forked.in_child(lambda: read_command_line(argv))
    if read[0] == "exit":
        return read[1]
    _, arguments, settings, invalid = read
    args = SimpleNamespace(**arguments)
    if args.log:
        try:
            log_to(args.log)
        except OSError as error:
            print(f"tern-updater: {args.log}: {error.strerror}", file=sys.stderr)
            return FAILED
    if invalid:
        print(f"tern-updater: {invalid}", file=sys.stderr)
        return FAILED
    config = Config(**settings)
    if args.command in ("show-artifact", "show-provides", "status"):
        return show(config, args)
    if args.command == "daemon":
        if args.at_boot:  # its outcome is printed; the daemon runs whatever it was
            resume_at_boot(config, args)
        return daemon(config)
    return standalone_command(config, args.command, args)


def resume_at_boot(config: Config, args: SimpleNamespace) -> None:
    """`resume`, before the daemon, in its process: one interpreter start-up at boot. With
    no update in progress (most boots) in a forked child, so that the steps it loads (the
    installers, bootloader and health checks) never stay in the idle daemon; with one,
    in this process, which goes on with it and needs them anyway."""
    try:
        idle = StateStore(config.data / "state.json").load().state is State.IDLE
    except (OSError, ValueError):
        idle = False  # resume says what is wrong
    if idle:
        forked.in_child(lambda: standalone_command(config, "resume", args))
    else:
        standalone_command(config, "resume", args)


def standalone_command(config: Config, command: str, args: SimpleNamespace) -> int:
    from .bootloader import BootloaderError  # only here: the daemon never needs it idle

    try:
        standalone = Standalone(config)
        if command == "resume":  # it takes the lock itself, feeding the watchdog
            outcome = standalone.resume()
        else:
            with standalone.exclusive():
                if command == "install":
                    outcome = standalone.install(args.artifact)
                else:
                    outcome = getattr(standalone, command)()
    except (Busy, BootloaderError, OSError, ValueError) as error:
        print(f"tern-updater: {error}", file=sys.stderr)
        return FAILED
    print(outcome.message, file=sys.stderr if outcome.code == FAILED else sys.stdout, flush=True)
    return outcome.code


def daemon(config: Config) -> int:
    from .agent.daemon import Daemon  # only here: it imports http.client and ssl

    try:
        forked.in_child(lambda: check_bootloader(config))
        Daemon(config).run()
    except (OSError, ValueError, subprocess.SubprocessError) as error:
        print(f"tern-updater: {error}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        return OK


def check_bootloader(config: Config) -> None:
    """The bootloader as a deployment will make it: a wrong backend, slot name or
    fw_env.config stops the daemon at start, not at its first deployment. (The daemon
    calls it in a forked child: the bootloader's modules never stay in the idle daemon.)"""
    from .bootloader import BootloaderError, make_bootloader

    try:
        make_bootloader(config)
    except BootloaderError as error:
        raise ValueError(str(error)) from None


def show(config: Config, args: SimpleNamespace) -> int:
    if args.command == "show-artifact" and args.file:
        return show_artifact_file(config, args.file)
    provides = device.provides(config)
    if args.command == "show-artifact":
        print(provides.get("artifact_name", "unknown"))
        return OK
    if args.command == "show-provides":
        for key, value in sorted(provides.items()):
            print(f"{key}={value}")
        return OK
    report = status_report(config, provides)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(format_status(report))
    return OK


def show_artifact_file(config: Config, path: str) -> int:
    """The name in FILE's header, once its signature is verified (verify_keys), without
    reading the payload or changing the updater's state: tern-usb-install refuses a wrongly
    signed stick with it, and leaves a stick alone whose artifact is installed already."""
    # Only here: the artifact reader pulls in cryptography, which the boot-time resume and
    # the idle daemon never need (tests/unit/updater/test_startup_imports.py).
    from artifact.errors import ArtifactError
    from artifact.reader import ArtifactReader
    from artifact.signing import load_key_file

    try:
        keys = [load_key_file(key) for key in config.verify_keys]
        with open(path, "rb") as stream, ArtifactReader(stream, keys) as reader:
            print(reader.header.name)
    except (OSError, ValueError, ArtifactError) as error:
        print(f"tern-updater: {path}: {error}", file=sys.stderr)
        return FAILED
    return OK


def status_report(config: Config, provides: dict) -> dict:
    from .bootloader import BootloaderError, make_bootloader  # only here: see standalone_command
    from .install.slots import SlotError, running_slot

    stored = StateStore(config.data / "state.json").load()
    update = stored.update
    report = {
        "state": stored.state.value,
        "store_count": stored.store_count,
        "artifact_name": provides.get("artifact_name"),
        "provides": provides,
        "update": None if update is None else {
            key: getattr(update, key) for key in ("artifact_name", "source", "kind", "payload_type",
                                             "from_slot", "to_slot", "status", "error",
                                             "paused", "deployment_id")},
        "running_slot": None,
        "boot": None,
        "last_result": None,
    }
    try:
        report["running_slot"] = running_slot(config)
    except (SlotError, OSError) as error:
        report["running_slot_error"] = str(error)
    try:
        bootloader = make_bootloader(config)
        report["boot"] = {"boot_slot": bootloader.boot_slot(),
                          "trial_pending": bootloader.trial_pending()}
    except (BootloaderError, OSError) as error:
        report["boot_error"] = str(error)
    with contextlib.suppress(FileNotFoundError):
        report["last_result"] = json.loads((config.data / "last-result.json").read_text())
    return report


def format_status(report: dict) -> str:
    lines = [f"artifact:      {report['artifact_name']}",
             f"state:         {report['state']}"
             + (" (waiting for commit or rollback)"
                if report["update"] and report["update"]["paused"]
                and report["state"] != "UpdateStatusReport" else "")]
    if report["update"]:
        update = report["update"]
        lines.append(f"update:        {update['artifact_name'] or update['source']} "
                     f"({update['kind'] or '?'}, slot {update['from_slot'] or '-'} -> "
                     f"{update['to_slot'] or '-'})")
    lines.append(f"running slot:  {report['running_slot'] or report.get('running_slot_error')}")
    boot = report["boot"]
    lines.append("boot:          " + (f"slot {boot['boot_slot']}"
                                      + (", trial pending" if boot["trial_pending"] else "")
                                      if boot else report.get("boot_error", "?")))
    last = report["last_result"]
    if last:
        lines.append(f"last update:   {last['artifact_name'] or last['source']}: "
                     f"{last['status']}" + (f" ({last['error']})" if last["error"] else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
