"""Settings: defaults, then a TOML file (`--config`), then command-line flags.

Every setting has a flag of the same name (`data_dir` -> `--data-dir`); list settings
take their flag once per value (`--verify-key A --verify-key B`).
"""
from dataclasses import dataclass, field, fields
from pathlib import Path


def setting(default, help: str, flag: str | None = None):
    factory = (lambda: list(default)) if isinstance(default, list) else None
    metadata = {"help": help, "flag": flag}
    if factory:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Config:
    data_dir: str = setting("/var/lib/tern", "state store, provides, last result, module trees")
    bootloader: str = setting("uboot", "bootloader backend: uboot or file")
    bootloader_env: str = setting("/var/lib/tern/bootenv", "file backend: the environment file")
    fw_env_config: str = setting("/etc/fw_env.config", "uboot backend: libubootenv's config")
    rootfs_a: str = setting("/dev/vda2", "slot A (block device, loop device or regular file)")
    rootfs_b: str = setting("/dev/vda3", "slot B")
    device_type: str = setting("", "device type; empty: read device_type_file")
    device_type_file: str = setting("/var/lib/tern/device_type",
                                    "file with a 'device_type=NAME' line")
    artifact_info: str = setting("/etc/mender/artifact_info",
                                 "'artifact_name=NAME' of the factory image, until an install")
    verify_keys: list[str] = setting([], "public key (PEM) an artifact must be signed with; "
                                         "repeatable, the first that verifies wins",
                                     flag="--verify-key")
    cmdline_file: str = setting("/proc/cmdline", "where root= of the running slot is read")
    boot_id_file: str = setting("/proc/sys/kernel/random/boot_id",
                                "changes at every boot: tells a reboot from a restart")
    verify_readback: bool = setting(True, "read the written slot back and check it (CRC-32); "
                                          "an adaptive install always does (its sha256)")
    auto_reboot: bool = setting(False, "reboot into the new slot right after an install")
    reboot_command: str = setting("reboot", "command that reboots; empty: wait for a reboot")
    modules_dir: str = setting("/usr/share/mender/modules/v3", "update modules")
    module_timeout: float = setting(14400.0, "seconds an update module may run")
    scripts_dir: str = setting("/etc/mender/scripts", "root file system state scripts")
    state_script_timeout: float = setting(3600.0, "seconds a state script may run")
    state_script_retry_timeout: float = setting(1800.0, "seconds to keep retrying exit code 21")
    state_script_retry_interval: float = setting(60.0, "seconds between retries")
    health_dir: str = setting("/etc/tern/health.d", "health checks: executables, all must pass")
    health_timeout: float = setting(60.0, "seconds each health check may run")
    health_wait_processes: list[str] = setting([], "process name that must be running",
                                               flag="--health-wait-process")
    health_wait_ports: list[str] = setting([], "HOST:PORT that must accept TCP connections",
                                           flag="--health-wait-port")
    health_wait_units: list[str] = setting([], "systemd unit that must be active (none "
                                                "ordered after tern-updater-resume.service)",
                                           flag="--health-wait-unit")
    health_wait_timeout: float = setting(120.0, "seconds to wait for processes, ports and units")
    watchdog_device: str = setting("/dev/watchdog", "kept fed while health checks run")
    deployment_log_limit: int = setting(512 * 1024, "bytes of a deployment's log kept (as "
                                        "JSON): its head and tail, with a line saying what "
                                        "was cut; under the server's 1 MiB body limit")
    resume_lock_wait: float = setting(120.0, "seconds `resume` waits for another "
                                             "tern-updater command to end before giving up")
    max_store_count: int = setting(30, "state store writes per update before it is failed")
    failpoints: str = setting("", "fail points to arm (tests only), see failpoints.py")
    console_markers: str = setting("", "tests: file (e.g. /dev/console) where each state "
                                       "entered and the write progress are announced")
    server_url: str = setting("", "daemon: the management server, e.g. https://ota.example.com")
    server_certificate: str = setting("", "daemon: CA file to trust for the server; empty: "
                                          "the system's")
    poll_interval: float = setting(1800.0, "daemon: seconds between deployment checks")
    inventory_interval: float = setting(28800.0, "daemon: seconds between inventory updates")
    retry_interval: float = setting(300.0, "daemon: longest wait between retries after an error")
    identity_script: str = setting("", "daemon: prints the identity as KEY=VALUE lines; "
                                       "empty: the first ethernet interface's mac")
    download_retries: int = setting(10, "reconnections in a row without new data before a "
                                        "download fails (each resumes with HTTP Range)")
    download_timeout: float = setting(60.0, "seconds without data before a download's "
                                            "connection is dropped and resumed")
    download_deadline: float = setting(14400.0, "seconds a whole download may take; past "
                                                "them the update fails")
    download_progress_interval: int = setting(16 << 20, "bytes of a rootfs write between "
                                              "checkpoints in the state store, from which "
                                              "a download cut by power loss resumes")
    delta_max_share: float = setting(0.8, "an artifact with a block index is installed from "
                                          "the blocks the slots hold and Range requests "
                                          "unless that would download more than this share "
                                          "of the full artifact; 0: always the full artifact")
    abort_check_interval: float = setting(30.0, "daemon: seconds between checks, during a "
                                                "download, that the deployment still stands")

    @property
    def data(self) -> Path:
        return Path(self.data_dir)


# argparse and tomllib are imported where they are used: the command line and the file are
# read at start only, in a forked child (cli.read_command_line).


def add_arguments(parser, default=None) -> None:
    """`parser`: an argparse.ArgumentParser; `default=argparse.SUPPRESS` lets a
    subcommand's flags add to the main parser's."""
    import argparse

    parser.add_argument("--config", metavar="FILE", default=default,
                        help="TOML file with the settings below")
    for item in fields(Config):
        flag = item.metadata["flag"] or "--" + item.name.replace("_", "-")
        kind = item.type
        if kind is bool:
            parser.add_argument(flag, dest=item.name, action=argparse.BooleanOptionalAction,
                                default=default, help=item.metadata["help"])
        elif kind == list[str]:
            parser.add_argument(flag, dest=item.name, action="append", default=default,
                                metavar="VALUE", help=item.metadata["help"])
        else:
            parser.add_argument(flag, dest=item.name, type=kind, default=default,
                                metavar=kind.__name__.upper(), help=item.metadata["help"])


class ConfigError(ValueError):
    """A settings file the agent cannot start with; the message is one line naming it."""


TOML_TYPES = {str: "a string", bool: "true or false", int: "an integer", float: "a number",
              list[str]: "a list of strings"}


def read_file(path: str) -> dict:
    """The settings of a TOML file, each checked against Config's names and types."""
    import tomllib

    try:
        with open(path, "rb") as file:
            values = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    kinds = {item.name: item.type for item in fields(Config)}
    for key, value in values.items():
        if key not in kinds:
            raise ConfigError(f"{path}: unknown key {key!r}")
        if not fits(value, kinds[key]):
            raise ConfigError(f"{path}: {key} must be {TOML_TYPES[kinds[key]]}, "
                              f"not {value!r}")
        if kinds[key] is float:
            values[key] = float(value)
    return values


def fits(value, kind) -> bool:
    if kind == list[str]:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def load(args) -> Config:
    """The settings: defaults, the file of `args.config`, the flags (an argparse.Namespace)."""
    values = read_file(args.config) if getattr(args, "config", None) else {}
    for item in fields(Config):
        flag_value = getattr(args, item.name, None)
        if flag_value is not None:
            values[item.name] = flag_value
    return Config(**values)
