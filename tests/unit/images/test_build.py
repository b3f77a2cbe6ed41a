"""The image builder's filesystem layout: the same tree gives the same bytes, and a small
change in the tree a small change in the image (what keeps a delta update small)."""
import hashlib
import importlib.util
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SPEC = importlib.util.spec_from_file_location("images_build", ROOT / "images" / "build.py")
build = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(build)

SIZE = 8 << 20
UUID = "7e4e0000-0000-4000-8000-00000000cafe"


def make_tree(root: Path, names: list[str]) -> Path:
    """A small root filesystem, its files made in the order of `names`."""
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(hashlib.sha256(name.encode()).digest() * (200 + len(name) * 40))
    (root / "etc/hostname").write_text("device\n")
    (root / "etc/profile").write_text("export PATH=/usr/sbin:/usr/bin:/sbin:/bin\n")
    (root / "bin/sh").symlink_to("busybox")
    os.link(root / "bin/busybox", root / "bin/hardlinked")
    return root


NAMES = ["bin/busybox", "usr/lib/python3.11/os.py", "usr/lib/python3.11/json/__init__.py",
         "usr/lib/aarch64-linux-gnu/libssl.so.3", "etc/.hidden"]


def digest(image: Path) -> str:
    return hashlib.sha256(image.read_bytes()).hexdigest()


def blocks(image: Path) -> list[bytes]:
    data = image.read_bytes()
    return [data[i:i + 4096] for i in range(0, len(data), 4096)]


def test_the_same_tree_made_again_later_in_another_order_gives_the_same_image(tmp_path):
    first = tmp_path / "first.ext4"
    build.make_ext4(make_tree(tmp_path / "a", NAMES), first, SIZE, "rootfs", UUID)
    time.sleep(1.1)  # every inode of the second tree changes later (its ctime)
    second = tmp_path / "second.ext4"
    build.make_ext4(make_tree(tmp_path / "b", NAMES[::-1]), second, SIZE, "rootfs", UUID)
    assert digest(first) == digest(second)
    assert first.stat().st_mtime == second.stat().st_mtime == int(build.FAKE_TIME)
    subprocess.run(["e2fsck", "-fn", str(first)], check=True, capture_output=True)
    shown = subprocess.run(["debugfs", "-R", "stat /etc/.hidden", str(first)], check=True,
                           capture_output=True, text=True).stdout
    assert f"ctime: {int(build.FAKE_TIME):#010x}:00000000" in shown


def test_two_releases_that_differ_by_a_configuration_file_share_all_but_a_few_blocks(
        tmp_path):
    """release-1 and release-1-config, from one small base tree: besides their markers
    (/etc/tern-release, /etc/mender/artifact_info) and /etc/profile, they differ only in
    the metadata of those files (one filesystem UUID for every release: the checksums)."""
    base = make_tree(tmp_path / "base", NAMES)
    before = build.make_release(tmp_path, base, tmp_path, "release-1")
    after = build.make_release(tmp_path, base, tmp_path, "release-1-config")
    assert (tmp_path / "release-1-config/etc/profile").read_text().endswith("TZ=UTC0\n")
    old = set(blocks(before))
    new = [block for block in blocks(after) if block not in old]  # what a delta must send
    assert 1 <= len(new) <= 8, len(new)


def test_a_path_debugfs_cannot_name_stops_the_build(tmp_path):
    tree = make_tree(tmp_path / "a", NAMES)
    (tree / 'etc/a"quote').write_text("x")
    with pytest.raises(SystemExit, match="cannot set the ctime"):
        build.make_ext4(tree, tmp_path / "image.ext4", SIZE, "rootfs", UUID)
    shutil.rmtree(tree)


def test_the_boot_and_data_partitions_made_again_later_are_the_same(tmp_path):
    def partitions(work: Path) -> tuple[str, str]:
        work.mkdir()
        boot, offsets = build.make_boot_partition(work)
        build.add_boot_script(boot, work, [offset // 512 for offset in offsets])
        return digest(boot), digest(build.make_data_partition(work))

    first = partitions(tmp_path / "first")
    time.sleep(2.1)  # FAT keeps times in 2-second steps
    assert partitions(tmp_path / "second") == first


def test_a_package_unpacked_over_a_linked_tree_replaces_its_files_and_leaves_the_base(tmp_path):
    """release-1-package: the newer package's files replace the base's in the release's
    tree, a copy made of hard links (cp -al), without writing into the base's inodes."""
    package = tmp_path / "pkg"
    (package / "DEBIAN").mkdir(parents=True)
    (package / "DEBIAN/control").write_text(
        "Package: libexample\nVersion: 2\nArchitecture: arm64\nMaintainer: t <t@t>\n"
        "Description: an example\n")
    (package / "usr/lib").mkdir(parents=True)
    (package / "usr/lib/libexample.so").write_bytes(b"new")
    (package / "usr/share/doc/libexample").mkdir(parents=True)
    (package / "usr/share/doc/libexample/copyright").write_text("doc")
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(package), str(tmp_path / "p.deb")],
                   check=True, capture_output=True)
    base = tmp_path / "base"
    (base / "usr/lib").mkdir(parents=True)
    (base / "usr/lib/libexample.so").write_bytes(b"old")
    release = tmp_path / "release"
    subprocess.run(["cp", "-al", str(base), str(release)], check=True)
    build.unpack_over(release, tmp_path / "p.deb", strip=True)
    assert (release / "usr/lib/libexample.so").read_bytes() == b"new"
    assert (base / "usr/lib/libexample.so").read_bytes() == b"old"
    assert not (release / "usr/share/doc").exists()
