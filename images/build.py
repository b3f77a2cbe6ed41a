"""Build the emulated device: `make image` (python3 images/build.py).

Everything on the device comes from Debian bookworm arm64 packages, unpacked
with mmdebstrap's extract variant (no arm64 binary runs on the host) and packed
into ext4 and FAT images with `mkfs.ext4 -d` and mtools (no loop devices, no
mounts). The agent comes from its own package, build/deb/tern-updater_*_all.deb
(`make deb`), unpacked the same way. Outputs land in build/images/; they are rebuilt
only when the key over their inputs (these files, the package versions, the agent
package's contents) changes.

Two flavours (`--flavour`): busybox (the default, build/images: busybox init and rcS,
the fast device for fleets and most tests) and systemd (build/images-systemd: Debian's
systemd as PID 1, the agent run by its own units).
"""
import argparse
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "images"
OUT = ROOT / "build" / "images"  # the busybox flavour's, and the footprint benchmark's disk
DOWNLOADS = ROOT / "build" / "cache"

SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
# e2fsprogs: /data is checked (e2fsck -p) before it is mounted (rcS, systemd-fsck).
PACKAGES = ["busybox-static", "python3-minimal", "libpython3.11-stdlib", "libubootenv-tool",
            "python3-cryptography", "dropbear-bin", "e2fsprogs"]
INITRAMFS_MODULES = ["virtio_pci", "virtio_blk", "ext4"]
# QEMU's i6300esb (qemu/launch.py); the initramfs loads it last, with its timeout.
WATCHDOG_MODULE = "i6300esb"
# Long enough for a healthy boot to reach `tern-updater resume` (which feeds it during
# the health checks, then stops it) under TCG on a loaded host: 8-10 s idle, measured
# in RELIABILITY.md; a hang resets the board this long after the initramfs.
WATCHDOG_TIMEOUT = 60
# USB sticks (docs/usb-install.md): rcS loads the controller's driver (QEMU's qemu-xhci),
# mdev the others when a stick comes (mass storage, SCSI disk), tern-usb-mdev FAT, and the
# kernel FAT's code page and charset (ascii: Debian's kernel's default iocharset).
USB_MODULES = ["xhci_pci", "usb_storage", "sd_mod", "vfat", "nls_cp437", "nls_ascii"]
ROOTFS_MODULES = INITRAMFS_MODULES + ["virtio_net", "virtio_rng", WATCHDOG_MODULE] + USB_MODULES
AGENT_DEBS = ROOT / "build" / "deb"
NEXT_AGENT_DEBS = ROOT / "build" / "deb-next"  # the same sources as a newer version
AGENT_DIR = "usr/lib/tern-updater"  # the package's private directory
DEVICE_TYPE = "qemu-arm64"

MIB = 1024 * 1024
SECTOR = 512
ENV_SIZE = 0x4000
ROOTFS_SIZE = 192 * MIB
# name, first sector, size, GPT type
PARTITIONS = [
    ("boot", 2048, 16 * MIB, "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"),
    ("rootA", 2048 + 32768, ROOTFS_SIZE, "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
    ("rootB", 2048 + 32768 + 393216, ROOTFS_SIZE, "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
    ("data", 2048 + 32768 + 2 * 393216, 64 * MIB, "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
]
INITIAL_ENV = {"mender_boot_part": "2", "mender_boot_part_hex": "2", "upgrade_available": "0",
               "bootcount": "0", "bootlimit": "1"}
# release name -> what makes it special
RELEASES = {
    "release-1": "the factory image, in both slots of disk.img",
    "release-2": "a good update",
    "release-broken": "/sbin/init is not executable: the kernel panics",
    "release-unhealthy": "boots, but a health check in /etc/tern/health.d fails",
    "release-hang": "/sbin/init sleeps for ever: the watchdog resets the board",
    "release-next-agent": "a good update carrying the agent's next version (`make deb-next`)",
}
# Release pairs for delta updates, built only by `make delta-images` (build_delta): each is
# release-1 with one change, and a block-indexed artifact (bench/delta.py measures them).
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
DELTA_PACKAGE = "libssl3"  # replaced by its version in bookworm-security
DELTA_CONFIG = "etc/profile"
DELTA_RELEASES = {
    "release-1-package": f"release-1 with {DELTA_PACKAGE} at its bookworm-security version",
    "release-1-config": f"release-1 with one configuration file changed (/{DELTA_CONFIG})",
}
FAKE_TIME = "1700000000"  # fixed timestamps inside the filesystems
# One UUID (and directory hash seed) for the rootfs of every release: see make_ext4.
ROOTFS_UUID = "7e4e0000-0000-4000-8000-0000000000f5"
# The filesystem's block, the block index's (artifact.block_index): mke2fs would pick 1 KiB
# for 192 MiB, and a file that moves by 1 KiB changes every 4 KiB block it spans.
BLOCK_SIZE = 4096


@dataclass(frozen=True)
class Flavour:
    """What differs between the images: the packages, the files laid over them (in order),
    the releases built, and a last step on the assembled tree."""

    name: str
    out: Path
    packages: list[str]
    overlays: list[Path]
    releases: dict[str, str]
    finish: Callable[[Path], None] = lambda tree: None
    about: str = ""


# systemd as PID 1: Debian's systemd, its /sbin/init (systemd-sysv) and udev (device units,
# so the fstab's /data mount and the network find their devices).
# util-linux: the /sbin/fsck that systemd-fsck runs for the fstab's /data.
SYSTEMD_PACKAGES = ["systemd", "systemd-sysv", "udev", "util-linux"]
# Units enabled on the systemd image (as `systemctl enable` would; no maintainer script runs).
SYSTEMD_UNITS = ["tern-updater-resume.service", "tern-updater.service",
                 "systemd-networkd.service", "dropbear.service", "tern-console.service",
                 "tern-slot.service"]
# Masked: agetty is not in the image (tern-console.service is the console): a getty would
# fail and start again for ever (Restart=always, RestartSec=0), getty-static.service's five
# on tty2-6 included, hundreds of jobs a minute on the one emulated CPU. The rest has
# nothing to do on this device and costs seconds of each boot under emulation.
SYSTEMD_MASKED = ["serial-getty@ttyAMA0.service", "getty@tty1.service", "getty-static.service",
                  "systemd-firstboot.service", "systemd-binfmt.service",
                  "proc-sys-fs-binfmt_misc.automount", "sys-kernel-debug.mount",
                  "sys-kernel-tracing.mount", "sys-kernel-config.mount",
                  "sys-fs-fuse-connections.mount", "dev-hugepages.mount", "dev-mqueue.mount",
                  "systemd-pcrphase-sysinit.service", "systemd-pcrphase.service",
                  "systemd-repart.service", "systemd-update-utmp.service",
                  "systemd-machine-id-commit.service", "systemd-journald-audit.socket",
                  "systemd-initctl.socket"]


def run(*cmd, **kwargs):
    return subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def source_files(*dirs: Path) -> list[Path]:
    return sorted(p for d in dirs for p in d.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def fetch_debian(packages: list[str]) -> Path:
    """Unpack the arm64 packages and the kernel once per package list (build/cache)."""
    key = digest(json.dumps([SUITE, MIRROR, packages, ROOTFS_MODULES]).encode())
    tree = DOWNLOADS / f"debian-{key}"
    if (tree / "versions.txt").exists():
        return tree
    shutil.rmtree(tree, ignore_errors=True)
    DOWNLOADS.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=DOWNLOADS))
    # The hook runs on the host with the target's apt config: list what was
    # fetched and download the kernel that linux-image-arm64 points to.
    hook = ('export APT_CONFIG="$MMDEBSTRAP_APT_CONFIG"; '
            'ls "$1"/var/cache/apt/archives | grep "\\.deb$" > "$1"/versions.txt; '
            'kernel=$(apt-cache depends linux-image-arm64 '
            '| sed -n "s/.*Depends: \\(linux-image-6.*\\)/\\1/p"); '
            'mkdir "$1"/kernel-deb && cd "$1"/kernel-deb && apt-get download -q "$kernel"')
    run("mmdebstrap", "--quiet", "--variant=extract", "--architectures=arm64", "--mode=root",
        "--format=directory", f"--include={','.join(packages)}", f"--extract-hook={hook}",
        SUITE, tmp / "root", MIRROR)
    root = tmp / "root"
    kernel_deb = next((root / "kernel-deb").glob("*.deb"))
    run("dpkg-deb", "-x", kernel_deb, tmp / "kernel")
    with open(root / "versions.txt", "a") as versions:
        print(kernel_deb.name, file=versions)
    kernel_root = tmp / "kernel"
    release = next(kernel_root.glob("lib/modules/*")).name
    run("depmod", "-b", kernel_root, release)
    for module in sorted(set(modules_in_order(kernel_root, release, ROOTFS_MODULES))):
        target = root / module.relative_to(kernel_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(module, target)
    for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        shutil.copy2(kernel_root / "lib/modules" / release / name, root / "lib/modules" / release)
    (root / "boot").mkdir(exist_ok=True)
    shutil.copy2(next(kernel_root.glob("boot/vmlinuz-*")), root / "boot/vmlinuz")
    shutil.rmtree(root / "kernel-deb")
    root.rename(tree)
    shutil.rmtree(tmp)
    return tree


def fetch_package_update(debian: Path) -> Path:
    """DELTA_PACKAGE at its bookworm-security version, fetched once (build/cache) by apt with
    a configuration of its own (arm64, that suite alone); it must differ from the image's."""
    key = digest((debian / "versions.txt").read_bytes(), DELTA_PACKAGE.encode())
    cache = DOWNLOADS / f"update-{key}"
    found = sorted(cache.glob(f"{DELTA_PACKAGE}_*.deb"))
    if found:
        return found[0]
    with tempfile.TemporaryDirectory(dir=DOWNLOADS) as tmp:
        apt = Path(tmp)
        for d in ["etc/apt/apt.conf.d", "etc/apt/preferences.d", "etc/apt/sources.list.d",
                  "var/lib/apt/lists/partial", "var/cache/apt/archives/partial", "var/lib/dpkg"]:
            (apt / d).mkdir(parents=True)
        (apt / "var/lib/dpkg/status").touch()
        (apt / "etc/apt/sources.list").write_text(
            "deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
            f"{SECURITY_MIRROR} {SUITE}-security main\n")
        options = ["-q", "-o", f"Dir={apt}", "-o", f"Dir::State::status={apt}/var/lib/dpkg/status",
                   "-o", "APT::Architecture=arm64", "-o", "APT::Architectures=arm64",
                   "-o", "APT::Sandbox::User=root"]
        run("apt-get", *options, "update", capture_output=True)
        run("apt-get", *options, "download", DELTA_PACKAGE, cwd=apt, capture_output=True)
        deb = next(apt.glob(f"{DELTA_PACKAGE}_*.deb"))
        if deb.name in (debian / "versions.txt").read_text().split():
            sys.exit(f"images: {deb.name} from {SUITE}-security is the image's own version: "
                     "no package pair to build (choose another DELTA_PACKAGE)")
        cache.mkdir(parents=True, exist_ok=True)
        return Path(shutil.move(deb, cache / deb.name))


def modules_in_order(root: Path, release: str, names: list[str]) -> list[Path]:
    """The .ko files for `names` and their dependencies, dependencies first."""
    paths = []
    for name in names:  # modprobe --show-depends takes one module at a time
        out = run("modprobe", "-d", root, "-S", release, "--show-depends", name,
                  capture_output=True, text=True).stdout
        paths += [Path(line.split()[1]) for line in out.splitlines() if line.startswith("insmod ")]
    return list(dict.fromkeys(paths))


def agent_package(target: str = "deb", directory: Path = AGENT_DEBS) -> Path:
    """The agent's package, rebuilt first if its sources changed since (make deb)."""
    run("make", "--no-print-directory", "-s", "-C", ROOT, target)
    debs = sorted(directory.glob("tern-updater_*_all.deb"))
    if len(debs) != 1:
        sys.exit(f"images: need exactly one tern-updater_*_all.deb in {directory}, "
                 f"found {len(debs)}: run `make {target}`")
    return debs[0]


def next_agent_package() -> Path:
    """The same agent as the next version: an OTA to release-next-agent updates the agent."""
    return agent_package("deb-next", NEXT_AGENT_DEBS)


def package_version(deb: Path) -> str:
    return run("dpkg-deb", "-f", deb, "Version", capture_output=True, text=True).stdout.strip()


def upgrade_agent(tree: Path, deb: Path) -> None:
    """Put the package's newer version into a release tree, as dpkg upgrades it: its files
    replace the old ones, the image's configuration stays (a changed conffile is kept)."""
    shutil.rmtree(tree / AGENT_DIR)
    unpack_over(tree, deb, keep_configuration=True)
    compile_python(tree, tree / AGENT_DIR)


def unpack_over(tree: Path, deb: Path, keep_configuration: bool = False,
                strip: bool = False) -> None:
    """Unpack a package's files over a tree: with `keep_configuration` not its /etc, with
    `strip` not what remove_junk removes (as for the image's Debian packages). Each file is
    replaced, never written into: the tree shares its inodes with the others."""
    with tempfile.TemporaryDirectory() as tmp:
        unpacked = Path(tmp)
        run("dpkg-deb", "-x", deb, unpacked)
        if keep_configuration:
            shutil.rmtree(unpacked / "etc")
        if strip:
            remove_junk(unpacked)
        for path in sorted(unpacked.rglob("*")):
            target = tree / path.relative_to(unpacked)
            if path.is_dir() and not path.is_symlink():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.unlink(missing_ok=True)
                shutil.copy2(path, target, follow_symlinks=False)


def package_contents(deb: Path) -> list[bytes]:
    """Each file's path, mode and bytes: a rebuilt package with new timestamps is the same."""
    tar = run("dpkg-deb", "--fsys-tarfile", deb, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        return [member.name.encode() + oct(member.mode).encode()
                + (archive.extractfile(member).read() if member.isfile() else b"")
                for member in archive]


def input_key(flavour: Flavour, debian: Path, agent: Path, next_agent: Path) -> str:
    """Over images/ without the other flavours' overlays: a change to one flavour's files
    leaves the other's image alone."""
    others = {d for f in FLAVOURS.values() for d in f.overlays} - set(flavour.overlays)
    files = [f for f in source_files(HERE) if not any(d in f.parents for d in others)]
    return digest(flavour.name.encode(), (debian / "versions.txt").read_bytes(),
                  *package_contents(agent), *package_contents(next_agent),
                  *(str(f.relative_to(ROOT)).encode() + f.read_bytes() for f in files))


def make_keys(keys: Path) -> None:
    """A test signing key for artifacts and an SSH key for the device's root."""
    keys.mkdir(parents=True, exist_ok=True)
    if not (keys / "artifact.key").exists():
        genpkey = subprocess.run(["openssl", "genpkey", "-algorithm", "RSA",
                                  "-pkeyopt", "rsa_keygen_bits:3072"],
                                 check=True, capture_output=True)
        run("openssl", "rsa", "-traditional", "-out", keys / "artifact.key", input=genpkey.stdout,
            capture_output=True)
        run("openssl", "rsa", "-in", keys / "artifact.key", "-pubout",
            "-out", keys / "artifact.pub", capture_output=True)
    if not (keys / "ssh_ed25519").exists():
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tern-test",
            "-f", keys / "ssh_ed25519")


def write(path: Path, text: str, mode: int = 0o644) -> None:
    """Write a file in a tree made with hard links without touching the other trees."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.write_text(text)
    path.chmod(mode)


def assemble_rootfs(flavour: Flavour, debian: Path, agent: Path, tree: Path,
                    env_offsets: list[int], keys: Path) -> None:
    run("cp", "-a", debian, tree)
    remove_junk(tree)
    # Busybox applets: the list comes from the host's busybox-static of the same version.
    applets = run("busybox", "--list-full", capture_output=True, text=True).stdout.split()
    for applet in applets:
        link = tree / applet
        if not link.exists() and not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")
    # The agent as a device maker's build installs it; no maintainer script runs (they
    # are the target's), so the image's own files below (its updater.toml, rcS) win
    # over the package's defaults, and the byte-compiling of its postinst is done here.
    run("dpkg-deb", "-x", agent, tree)
    for overlay in flavour.overlays:
        shutil.copytree(overlay, tree, dirs_exist_ok=True, symlinks=True)
    (tree / "etc/shadow").chmod(0o600)
    for d in ["proc", "sys", "run", "tmp", "data", "root/.ssh", "etc/dropbear"]:
        (tree / d).mkdir(parents=True, exist_ok=True)
    (tree / "tmp").chmod(0o1777)
    write(tree / "etc/fw_env.config", "# device offset size: two redundant copies\n"
          + "".join(f"/dev/vda {offset:#x} {ENV_SIZE:#x}\n" for offset in env_offsets))
    write(tree / "root/.ssh/authorized_keys", (keys / "ssh_ed25519.pub").read_text(), 0o600)
    write(tree / "etc/tern/artifact.pub", (keys / "artifact.pub").read_text())
    # The stdlib, Debian's Python packages (cryptography: its postinst compiles them too;
    # without, the first import in each freshly written slot compiles them on the device,
    # the agent's first signature after an update included) and the agent.
    compile_python(tree, tree / "usr/lib/python3.11", tree / "usr/lib/python3/dist-packages",
                   tree / AGENT_DIR)
    flavour.finish(tree)
    release = next((tree / "lib/modules").iterdir()).name
    run("depmod", "-b", tree, release)
    make_initramfs(tree, release)


def remove_junk(tree: Path) -> None:
    """What the device does not need of the packages: documentation, apt's lists, tests."""
    for junk in ["usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
                 "usr/share/lintian", "var/cache/apt", "var/lib/apt", "versions.txt",
                 *(f"usr/lib/python3.11/{d}" for d in
                   ["test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
                    "pydoc_data", "distutils/tests", "unittest/test"])]:
        path = tree / junk
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def compile_python(tree: Path, *directories: Path) -> None:
    """Debian's postinsts compile .pyc; precompile here (same CPython 3.11 on both sides)."""
    run(sys.executable, "-m", "compileall", "-q", "-j0", "--invalidation-mode", "unchecked-hash",
        "-s", tree, "-p", "/", *directories, capture_output=True)


def finish_systemd(tree: Path) -> None:
    """systemd as PID 1, set up on the host as Debian's maintainer scripts would: the
    system users (systemd-sysusers --root), a machine id, the units enabled and masked
    (systemctl --root). Busybox's init files go."""
    for path in ["etc/inittab", "etc/init.d/rcS", "etc/init.d/rcK"]:
        (tree / path).unlink()
    run("systemd-sysusers", f"--root={tree}", capture_output=True)
    # As after a package upgrade's `systemd-update-done`: no ConditionNeedsUpdate= unit
    # (ldconfig, hwdb, sysusers again) runs at boot (the releases' times are all equal).
    for updated in ["etc/.updated", "var/.updated"]:
        write(tree / updated, "")
    # Fixed, so a first boot never runs systemd-firstboot or writes /etc; every release
    # of the emulated device has the same (a real device makes its own at first boot).
    write(tree / "etc/machine-id", uuid.uuid5(uuid.NAMESPACE_URL, "tern:systemd").hex + "\n")
    run("systemctl", f"--root={tree}", "--quiet", "enable", *SYSTEMD_UNITS)
    run("systemctl", f"--root={tree}", "--quiet", "mask", *SYSTEMD_MASKED)
    run("systemctl", f"--root={tree}", "--quiet", "set-default", "multi-user.target")


def make_initramfs(tree: Path, release: str) -> None:
    """A busybox initramfs that loads virtio/ext4 (modules in Debian's kernel), arms the
    watchdog and mounts root=."""
    with tempfile.TemporaryDirectory() as tmp:
        initramfs = Path(tmp)
        for d in ["bin", "proc", "dev", "lib/modules"]:
            (initramfs / d).mkdir(parents=True)
        shutil.copy2(tree / "bin/busybox", initramfs / "bin/busybox")
        for applet in ["sh", "mount", "umount", "insmod", "sed", "seq", "sleep", "mkdir",
                       "switch_root"]:
            (initramfs / "bin" / applet).symlink_to("busybox")
        order = []
        for module in modules_in_order(tree, release, INITRAMFS_MODULES + [WATCHDOG_MODULE]):
            shutil.copy2(module, initramfs / "lib/modules" / module.name)
            arguments = f" heartbeat={WATCHDOG_TIMEOUT}" if module.stem == WATCHDOG_MODULE else ""
            order.append(f"/lib/modules/{module.name}{arguments}\n")
        (initramfs / "modules.order").write_text("".join(order))
        shutil.copy2(HERE / "initramfs-init", initramfs / "init")
        files = sorted(str(p.relative_to(initramfs)) for p in initramfs.rglob("*"))
        for name in files:  # cpio keeps each file's mtime
            os.utime(initramfs / name, (int(FAKE_TIME), int(FAKE_TIME)), follow_symlinks=False)
        cpio = run("cpio", "--quiet", "-o", "-H", "newc", "--reproducible", cwd=initramfs,
                   input="\n".join(files).encode(), capture_output=True).stdout
        gz = run("gzip", "-9n", input=cpio, capture_output=True).stdout
        (tree / "boot/initrd.img").write_bytes(gz)


def make_release(out: Path, base: Path, work: Path, name: str,
                 next_agent: Path | None = None, package_update: Path | None = None) -> Path:
    tree = work / name
    run("cp", "-al", base, tree)
    if name == "release-next-agent":
        upgrade_agent(tree, next_agent)
    if name == "release-1-package":
        unpack_over(tree, package_update, strip=True)
    if name == "release-1-config":
        write(tree / DELTA_CONFIG, (base / DELTA_CONFIG).read_text() + "export TZ=UTC0\n")
    write(tree / "etc/tern-release", f"{name}\n")
    write(tree / "etc/mender/artifact_info", f"artifact_name={name}\n")
    if name == "release-broken":
        write(tree / "sbin/init", "this is not a program\n", 0o755)
    if name == "release-unhealthy":
        write(tree / "etc/tern/health.d/50-always-fails",
              "#!/bin/sh\necho 'release-unhealthy: failing on purpose' >&2\nexit 1\n", 0o755)
    if name == "release-hang":  # a hang before `tern-updater resume`: only the watchdog helps
        write(tree / "sbin/init", "#!/bin/sh\necho 'release-hang: init hangs'\n"
              "while :; do sleep 3600; done\n", 0o755)
    image = out / f"{name}.ext4"
    make_ext4(tree, image, ROOTFS_SIZE, "rootfs", ROOTFS_UUID)
    return image


def make_ext4(tree: Path, image: Path, size: int, label: str, fs_uuid: str) -> None:
    """An ext4 image of `tree`, byte for byte the same for the same tree, whenever and
    wherever it is built. Every release shares `fs_uuid`, which also seeds the directory
    hashes and every metadata checksum: with one UUID per release, each inode table,
    bitmap and directory block would differ between two releases (the checksums), and
    a delta update would resend them all."""
    for path in [tree, *tree.rglob("*")]:
        os.utime(path, (int(FAKE_TIME), int(FAKE_TIME)), follow_symlinks=False)
    image.unlink(missing_ok=True)
    # mke2fs -d sorts each directory with the locale's collation: C, the same everywhere.
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": FAKE_TIME, "LC_ALL": "C"}
    run("mkfs.ext4", "-q", "-F", "-b", str(BLOCK_SIZE), "-L", label, "-U", fs_uuid,
        "-E", f"hash_seed={fs_uuid}", "-d", tree, image, f"{size // 1024}k",
        capture_output=True, env=env)
    # mke2fs 1.47.0 copies each inode's ctime from the tree (the time it was made here,
    # which no one can set back); debugfs sets them all to FAKE_TIME.
    with tempfile.NamedTemporaryFile("w", suffix=".debugfs") as commands:
        for path in sorted(tree.rglob("*")):
            inside = f"/{path.relative_to(tree)}"
            if '"' in inside or "\n" in inside:
                sys.exit(f"images: cannot set the ctime of {inside!r} with debugfs")
            commands.write(f'sif "{inside}" ctime @{FAKE_TIME}\n')
        commands.write(f"sif / ctime @{FAKE_TIME}\n")
        commands.flush()
        errors = run("debugfs", "-w", "-f", commands.name, image, capture_output=True,
                     text=True, env=env).stderr.splitlines()[1:]  # after its banner
        if errors:
            sys.exit(f"images: debugfs could not set the ctimes in {image.name}: {errors[0]}")
    os.utime(image, (int(FAKE_TIME), int(FAKE_TIME)))  # the artifact's tar keeps it


def env_blob(flag: int) -> bytes:
    """One redundant environment copy (CRC | flag | data), made by U-Boot's mkenvimage."""
    text = "".join(f"{k}={v}\n" for k, v in INITIAL_ENV.items())
    with tempfile.NamedTemporaryFile() as out:
        run("mkenvimage", "-r", "-p", "0", "-s", hex(ENV_SIZE), "-o", out.name, "-",
            input=text.encode())
        blob = bytearray(Path(out.name).read_bytes())
    blob[4] = flag
    return bytes(blob)


def make_boot_partition(work: Path) -> tuple[Path, list[int]]:
    """FAT boot partition: both environment copies first (so they are contiguous), then boot.scr.

    Returns the image and the byte offsets of the copies inside the partition.
    """
    image = work / "boot.vfat"
    # --invariant: a fixed time for the label (and a volume id, which -i after it replaces)
    run("mkfs.vfat", "--invariant", "-C", "-F", "16", "-n", "BOOT", "-i", "7e4e0001", image,
        PARTITIONS[0][2] // 1024, capture_output=True)
    env_files = []
    for name, flag in [("uboot.env", 1), ("uboot-redund.env", 0)]:
        (work / name).write_bytes(env_blob(flag))
        env_files.append(work / name)
    mtools_env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "SOURCE_DATE_EPOCH": FAKE_TIME}
    for path in env_files:
        os.utime(path, (int(FAKE_TIME), int(FAKE_TIME)))
        run("mcopy", "-m", "-i", image, path, "::/", env=mtools_env)
    offsets = [fat_file_offset(image, path.name, mtools_env) for path in env_files]
    return image, offsets


def fat_file_offset(image: Path, name: str, env: dict) -> int:
    """Byte offset of a contiguous file's data inside a FAT16 image."""
    shown = run("mshowfat", "-i", image, f"::/{name}", capture_output=True, text=True,
                env=env).stdout
    clusters = shown.split("<", 1)[1].split(">", 1)[0]
    assert "," not in clusters, f"{name} is fragmented: {shown}"
    first = int(clusters.split("-")[0])
    boot = image.read_bytes()[:64]
    sector, per_cluster, reserved, fats, root_entries = struct.unpack_from("<HBHBH", boot, 11)
    fat_sectors = struct.unpack_from("<H", boot, 22)[0]
    data_start = (reserved + fats * fat_sectors) * sector + root_entries * 32
    return data_start + (first - 2) * per_cluster * sector


def add_boot_script(image: Path, work: Path, env_blocks: list[int]) -> None:
    script = (HERE / "boot.cmd").read_text()
    script = script.replace("@ENV1_BLK@", hex(env_blocks[0])).replace("@ENV2_BLK@",
                                                                       hex(env_blocks[1]))
    (work / "boot.cmd").write_text(script)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "SOURCE_DATE_EPOCH": FAKE_TIME}
    run("mkimage", "-A", "arm64", "-O", "linux", "-T", "script", "-C", "none",  # its header's time
        "-n", "tern A/B boot", "-d", work / "boot.cmd", work / "boot.scr", capture_output=True,
        env=env)
    os.utime(work / "boot.scr", (int(FAKE_TIME), int(FAKE_TIME)))
    run("mcopy", "-m", "-i", image, work / "boot.scr", "::/", env=env)


def make_disk(out: Path, parts: dict[str, Path]) -> Path:
    disk = out / "disk.img"
    disk.unlink(missing_ok=True)
    name, start, size, _ = PARTITIONS[-1]
    with open(disk, "wb") as f:
        f.truncate((start + size // SECTOR + 2048) * SECTOR)
    table = "label: gpt\nlabel-id: 7E4E0000-0000-4000-8000-000000000000\n" + "".join(
        f"start={start}, size={size // SECTOR}, type={gpt_type}, name={name}, "
        f"uuid=7E4E0000-0000-4000-8000-00000000000{i + 1}\n"
        for i, (name, start, size, gpt_type) in enumerate(PARTITIONS))
    run("sfdisk", "-q", disk, input=table.encode())
    for name, start, _, _ in PARTITIONS:
        run("dd", f"if={parts[name]}", f"of={disk}", "bs=1M", f"seek={start * SECTOR}",
            "oflag=seek_bytes", "conv=notrunc,sparse", "status=none")
    return disk


def make_data_partition(work: Path) -> Path:
    image = work / "data.ext4"
    fs_uuid = "7e4e0000-0000-4000-8000-00000000da7a"
    run("mkfs.ext4", "-q", "-F", "-L", "data", "-U", fs_uuid, "-E", f"hash_seed={fs_uuid}",
        image, f"{PARTITIONS[3][2] // 1024}k", capture_output=True,
        env={**os.environ, "E2FSPROGS_FAKE_TIME": FAKE_TIME})
    return image


def make_artifacts(out_dir: Path, releases: dict[str, str], keys: Path,
                   block_index: bool = False) -> list[str]:
    """Signed Mender artifacts of the releases, written by our own tern-artifact."""
    tool = shutil.which("tern-artifact", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if not tool:
        print("images: no artifacts (tern-artifact is not installed)", file=sys.stderr)
        return []
    made = []
    for name in releases:
        out = out_dir / f"{name}.mender"
        result = subprocess.run(
            [tool, "write", "rootfs-image",
             "-f", out_dir / f"{name}.ext4", "-n", name, "-t", DEVICE_TYPE,
             "-k", keys / "artifact.key", "-o", out, *(["--block-index"] if block_index else [])],
            capture_output=True, text=True)
        if result.returncode != 0 or not out.exists():
            print(f"images: no artifacts (tern-artifact write failed: "
                  f"{(result.stderr or result.stdout).strip()[:200]})", file=sys.stderr)
            return []
        made.append(out.name)
    return made


FLAVOURS = {
    "busybox": Flavour("busybox", OUT, PACKAGES, [HERE / "rootfs"],
                       RELEASES, about="busybox init: rcS starts the agent"),
    "systemd": Flavour("systemd", ROOT / "build" / "images-systemd", PACKAGES + SYSTEMD_PACKAGES,
                       [HERE / "rootfs", HERE / "rootfs-systemd"],
                       {name: about for name, about in RELEASES.items()
                        if name not in ("release-hang", "release-next-agent")},
                       finish=finish_systemd,
                       about="systemd as PID 1: the agent's units run it"),
}


def build(flavour: Flavour = FLAVOURS["busybox"]) -> Path:
    out = flavour.out
    out.mkdir(parents=True, exist_ok=True)
    debian = fetch_debian(flavour.packages)
    agent = agent_package()
    next_agent = next_agent_package()
    key = input_key(flavour, debian, agent, next_agent)
    stamp = out / "layout.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("key") == key:
        print(f"images: up to date ({out})")
        return out
    stamp.unlink(missing_ok=True)
    make_keys(out / "keys")
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        work = Path(tmp)
        boot, env_in_partition = make_boot_partition(work)
        env_offsets = [PARTITIONS[0][1] * SECTOR + offset for offset in env_in_partition]
        add_boot_script(boot, work, [offset // SECTOR for offset in env_offsets])
        assemble_rootfs(flavour, debian, agent, work / "base", env_offsets, out / "keys")
        releases = {name: make_release(out, work / "base", work, name, next_agent)
                    for name in flavour.releases}
        factory = releases["release-1"]
        disk = make_disk(out, {"boot": boot, "rootA": factory, "rootB": factory,
                               "data": make_data_partition(work)})
    artifacts = make_artifacts(out, flavour.releases, out / "keys")
    layout = {
        "key": key,
        "flavour": flavour.name,
        "about": flavour.about,
        "disk": disk.name,
        "device_type": DEVICE_TYPE,
        "partitions": {name: {"number": i + 1, "offset": start * SECTOR, "size": size}
                       for i, (name, start, size, _) in enumerate(PARTITIONS)},
        "env": {"offsets": env_offsets, "size": ENV_SIZE, "initial": INITIAL_ENV},
        "watchdog": {"module": WATCHDOG_MODULE, "timeout": WATCHDOG_TIMEOUT},
        "agent_versions": {name: package_version(next_agent if name == "release-next-agent"
                                                 else agent) for name in flavour.releases},
        "releases": {name: {"rootfs": f"{name}.ext4", "about": about,
                            "artifact": f"{name}.mender" if f"{name}.mender" in artifacts else None}
                     for name, about in flavour.releases.items()},
        "keys": {"artifact": "keys/artifact.key", "artifact_public": "keys/artifact.pub",
                 "ssh": "keys/ssh_ed25519"},
    }
    stamp.write_text(json.dumps(layout, indent=2) + "\n")
    print(f"images: built {disk}")
    return out


def build_delta() -> Path:
    """`make delta-images`: the release pairs of DELTA_RELEASES beside release-1, as
    block-indexed artifacts, and delta.json saying what each changes. release-1 is rebuilt
    from the same inputs on the way, and must come out byte for byte as `make image` made it."""
    build()
    layout = json.loads((OUT / "layout.json").read_text())
    debian, agent = fetch_debian(PACKAGES), agent_package()
    update = fetch_package_update(debian)
    key = digest(layout["key"].encode(), *package_contents(update))
    stamp = OUT / "delta.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("key") == key:
        print(f"images: delta pairs up to date ({stamp})")
        return stamp
    stamp.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        work = Path(tmp)
        assemble_rootfs(FLAVOURS["busybox"], debian, agent, work / "base",
                        layout["env"]["offsets"], OUT / "keys")
        again = make_release(work, work / "base", work, "release-1")
        if file_digest(again) != file_digest(OUT / "release-1.ext4"):
            sys.exit("images: release-1 built again differs from build/images/release-1.ext4: "
                     "the image build is not deterministic")
        for name in DELTA_RELEASES:
            make_release(OUT, work / "base", work, name, package_update=update)
    artifacts = make_artifacts(OUT, DELTA_RELEASES, OUT / "keys", block_index=True)
    if len(artifacts) != len(DELTA_RELEASES):
        sys.exit("images: the delta pairs need their block-indexed artifacts")
    old = next(line for line in (debian / "versions.txt").read_text().split()
               if line.startswith(f"{DELTA_PACKAGE}_"))
    pairs = {name: {"from": "release-1", "rootfs": f"{name}.ext4", "artifact": f"{name}.mender",
                    "about": about} for name, about in DELTA_RELEASES.items()}
    pairs["release-1-package"]["package"] = {"name": DELTA_PACKAGE, "from": old,
                                             "to": update.name}
    pairs["release-1-config"]["file"] = f"/{DELTA_CONFIG}"
    stamp.write_text(json.dumps({"key": key, "pairs": pairs}, indent=2) + "\n")
    print(f"images: built the delta pairs ({stamp})")
    return stamp


def file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


MENDER_CLIENT = "mender-client"  # Debian's 3.4 (Go), the footprint benchmark's peer


def fetch_mender_client() -> tuple[Path, list[str]]:
    """mender-client and what it alone pulls in beside the image's packages, unpacked
    (build/cache, keyed like the image's): the tree and those packages' .deb names."""
    key = digest(json.dumps([SUITE, MIRROR, PACKAGES, MENDER_CLIENT]).encode())
    tree = DOWNLOADS / f"mender-{key}"
    if (tree / "debs.txt").exists():
        return tree, (tree / "debs.txt").read_text().split()
    base = set((fetch_debian(PACKAGES) / "versions.txt").read_text().split())
    tmp = Path(tempfile.mkdtemp(dir=DOWNLOADS))
    hook = 'mkdir "$1"/../debs && cp "$1"/var/cache/apt/archives/*.deb "$1"/../debs/'
    run("mmdebstrap", "--quiet", "--variant=extract", "--architectures=arm64", "--mode=root",
        "--format=directory", f"--include={','.join([*PACKAGES, MENDER_CLIENT])}",
        f"--extract-hook={hook}", SUITE, tmp / "root", MIRROR)
    own = sorted(deb.name for deb in (tmp / "debs").glob("*.deb") if deb.name not in base)
    for name in own:
        run("dpkg-deb", "-x", tmp / "debs" / name, tmp / "tree")
    (tmp / "tree" / "debs.txt").write_text("\n".join(own) + "\n")
    (tmp / "tree").rename(tree)
    shutil.rmtree(tmp)
    return tree, own


def build_mender_disk() -> Path:
    """build/images/mender-client.ext4: a second disk for the device, with mender-client
    and the libraries it alone needs as Debian unpacks them (mounted at /mnt/mender by
    bench/agent.py); the default images are not touched."""
    tree, _ = fetch_mender_client()
    disk = OUT / "mender-client.ext4"
    if not disk.exists() or disk.stat().st_mtime < (tree / "debs.txt").stat().st_mtime:
        OUT.mkdir(parents=True, exist_ok=True)
        run("mkfs.ext4", "-q", "-F", "-L", "mender", "-d", tree, disk, "128M",
            capture_output=True, env={**os.environ, "E2FSPROGS_FAKE_TIME": FAKE_TIME})
    return disk


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Build the emulated device's images.")
    parser.add_argument("--flavour", choices=FLAVOURS, default="busybox",
                        help="busybox (build/images) or systemd (build/images-systemd)")
    parser.add_argument("--mender-client", action="store_true",
                        help="only build/images/mender-client.ext4 (bench/agent.py)")
    parser.add_argument("--delta", action="store_true",
                        help="release-1's delta pairs beside build/images (bench/delta.py)")
    arguments = parser.parse_args()
    if arguments.mender_client:
        print(f"images: {build_mender_disk()}")
    elif arguments.delta:
        build_delta()
    else:
        build(FLAVOURS[arguments.flavour])
