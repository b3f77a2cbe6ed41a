"""Interoperability with Debian's real mender-artifact 3.9, in both directions."""
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from artifact import ArtifactReader
from artifact.signing import load_key_file

pytestmark = pytest.mark.interop

TERN = os.path.join(os.path.dirname(sys.executable), "tern-artifact")
COMPRESSIONS = ["none", "gzip", "lzma"]
SIGNERS = [None, "rsa", "ecdsa"]
KINDS = ["rootfs", "module"]
MATRIX = list(itertools.product(COMPRESSIONS, SIGNERS, KINDS))


@pytest.fixture(scope="session")
def mender_artifact() -> str:
    path = shutil.which("mender-artifact")
    assert path, "mender-artifact is missing: `make deps` installs Debian's package"
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("inputs")
    contents = {
        "rootfs.ext4": os.urandom(200_000) + bytes(300_000),
        "dest_dir": b"/opt/app\n",
        "filename": b"app.bin\n",
        "app.bin": os.urandom(40_000),
        "meta.json": b'{"containers":["nginx:1.25"],"restart":true}',
        "ArtifactInstall_Enter_10_hello": b"#!/bin/sh\necho hello\n",
    }
    for name, content in contents.items():
        (directory / name).write_bytes(content)
    return {name: directory / name for name in contents}


def write_args(kind: str, inputs: dict[str, Path], compression: str, key: Path | None,
               out: Path) -> list[str]:
    common = ["-n", f"{kind}-1.0", "-t", "qemu-arm64", "-t", "rpi4", "-p", "os.family:debian",
              "-d", "rootfs-image.version:release-1", "-N", "release-1", "-N", "release-0",
              "-g", "canary", "-G", "stable", "--compression", compression,
              "-s", str(inputs["ArtifactInstall_Enter_10_hello"]), "-o", str(out)]
    if key:
        common += ["-k", str(key)]
    if kind == "rootfs":
        return ["write", "rootfs-image", "-f", str(inputs["rootfs.ext4"]), *common]
    files = [arg for name in ("dest_dir", "filename", "app.bin")
             for arg in ("-f", str(inputs[name]))]
    return ["write", "module-image", "-T", "single-file", *files, "-m", str(inputs["meta.json"]),
            *common]


def payload_files(kind: str, inputs: dict[str, Path]) -> dict[str, bytes]:
    names = ["rootfs.ext4"] if kind == "rootfs" else ["dest_dir", "filename", "app.bin"]
    return {name: inputs[name].read_bytes() for name in names}


def parse_mender_read(text: str) -> dict:
    """The fields of `mender-artifact read` that both tools must agree on."""
    def field(name):
        match = re.search(rf"^\s*{name}: ?(.*)$", text, re.M)
        assert match, f"no {name!r} in:\n{text}"
        return match.group(1).strip()

    def block(title):
        match = re.search(rf"^\s*{title}:\n((?:\t.*\n)*)", text, re.M)
        if not match:
            return {}
        return dict(line.strip().split(": ", 1) for line in match.group(1).splitlines())

    def names(value):
        return [name for name in re.split(r"[,\s]+", value.strip("'[]")) if name]

    files = re.findall(r"name:\s+(\S+)\n\s+size:\s+(\d+)\n.*\n\s+checksum:\s+([0-9a-f]{64})", text)
    return {
        "name": field("Name"),
        "device_types": names(field("Compatible devices")),
        "group": field("Provides group") or None,
        "depends_artifacts": names(field(r"Depends on one of artifact\(s\)")),
        "depends_groups": names(field(r"Depends on one of group\(s\)")),
        "scripts": field("State scripts").split() if field("State scripts") else
        re.findall(r"^\s+(Artifact\w+)$", text, re.M),
        "type": field("Type"),
        "provides": block("Provides"),
        "depends": block("Depends"),
        "clears": json.loads(field("Clears Provides")),
        "files": [(name, int(size), digest) for name, size, digest in files],
    }


def tern_view(path: Path, keys=()) -> tuple[dict, dict[str, bytes]]:
    """What Tern reads from an artifact, in the shape of parse_mender_read, plus the bytes."""
    contents = {}
    sizes = []
    with open(path, "rb") as stream, ArtifactReader(stream, list(keys)) as reader:
        for payload in reader.payloads():
            for file in payload.files():
                contents[file.name] = b"".join(file)
                sizes.append((file.name, file.size,
                              reader.manifest[f"data/0000/{file.name}"]))
    header = reader.header
    payload = header.payloads[0]
    return {
        "name": header.name,
        "device_types": header.device_types,
        "group": header.group,
        "depends_artifacts": header.depends.get("artifact_name", []),
        "depends_groups": header.depends.get("artifact_group", []),
        "scripts": sorted(header.scripts),
        "type": payload.type,
        "provides": payload.provides,
        "depends": payload.depends,
        "clears": payload.clears_provides,
        "files": sizes,
    }, contents


def run(*command, check=True):
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True)
    if check:
        assert result.returncode == 0, f"{command}: {result.returncode}\n{result.stdout}" \
                                       f"\n{result.stderr}"
    return result


@pytest.mark.parametrize("compression,signer,kind", MATRIX)
def test_mender_artifact_accepts_what_tern_writes(tmp_path, mender_artifact, inputs, keys,
                                                 compression, signer, kind):
    out = tmp_path / "tern.mender"
    key = keys[signer] if signer else None
    run(TERN, *write_args(kind, inputs, compression, key and key.private_path, out))

    run(mender_artifact, "validate", *(["-k", key.public_path] if key else []), out)
    mender = parse_mender_read(run(mender_artifact, "read", out).stdout)
    tern, contents = tern_view(out)

    assert mender == {**tern, "scripts": mender["scripts"]}
    assert mender["scripts"] == ["ArtifactInstall_Enter_10_hello"]
    assert contents == payload_files(kind, inputs)


@pytest.mark.parametrize("compression,signer,kind", MATRIX)
def test_tern_accepts_what_mender_artifact_writes(tmp_path, mender_artifact, inputs, keys,
                                                 compression, signer, kind):
    out = tmp_path / "mender.mender"
    key = keys[signer] if signer else None
    run(mender_artifact, *write_args(kind, inputs, compression, key and key.private_path, out))

    run(TERN, "validate", *(["-k", key.public_path] if key else []), out)
    verify = [load_key_file(key.public_path)] if key else []
    tern, contents = tern_view(out, verify)
    mender = parse_mender_read(run(mender_artifact, "read", out).stdout)

    assert tern == {**mender, "scripts": tern["scripts"]}
    assert tern["scripts"] == ["ArtifactInstall_Enter_10_hello"]
    assert contents == payload_files(kind, inputs)


@pytest.mark.parametrize("signer", ["rsa", "ecdsa"])
def test_artifacts_signed_by_either_tool_verify_in_both(tmp_path, mender_artifact, inputs, keys,
                                                        signer):
    key = keys[signer]
    unsigned = tmp_path / "unsigned.mender"
    run(mender_artifact, *write_args("rootfs", inputs, "gzip", None, unsigned))

    by_mender = tmp_path / "by-mender.mender"
    run(mender_artifact, "sign", "-k", key.private_path, unsigned, "-o", by_mender)
    run(TERN, "validate", "-k", key.public_path, by_mender)

    by_tern = tmp_path / "by-tern.mender"
    run(TERN, "sign", "-k", key.private_path, unsigned, "-o", by_tern)
    run(mender_artifact, "validate", "-k", key.public_path, by_tern)
    assert tern_view(by_tern)[1] == tern_view(by_mender)[1] == payload_files("rootfs", inputs)


def test_both_tools_reject_a_flipped_payload_byte(tmp_path, mender_artifact, inputs):
    out = tmp_path / "mender.mender"
    run(mender_artifact, *write_args("rootfs", inputs, "none", None, out))
    data = bytearray(out.read_bytes())
    data[data.find(inputs["rootfs.ext4"].read_bytes()[:4096]) + 100] ^= 0x01
    out.write_bytes(bytes(data))

    assert run(mender_artifact, "validate", out, check=False).returncode != 0
    result = run(TERN, "validate", out, check=False)
    assert result.returncode == 4
    assert "data/0000/rootfs.ext4: invalid checksum" in result.stderr


def test_both_tools_reject_a_wrong_key(tmp_path, mender_artifact, inputs, keys):
    out = tmp_path / "signed.mender"
    run(TERN, *write_args("rootfs", inputs, "gzip", keys["rsa"].private_path, out))
    assert run(mender_artifact, "validate", "-k", keys["other-rsa"].public_path, out,
               check=False).returncode != 0
    result = run(TERN, "validate", "-k", keys["other-rsa"].public_path, out, check=False)
    assert result.returncode == 4
    assert "does not verify" in result.stderr


def test_zstd_is_a_tern_extension_that_mender_artifact_cannot_read(tmp_path, mender_artifact,
                                                                   inputs):
    out = tmp_path / "zstd.mender"
    run(TERN, *write_args("rootfs", inputs, "zstd", None, out))
    run(TERN, "validate", out)
    assert run(mender_artifact, "validate", out, check=False).returncode != 0


def test_mender_artifact_reads_every_gzip_member_tern_writes(tmp_path, mender_artifact):
    """Tern writes a gzip member per MiB (a cut download resumes at a member's start); the
    Mender tools' reader (mender-artifact's, the client's too) reads them as one stream:
    validate checks the payload's sha256, and a flipped byte in the third member fails it."""
    image = tmp_path / "rootfs.ext4"
    image.write_bytes(os.urandom(3 << 20) + b"tail")
    out = tmp_path / "tern.mender"
    run(TERN, "write", "rootfs-image", "-f", image, "-n", "release-2", "-t", "qemu-arm64",
        "-o", out)
    with ArtifactReader(open(out, "rb")) as reader:
        payload = next(reader.payloads())
        for file in payload.files():
            file.drain()
        third_member = payload.restart_point(2 << 20)[0]
    run(mender_artifact, "validate", out)

    data = bytearray(out.read_bytes())
    data[third_member + 1000] ^= 0xFF
    out.write_bytes(data)
    result = run(mender_artifact, "validate", out, check=False)
    assert result.returncode != 0
