import pytest

from artifact import CompatibilityError
from artifact.header import ArtifactHeader, PayloadHeader
from artifact.provides import check_compatible, provides_after_install


def header(**payload_fields) -> ArtifactHeader:
    payload = PayloadHeader(index=0, type="rootfs-image", **payload_fields)
    return ArtifactHeader(name="release-2", device_types=["qemu-arm64", "rpi4"],
                          payloads=[payload], group="beta",
                          depends={"artifact_name": ["release-1"]})


def test_compatible_device_passes():
    check_compatible(header(depends={"rootfs-image.version": "release-1"}), "rpi4",
                     {"artifact_name": "release-1", "rootfs-image.version": "release-1"})


def test_every_unmet_dependency_is_named():
    with pytest.raises(CompatibilityError) as error:
        check_compatible(header(depends={"kernel": ["6.1", "6.6"]}), "x86-64",
                         {"artifact_name": "release-0", "kernel": "5.10"})
    message = str(error.value)
    assert "not compatible with device x86-64" in message
    assert "artifact_name in ['release-1']; the device has 'release-0'" in message
    assert "kernel=['6.1', '6.6']; the device has '5.10'" in message


def test_clears_patterns_then_adds_the_new_provides():
    before = {"artifact_name": "release-1", "artifact_group": "alpha",
              "rootfs-image.version": "release-1", "rootfs-image.checksum": "aa",
              "rootfs-image": "kept: the pattern needs the dot", "app.version": "1"}
    after = provides_after_install(before, header(
        provides={"rootfs-image.version": "release-2"},
        clears_provides=["artifact_group", "rootfs-image.*"]))
    assert after == {"artifact_name": "release-2", "artifact_group": "beta",
                     "rootfs-image.version": "release-2",
                     "rootfs-image": "kept: the pattern needs the dot", "app.version": "1"}


def test_an_artifact_without_clears_replaces_all_provides():
    after = provides_after_install({"artifact_name": "r1", "app.version": "1"},
                                   header(provides={"x": "y"}, clears_provides=None))
    assert after == {"artifact_name": "release-2", "artifact_group": "beta", "x": "y"}
