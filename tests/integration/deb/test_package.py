"""The device agent's Debian package under real dpkg and apt: `make deb`, then, in a throwaway
Debian bookworm root (mmdebstrap, cached under build/deb), `apt-get install ./tern-updater_*.deb`
resolves its Depends from Debian's archive, the installed agent runs, an upgrade keeps a
changed conffile and `apt-get purge` leaves nothing behind.

The root is made once (about a minute) with the Depends already downloaded, so the test
installs them from apt's cache with Debian's own index and dpkg.
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DEB_DIR = ROOT / "build" / "deb"
TEST_ROOT = DEB_DIR / "bookworm-apt-root.tar"
DEPENDS = ["python3", "python3-cryptography", "libubootenv-tool"]

pytestmark = pytest.mark.slow


def run(*cmd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True,
                          **kwargs)


def bookworm_root_tarball() -> Path:
    if not TEST_ROOT.exists():
        DEB_DIR.mkdir(parents=True, exist_ok=True)
        partial = TEST_ROOT.with_suffix(".partial")
        download = f'chroot "$1" apt-get install --download-only -y -q {" ".join(DEPENDS)}'
        run("mmdebstrap", "--quiet", "--variant=apt", "--mode=root", "--format=tar",
            "--skip=cleanup/apt/lists", "--skip=cleanup/apt/cache",
            f"--customize-hook={download}", "bookworm", partial, "http://deb.debian.org/debian")
        partial.rename(TEST_ROOT)
    return TEST_ROOT


@pytest.fixture(scope="module")
def package() -> Path:
    run("make", "deb", cwd=ROOT)
    (deb,) = DEB_DIR.glob("tern-updater_*_all.deb")
    return deb


@pytest.fixture
def chroot(tmp_path):
    """A command runner in a fresh bookworm root (its own mount namespace and /proc)."""
    root = tmp_path / "root"
    root.mkdir()
    run("tar", "-xf", bookworm_root_tarball(), "-C", root)

    def in_root(command: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["unshare", "--mount", "--pid", "--fork", f"--mount-proc={root}/proc",
             "chroot", root, "sh", "-c", f"cd / && {command}"],
            capture_output=True, text=True,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
                 "LC_ALL": "C.UTF-8"})
        assert not check or result.returncode == 0, (command, result.stdout, result.stderr)
        return result

    in_root.root = root
    yield in_root
    shutil.rmtree(root, ignore_errors=True)


def newer_version(deb: Path, work: Path, version: str) -> Path:
    """The same package as version `version`, as the next release would be."""
    tree = work / "newer"
    run("dpkg-deb", "-R", deb, tree)
    control = tree / "DEBIAN/control"
    control.write_text("".join(f"Version: {version}\n" if line.startswith("Version:") else line
                               for line in control.read_text().splitlines(keepends=True)))
    out = work / f"tern-updater_{version}_all.deb"
    run("dpkg-deb", "--root-owner-group", "-b", tree, out)
    return out


def test_install_run_upgrade_keeping_the_conffile_and_purge(package, chroot, tmp_path):
    root = chroot.root
    shutil.copy(package, root / "tmp" / package.name)
    newer = newer_version(package, tmp_path, "0.1.1")
    shutil.copy(newer, root / "tmp" / newer.name)
    assert chroot("dpkg -s python3", check=False).returncode != 0  # apt must resolve it

    install = chroot(f"apt-get install -y -q --no-install-recommends /tmp/{package.name}")
    for name in DEPENDS:
        assert f"Setting up {name} " in install.stdout, install.stdout
    assert "Setting up tern-updater (0.1.0)" in install.stdout
    assert chroot("dpkg -s tern-updater").stdout.count("Status: install ok installed") == 1
    assert "/etc/tern/updater.toml" in (root / "var/lib/dpkg/info/tern-updater.conffiles"
                                        ).read_text()
    # The private directory, byte-compiled by the postinst; nothing in site-packages.
    assert (root / "usr/lib/tern-updater/updater/cli.py").exists()
    assert list((root / "usr/lib/tern-updater/updater/__pycache__").glob("cli.*.pyc"))
    assert not (root / "usr/lib/tern-updater/artifact/cli.py").exists()
    assert not list(root.glob("usr/lib/python3*/*-packages/updater"))
    for unit in ["tern-updater.service", "tern-updater-resume.service"]:  # enabled
        link = root / "etc/systemd/system/multi-user.target.wants" / unit
        assert os.readlink(link) == f"/lib/systemd/system/{unit}"
        assert (root / "lib/systemd/system" / unit).exists()
    # USB sticks (docs/usb-install.md): udev's rule, the unit it starts, the scripts.
    assert (root / "lib/systemd/system/tern-usb-install@.service").exists()
    assert (root / "lib/udev/rules.d/99-tern-usb.rules").exists()
    for script in ["tern-usb-install", "tern-usb-mdev"]:
        assert os.access(root / "usr/share/tern" / script, os.X_OK)

    assert chroot("tern-updater --version").stdout == "tern-updater 0.1.0\n"
    assert "install an artifact" in chroot("tern-updater --help").stdout
    status = json.loads(chroot("tern-updater --config /etc/tern/updater.toml status --json"
                               ).stdout)
    assert status["state"] == "Idle" and status["update"] is None

    # A bad configuration: one line naming the file and the key, exit 1 (Mender's failure).
    (root / "etc/tern/typo.toml").write_text('sever_url = "https://ota.example.com"\n')
    typo = chroot("tern-updater --config /etc/tern/typo.toml status", check=False)
    assert (typo.returncode, typo.stdout) == (1, "")
    assert typo.stderr == "tern-updater: /etc/tern/typo.toml: unknown key 'sever_url'\n"
    missing = chroot("tern-updater --config /etc/tern/absent.toml daemon", check=False)
    assert (missing.returncode, missing.stderr) == (
        1, "tern-updater: /etc/tern/absent.toml: no such file\n")
    (root / "etc/tern/typo.toml").unlink()

    conffile = root / "etc/tern/updater.toml"
    conffile.write_text(conffile.read_text() + 'server_url = "https://ota.example.com"\n')
    upgrade = chroot(f"apt-get install -y -q --no-install-recommends /tmp/{newer.name}")
    assert "Unpacking tern-updater (0.1.1) over (0.1.0)" in upgrade.stdout, upgrade.stdout
    assert 'server_url = "https://ota.example.com"\n' in conffile.read_text()
    assert "Version: 0.1.1" in chroot("dpkg -s tern-updater").stdout
    chroot("tern-updater --config /etc/tern/updater.toml status --json")

    chroot("apt-get purge -y -q tern-updater")
    assert chroot("dpkg -s tern-updater", check=False).returncode != 0
    left = [path for pattern in ["usr/lib/tern-updater", "etc/tern", "usr/bin/tern-updater",
                                 "lib/systemd/system/tern-updater*",
                                 "lib/systemd/system/tern-usb-install@.service",
                                 "lib/udev/rules.d/99-tern-usb.rules", "usr/share/tern",
                                 "etc/systemd/system/*/tern-updater*"]
            for path in root.glob(pattern)]
    assert left == []
