"""Mender Artifact format version 3: a streaming reader, a streaming writer, signatures.

Shared by the server, the updater and `tern-artifact`; imports none of them.
"""
from .errors import (
    ArtifactError,
    ChecksumError,
    CompatibilityError,
    KeyFormatError,
    SignatureError,
    StructureError,
    UnsupportedError,
)
from .header import ArtifactHeader, PayloadHeader
from .reader import ArtifactReader
from .writer import sign_artifact, write_artifact

__all__ = [
    "ArtifactError", "ArtifactHeader", "ArtifactReader", "ChecksumError", "CompatibilityError",
    "KeyFormatError", "PayloadHeader", "SignatureError", "StructureError", "UnsupportedError",
    "sign_artifact", "write_artifact",
]
