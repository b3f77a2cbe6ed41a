"""Damaged, forged and malicious artifacts are refused with the library's own, clear errors."""
import base64
import gzip
import hashlib
import io
import json
import os

import pytest

from artifact import (
    ArtifactError,
    ArtifactReader,
    ChecksumError,
    SignatureError,
    StructureError,
    UnsupportedError,
)
from artifact import manifest as manifest_format


def replace(members, name, content):
    return [(n, content if n == name else c) for n, c in members]


def flip(content: bytes, offset: int) -> bytes:
    return content[:offset] + bytes([content[offset] ^ 0x01]) + content[offset + 1:]


def resign(members_list, manifest: bytes, key):
    from artifact import signing

    members_list = replace(members_list, "manifest", manifest)
    return replace(members_list, "manifest.sig", signing.sign(manifest, key.private_key))


def test_flipped_payload_byte_fails_its_checksum_after_the_last_chunk(artifact_bytes, members):
    image = os.urandom(50_000)
    parts = members.split(artifact_bytes({"rootfs.ext4": image}, compression="none"))
    data_name = "data/0000.tar"
    inner = dict(parts)[data_name]
    tampered = members.join(replace(parts, data_name, flip(inner, 512 + 1000)))

    with ArtifactReader(io.BytesIO(tampered)) as reader:
        file = next(next(reader.payloads()).files())
        received = []
        with pytest.raises(ChecksumError) as error:
            for chunk in file:
                received.append(chunk)
    assert len(b"".join(received)) == len(image)  # every byte came, the verdict did not
    assert error.value.member == "data/0000/rootfs.ext4"
    assert error.value.expected == hashlib.sha256(image).hexdigest()
    assert "invalid checksum" in str(error.value)


def test_flipped_header_byte(artifact_bytes, members):
    parts = members.split(artifact_bytes())
    header = dict(parts)["header.tar.gz"]
    data = members.join(replace(parts, "header.tar.gz", flip(header, len(header) // 2)))
    with pytest.raises(ChecksumError, match="header.tar.gz"):
        ArtifactReader(io.BytesIO(data))


def test_reordered_manifest_breaks_the_signature(artifact_bytes, members, keys, verify_keys):
    parts = members.split(artifact_bytes(key=keys["rsa"]))
    lines = dict(parts)["manifest"].splitlines(keepends=True)
    data = members.join(replace(parts, "manifest", b"".join(reversed(lines))))
    with pytest.raises(SignatureError, match="does not verify"):
        ArtifactReader(io.BytesIO(data), [verify_keys["rsa"]])


def test_removed_signature_is_refused_when_keys_are_given(artifact_bytes, members, keys,
                                                          verify_keys):
    parts = [m for m in members.split(artifact_bytes(key=keys["rsa"])) if m[0] != "manifest.sig"]
    with pytest.raises(SignatureError, match="missing signature"):
        ArtifactReader(io.BytesIO(members.join(parts)), [verify_keys["rsa"]])


def test_der_encoded_ecdsa_signature_is_refused(artifact_bytes, members, keys, verify_keys):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    parts = members.split(artifact_bytes(key=keys["ecdsa"]))
    der = keys["ecdsa"].private_key.sign(dict(parts)["manifest"], ec.ECDSA(hashes.SHA256()))
    data = members.join(replace(parts, "manifest.sig", base64.b64encode(der)))
    with pytest.raises(SignatureError, match="DER signatures are not accepted"):
        ArtifactReader(io.BytesIO(data), [verify_keys["ecdsa"]])


def test_signature_by_another_key(artifact_bytes, keys, verify_keys):
    data = artifact_bytes(key=keys["other-rsa"])
    with pytest.raises(SignatureError, match="does not verify with any key"):
        ArtifactReader(io.BytesIO(data), [verify_keys["rsa"], verify_keys["ecdsa"]])


def test_uppercase_manifest_hex_is_refused_even_when_signed(artifact_bytes, members, keys,
                                                            verify_keys):
    parts = members.split(artifact_bytes(key=keys["rsa"]))
    manifest = dict(parts)["manifest"]
    upper = b"\n".join(line[:64].upper() + line[64:] for line in manifest.split(b"\n"))
    data = members.join(resign(parts, upper, keys["rsa"]))
    with pytest.raises(StructureError, match="malformed checksum line"):
        ArtifactReader(io.BytesIO(data), [verify_keys["rsa"]])


@pytest.mark.parametrize("order", [
    ["manifest", "version", "header.tar.gz", "data/0000.tar.gz"],
    ["version", "header.tar.gz", "manifest", "data/0000.tar.gz"],
    ["version", "manifest", "data/0000.tar.gz", "header.tar.gz"],
    ["version", "manifest", "header.tar.gz"],
    ["version", "manifest", "header.tar.gz", "data/0000.tar.gz", "data/0000.tar.gz"],
])
def test_wrong_member_order(artifact_bytes, members, order):
    parts = dict(members.split(artifact_bytes()))
    data = members.join([(name, parts[name]) for name in order])
    with pytest.raises(StructureError), ArtifactReader(io.BytesIO(data)) as reader:
        reader.validate()


@pytest.mark.parametrize("version", [
    b'{"format":"mender","version":2}', b'{"format":"mender","version":4}'])
def test_other_format_versions_are_unsupported(artifact_bytes, members, version):
    parts = members.split(artifact_bytes())
    with pytest.raises(UnsupportedError, match="format version"):
        ArtifactReader(io.BytesIO(members.join(replace(parts, "version", version))))


def test_version_file_must_match_the_manifest(artifact_bytes, members):
    parts = members.split(artifact_bytes())
    spaced = b'{"format": "mender", "version": 3}'
    with pytest.raises(ChecksumError, match="version"):
        ArtifactReader(io.BytesIO(members.join(replace(parts, "version", spaced))))


def forged(members, artifact_bytes, inner_entries, types=None):
    """An artifact whose data tar holds `inner_entries`, with a manifest that lists them."""
    parts = members.split(artifact_bytes(compression="gzip"))
    manifest = manifest_format.parse(dict(parts)["manifest"])
    entries = {f"data/0000/{name}": hashlib.sha256(content).hexdigest()
               for name, content in inner_entries}
    entries.update((k, v) for k, v in manifest.items() if not k.startswith("data/"))
    parts = replace(parts, "manifest", manifest_format.serialize(entries))
    return members.join(replace(parts, "data/0000.tar.gz", members.tar(inner_entries,
                                                                         types=types)))


@pytest.mark.parametrize("name", ["../etc/passwd", "/etc/passwd", "dir/rootfs.ext4"])
def test_path_traversal_in_the_data_tar(artifact_bytes, members, name):
    parts = members.split(artifact_bytes())
    data = members.join(replace(parts, "data/0000.tar.gz",
                                members.tar([(name, b"\x53\xef" * 4096)])))
    with pytest.raises(StructureError, match="unexpected payload file"), \
            ArtifactReader(io.BytesIO(data)) as reader:
        reader.validate()


def test_traversal_names_are_refused_in_the_manifest_too(artifact_bytes, members):
    parts = members.split(artifact_bytes())
    manifest = dict(parts)["manifest"].replace(b"data/0000/rootfs.ext4", b"data/0000/../../x")
    with pytest.raises(StructureError, match="unexpected member name"):
        ArtifactReader(io.BytesIO(members.join(replace(parts, "manifest", manifest))))


@pytest.mark.parametrize("kind", ["2", "1", "3"])  # symlink, hard link, character device
def test_links_and_devices_in_the_data_tar(artifact_bytes, members, kind):
    data = forged(members, artifact_bytes, [("rootfs.ext4", b"")],
                  types={"rootfs.ext4": kind.encode()})
    with pytest.raises(StructureError, match="not a regular file"), \
            ArtifactReader(io.BytesIO(data)) as reader:
        reader.validate()


def test_rootfs_image_needs_exactly_one_file(artifact_bytes, members):
    data = forged(members, artifact_bytes, [("a.ext4", b"a"), ("b.ext4", b"b")])
    with pytest.raises(StructureError, match="exactly one file, found 2"):
        ArtifactReader(io.BytesIO(data))


def test_a_file_missing_from_the_data_tar(artifact_bytes, members):
    parts = members.split(artifact_bytes({"a": b"1", "b": b"2"}, module_type="directory"))
    data = members.join(replace(parts, "data/0000.tar.gz", members.tar([("a", b"1")])))
    with pytest.raises(StructureError, match="can not find data file"), \
            ArtifactReader(io.BytesIO(data)) as reader:
        reader.validate()


def with_header(members, artifact: bytes, header: bytes) -> bytes:
    """`artifact` with another header.tar.gz, listed with its true checksum in the manifest."""
    parts = members.split(artifact)
    manifest = manifest_format.parse(dict(parts)["manifest"])
    manifest["header.tar.gz"] = hashlib.sha256(header).hexdigest()
    parts = replace(parts, "manifest", manifest_format.serialize(manifest))
    return members.join(replace(parts, "header.tar.gz", header))


def test_oversized_header_is_refused_before_decompression(artifact_bytes, members):
    bomb = gzip.compress(b"\0" * (40 << 20))  # 40 MiB of zeros, 40 KiB compressed
    with pytest.raises(StructureError, match="decompresses to more than"):
        ArtifactReader(io.BytesIO(with_header(members, artifact_bytes(), bomb)))


def test_unbounded_json_is_refused(artifact_bytes, members):
    header = members.tar([("header-info", b"[" * 100_000)], compression="gzip")
    with pytest.raises(StructureError, match="header-info"):
        ArtifactReader(io.BytesIO(with_header(members, artifact_bytes(), header)))


def test_header_info_must_name_device_types(artifact_bytes, members):
    info = {"payloads": [{"type": "rootfs-image"}], "artifact_provides": {"artifact_name": "x"},
            "artifact_depends": {}}
    header = members.tar([("header-info", json.dumps(info).encode()),
                          ("headers/0000/type-info", b"{}")])
    with pytest.raises(StructureError, match="device_type"):
        ArtifactReader(io.BytesIO(with_header(members, artifact_bytes(), header)))


def test_every_truncation_is_refused(artifact_bytes):
    data = artifact_bytes({"rootfs.ext4": os.urandom(20_000)}, compression="none")
    for length in sorted({*range(0, len(data) - 1024, 509), len(data) - 1025}):
        with pytest.raises(ArtifactError), ArtifactReader(io.BytesIO(data[:length])) as reader:
            reader.validate()


def test_not_a_tar_at_all():
    with pytest.raises(StructureError):
        ArtifactReader(io.BytesIO(b"PK\x03\x04 this is a zip file" * 40))
