import io
import os

import pytest

from artifact import ArtifactReader, SignatureError
from artifact.reader import UNSIGNED, UNVERIFIED, VERIFIED

COMPRESSIONS = ["none", "gzip", "lzma", "zstd"]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_rootfs_image_round_trip(artifact_bytes, read_artifact, compression):
    image = os.urandom(300_000) + b"\0" * 200_000
    data = artifact_bytes({"rootfs.ext4": image}, name="release-7", compression=compression,
                         device_types=("qemu-arm64", "rpi4"))

    reader, contents = read_artifact(data)

    assert contents == {(0, "rootfs.ext4"): image}
    assert reader.compression == compression
    assert reader.header.name == "release-7"
    assert reader.header.device_types == ["qemu-arm64", "rpi4"]
    payload = reader.header.payloads[0]
    assert payload.type == "rootfs-image"
    assert payload.files == ["rootfs.ext4"]
    assert payload.provides["rootfs-image.version"] == "release-7"
    assert payload.provides["rootfs-image.checksum"] == reader.manifest["data/0000/rootfs.ext4"]
    assert payload.clears_provides == ["artifact_group", "rootfs_image_checksum", "rootfs-image.*"]


def test_module_image_with_several_files_meta_data_and_scripts(artifact_bytes, read_artifact):
    files = {"dest_dir": b"/opt/app\n", "filename": b"app.bin\n", "app.bin": os.urandom(5000),
             "empty": b""}
    script = b"#!/bin/sh\nexit 0\n"
    data = artifact_bytes(files, module_type="single-file", name="app-2.0",
                         meta_data={"containers": ["nginx:1.25"]},
                         scripts={"ArtifactInstall_Enter_01_check": script},
                         provides={"app.version": "2.0"}, depends={"rootfs-image.version": "r1"},
                         artifact_depends={"artifact_name": ["app-1.0"]}, group="canary")

    reader, contents = read_artifact(data)

    assert contents == {(0, name): content for name, content in files.items()}
    header = reader.header
    assert header.scripts == {"ArtifactInstall_Enter_01_check": script}
    assert header.group == "canary"
    assert header.depends == {"artifact_name": ["app-1.0"]}
    payload = header.payloads[0]
    assert payload.type == "single-file"
    assert payload.meta_data == {"containers": ["nginx:1.25"]}
    assert payload.provides == {"app.version": "2.0",
                                "rootfs-image.single-file.version": "app-2.0"}
    assert payload.depends == {"rootfs-image.version": "r1"}
    assert header.provides == {"artifact_name": "app-2.0", "artifact_group": "canary",
                               "app.version": "2.0", "rootfs-image.single-file.version": "app-2.0"}


def test_module_image_without_files(artifact_bytes, read_artifact):
    reader, contents = read_artifact(artifact_bytes({}, module_type="script-only"))
    assert contents == {}
    assert reader.header.payloads[0].files == []


@pytest.mark.parametrize("kind", ["rsa", "ecdsa", "ed25519"])
def test_signed_artifact_verifies_with_its_key(artifact_bytes, read_artifact, keys, verify_keys,
                                               kind):
    data = artifact_bytes(key=keys[kind])
    reader, _ = read_artifact(data, keys=[verify_keys[kind]])
    assert reader.signature == VERIFIED
    assert reader.verified_by == verify_keys[kind].name


def test_first_verifying_key_of_several_wins(artifact_bytes, read_artifact, keys, verify_keys):
    data = artifact_bytes(key=keys["ecdsa"])
    candidates = [verify_keys["other-rsa"], verify_keys["ed25519"], verify_keys["ecdsa"]]
    reader, _ = read_artifact(data, keys=candidates)
    assert reader.verified_by == verify_keys["ecdsa"].name


def test_signed_artifact_without_keys_is_unverified(artifact_bytes, read_artifact, keys):
    reader, _ = read_artifact(artifact_bytes(key=keys["rsa"]))
    assert reader.signature == UNVERIFIED


def test_unsigned_artifact_with_keys_is_refused_before_the_header(artifact_bytes, verify_keys):
    with pytest.raises(SignatureError, match="missing signature"):
        ArtifactReader(io.BytesIO(artifact_bytes()), [verify_keys["rsa"]])


def test_unsigned_artifact_without_keys(artifact_bytes, read_artifact):
    reader, _ = read_artifact(artifact_bytes())
    assert reader.signature == UNSIGNED


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_reads_a_one_way_stream_in_small_pieces(artifact_bytes, read_artifact, one_way,
                                                compression):
    image = os.urandom(100_000)
    data = artifact_bytes({"rootfs.ext4": image}, compression=compression)
    _, contents = read_artifact(data, stream_class=one_way)
    assert contents == {(0, "rootfs.ext4"): image}


def test_writer_streams_to_a_pipe(tmp_path, artifact_bytes, read_artifact):
    """A non-seekable output gets the same artifact as a file does."""
    import subprocess
    import sys

    image = tmp_path / "rootfs.ext4"
    image.write_bytes(os.urandom(70_000))
    result = subprocess.run(
        [sys.executable, "-m", "artifact.cli", "write", "rootfs-image", "-f", str(image),
         "-n", "piped", "-t", "qemu-arm64", "-o", "-"],
        stdout=subprocess.PIPE, check=True)
    _, contents = read_artifact(result.stdout)
    assert contents == {(0, "rootfs.ext4"): image.read_bytes()}


def test_payload_chunks_come_before_the_checksum_verdict(artifact_bytes):
    """All chunks of a file are yielded and only then is the file declared complete."""
    image = os.urandom(3 << 20)
    data = artifact_bytes({"rootfs.ext4": image})
    with ArtifactReader(io.BytesIO(data), chunk_size=1 << 20) as reader:
        payload = next(reader.payloads())
        file = next(payload.files())
        chunks = list(file)
    assert [len(c) for c in chunks] == [1 << 20] * 3
    assert file.size == len(image)
