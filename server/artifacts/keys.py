"""The keys artifact uploads must be signed with (`artifact_verify_keys` in `config.json`).

Each key is known by the name it is configured under (its path as written in `config.json`)
and by its fingerprint: the SHA-256 of its public key's DER (SubjectPublicKeyInfo), as
`openssl pkey -pubin -in KEY.pub -outform DER | sha256sum` prints it. An artifact stores both
of the key that verified it, so it stays identifiable after the key is rotated out.
"""
import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from flask import Flask, current_app

from artifact import ArtifactError
from artifact.signing import VerifyKey, load_key_file

EXTENSION = "tern.artifact_verify_keys"


class KeyConfigError(Exception):
    """A configured key file that cannot be read or is not a usable key (one line)."""


@dataclass(frozen=True)
class TrustedKey:
    name: str
    fingerprint: str
    verify_key: VerifyKey


def init_app(app: Flask) -> None:
    """Load the configured keys once; a key that cannot be used stops the app from starting."""
    data_dir = app.config.get("DATA_DIR")
    app.extensions[EXTENSION] = load_trusted_keys(app.config["ARTIFACT_VERIFY_KEYS"],
                                                  Path(data_dir) if data_dir else None)


def trusted_keys() -> list[TrustedKey]:
    return current_app.extensions[EXTENSION]


def load_trusted_keys(paths: list[str], base: Path | None = None) -> list[TrustedKey]:
    """The keys of `paths` (relative ones from `base`, the data directory), each checked."""
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise KeyConfigError("artifact_verify_keys must be a list of PEM file paths")
    keys = []
    for name in paths:
        path = Path(name) if base is None else base / name
        try:
            verify_key = load_key_file(path)
        except OSError as error:
            raise KeyConfigError(f"artifact verify key {name}: cannot read "
                                 f"{path}: {error.strerror}") from None
        except ArtifactError as error:  # the library's message names the file
            raise KeyConfigError(f"artifact verify key {error}") from None
        der = verify_key.key.public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
        keys.append(TrustedKey(name, hashlib.sha256(der).hexdigest(),
                               dataclasses.replace(verify_key, name=name)))
    return keys
