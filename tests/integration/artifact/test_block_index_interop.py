"""An artifact with a block index stays an ordinary rootfs-image artifact for Mender: Debian's
mender-artifact 3.9 reads and validates it (signature included), and Debian's mender-client 3.4
installs it into a loop-device slot, byte for byte; the index and every chunk verify."""
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from artifact import ArtifactReader
from artifact.block_index import index_anchor, read_index, verify_chunks
from artifact.block_plan import SlotHashes, plan_fetch
from updater.bootloader.uboot import EnvCopy, UBootEnv

pytestmark = pytest.mark.interop

TERN = os.path.join(os.path.dirname(sys.executable), "tern-artifact")
DEVICE_TYPE = "tern-test-device"
ENV_SIZE = 0x4000


def image(path: Path, seed: int) -> Path:
    """2.5 MiB: random blocks (some changed by `seed`), zeros, and a short tail."""
    base = bytearray(bytes(range(256)) * 4096)  # 1 MiB, the same in every seed
    base[seed * 4096:(seed + 1) * 4096] = os.urandom(4096)
    path.write_bytes(bytes(base) + bytes(1 << 20) + os.urandom((512 << 10) + 100))
    return path


def tern_write(source: Path, out: Path, key: Path, *extra: str) -> Path:
    subprocess.run([TERN, "write", "rootfs-image", "-f", str(source), "-n", "release-2",
                    "-t", DEVICE_TYPE, "-k", str(key), "-o", str(out), "--block-index",
                    *extra], check=True, capture_output=True)
    return out


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_mender_artifact_reads_and_validates_an_indexed_artifact(tmp_path, keys, compression):
    private, public = keys["rsa"].private_path, keys["rsa"].public_path
    payload = image(tmp_path / "rootfs.ext4", 3)
    artifact = tern_write(payload, tmp_path / "indexed.mender", private,
                          "--compression", compression)
    read = subprocess.run(["mender-artifact", "read", "-k", str(public), str(artifact)],
                          capture_output=True, text=True)
    assert read.returncode == 0, read.stderr
    assert "Signature: signed and verified correctly" in read.stdout
    assert '"tern.block_index"' in read.stdout and "name:     rootfs.ext4" in read.stdout
    validate = subprocess.run(["mender-artifact", "validate", "-k", str(public), str(artifact)],
                              capture_output=True, text=True)
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert "validated successfully" in validate.stdout

    # A tampered index is refused by its signed anchor, a tampered chunk by its blocks' hashes.
    data = artifact.read_bytes()
    for position in (len(data) - 40, len(data) - 200_000):
        bad = tmp_path / "bad.mender"
        bad.write_bytes(data[:position] + bytes([data[position] ^ 1]) + data[position + 1:])
        result = subprocess.run([TERN, "validate", "-k", str(public), str(bad)],
                                capture_output=True, text=True)
        assert result.returncode == 4, result.stdout
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_mender_client_installs_an_indexed_artifact(tmp_path, keys, loop_devices):
    private = keys["rsa"].private_path
    payload = image(tmp_path / "rootfs.ext4", 5)
    artifact = tern_write(payload, tmp_path / "indexed.mender", private)
    size = payload.stat().st_size + (1 << 20)
    slots = []
    for name in ("a", "b"):
        backing = tmp_path / f"slot-{name}.img"
        backing.write_bytes(os.urandom(size))  # slot B starts with other bytes
        slots.append(loop_devices(backing))
    slot_a, slot_b = slots
    run_mender_install(tmp_path, artifact, slot_a, slot_b)
    with open(slot_b, "rb") as slot:
        assert slot.read(payload.stat().st_size) == payload.read_bytes()

    # And from what mender installed, the planner fetches only the image's short last block
    # (hashed over its 100 bytes, so never found in a slot's full blocks).
    with open(artifact, "rb") as stream, ArtifactReader(stream) as reader:
        index = read_index(stream, index_anchor(reader.header))
        verify_chunks(stream, index, reader.payload_offset, reader.compression)
        plan = plan_fetch(index, reader.payload_offset,
                          SlotHashes.of_file(slot_b, index.block_size).find,
                          artifact_size=artifact.stat().st_size,
                          index_size=index_anchor(reader.header).size)
    last = index.chunk_count - 1
    assert [(r.first, r.last) for r in plan.ranges] == [(last, last)]
    assert plan.blocks_fetched == 1 and plan.blocks_zero == 256
    assert plan.blocks_local == index.block_count - 257


def run_mender_install(work: Path, artifact: Path, slot_a: str, slot_b: str) -> None:
    """`mender install` as mender-protocol.md §4.2 and bench/install.py run it on a host: slot
    A "mounted" as /, a U-Boot environment in a file, /etc overlaid in a mount namespace."""
    part_a = slot_a.removeprefix("/dev/loop")
    env_file = work / "uboot.env"
    boot_env = {"mender_boot_part": part_a, "mender_boot_part_hex": f"{int(part_a):x}",
                "upgrade_available": "0", "bootcount": "0", "bootlimit": "1"}
    env_file.write_bytes(b"\0" * ENV_SIZE)
    UBootEnv([EnvCopy(str(env_file), 0, ENV_SIZE)]).write(boot_env)
    upper, workdir, data, fake_bin = (work / n for n in ("etc-upper", "etc-work", "data",
                                                         "fake-bin"))
    for directory in (upper / "mender", workdir, data, fake_bin):
        directory.mkdir(parents=True)
    (upper / "fw_env.config").write_text(f"{env_file} 0x0 {ENV_SIZE:#x}\n")
    (upper / "mender/artifact_info").write_text("artifact_name=release-1\n")
    (data / "device_type").write_text(f"device_type={DEVICE_TYPE}\n")
    (work / "mender.conf").write_text(json.dumps({"RootfsPartA": slot_a, "RootfsPartB": slot_b}))
    (fake_bin / "mount").write_text(f"#!/bin/sh\necho '{slot_a} on / type ext4 (rw)'\n")
    (fake_bin / "mount").chmod(0o755)
    setup = (f"/usr/bin/mount --make-rprivate / && /usr/bin/mount -t overlay overlay "
             f"-o lowerdir=/etc,upperdir={upper},workdir={workdir} /etc && exec \"$@\"")
    command = [shutil.which("mender"), "--no-syslog", "-c", str(work / "mender.conf"),
               "-d", str(data), "install", str(artifact)]
    result = subprocess.run(["unshare", "-m", "sh", "-c", setup, "sh", *command],
                            capture_output=True, text=True,
                            env={**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stdout + result.stderr
    env = UBootEnv([EnvCopy(str(env_file), 0, ENV_SIZE)]).read()
    assert env["upgrade_available"] == "1"
    assert env["mender_boot_part"] == slot_b.removeprefix("/dev/loop")



def test_where_extra_data_can_live_for_mender_artifact(tmp_path):
    """The candidates for the index's place, tried on mender-artifact 3.9 (unsigned, so that
    the manifest can change): after the tar's end-of-archive passes; an extra top-level member
    or an extra manifest entry fails."""
    payload = image(tmp_path / "rootfs.ext4", 1)
    plain = tmp_path / "plain.mender"
    subprocess.run([TERN, "write", "rootfs-image", "-f", str(payload), "-n", "release-2",
                    "-t", DEVICE_TYPE, "-o", str(plain)], check=True, capture_output=True)
    data = plain.read_bytes()
    archive_end = len(data) - 1024  # Tern's writer ends the tar with exactly two zero blocks
    assert data[archive_end:] == bytes(1024)

    def member(name: str, content: bytes) -> bytes:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        return info.tobuf(tarfile.USTAR_FORMAT) + content + bytes(-len(content) % 512)

    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        manifest_info = tar.getmember("manifest")
        manifest = tar.extractfile(manifest_info).read()
    manifest_start = manifest_info.offset
    extra_entry = manifest + b"0" * 64 + b"  tern/block-index\n"
    head_end = manifest_info.offset_data + manifest_info.size + (-manifest_info.size % 512)
    candidates = {
        "after the end-of-archive": (data + b"index bytes" * 100, None),
        "extra top-level member": (data[:archive_end] + member("tern/block-index", b"x")
                                   + bytes(1024), "invalid data file name: tern/block-index"),
        "extra manifest entry": (data[:manifest_start] + member("manifest", extra_entry)
                                 + data[head_end:], "Files found in manifest(s), that were not "
                                                    "part of artifact: tern/block-index"),
    }
    for name, (content, expected) in candidates.items():
        candidate = tmp_path / "candidate.mender"
        candidate.write_bytes(content)
        result = subprocess.run(["mender-artifact", "validate", str(candidate)],
                                capture_output=True, text=True)
        if expected is None:
            assert result.returncode == 0, f"{name}: {result.stderr}"
        else:
            assert result.returncode != 0 and expected in result.stderr, name
