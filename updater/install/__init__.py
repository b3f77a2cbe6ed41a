"""Writing an artifact's payload: one installer per payload type (`installer.Installer`)."""
from .installer import (
    STATS,
    CannotResume,
    Fallback,
    InstallContext,
    Installer,
    InstallerFactory,
    NoPayload,
    stats_line,
)
from .modules import ModuleInstaller
from .rootfs import RootfsInstaller

# payload type -> installer; any other type goes to the update module of its name, as in
# Mender. The agent receives this table; the fleet simulator passes its own.
INSTALLERS: dict[str, InstallerFactory] = {"rootfs-image": RootfsInstaller}


def choose(installers: dict[str, InstallerFactory], payload_type: str) -> InstallerFactory:
    return installers.get(payload_type, ModuleInstaller)


__all__ = ["INSTALLERS", "STATS", "CannotResume", "Fallback", "InstallContext", "Installer",
           "InstallerFactory",
           "ModuleInstaller", "NoPayload", "RootfsInstaller", "choose", "stats_line"]
