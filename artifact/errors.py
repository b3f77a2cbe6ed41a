"""The errors of the artifact library.

Every problem with an artifact raises a subclass of `ArtifactError`; its message
names the member and, where there is one, the expected and the actual value.
"""


class ArtifactError(Exception):
    """Base class: the artifact cannot be used."""


class StructureError(ArtifactError):
    """Members missing, out of order, malformed, oversized or unsafe."""


class UnsupportedError(StructureError):
    """A well-formed artifact this library does not handle (format version, compression)."""


class ChecksumError(ArtifactError):
    """A member's SHA-256 differs from the manifest."""

    def __init__(self, member: str, expected: str, actual: str):
        super().__init__(f"{member}: invalid checksum; expected: [{expected}]; actual: [{actual}]")
        self.member = member
        self.expected = expected
        self.actual = actual


class SignatureError(ArtifactError):
    """Missing, malformed or non-verifying signature."""


class KeyFormatError(ArtifactError):
    """A signing or verification key that cannot be used."""


class CompatibilityError(ArtifactError):
    """The artifact is sound but not meant for this device (device type, depends)."""
