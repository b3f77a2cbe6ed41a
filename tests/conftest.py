"""Suite-wide rules.

In CI (CI=true) a skipped test fails the run: everything a test needs is
installed and started by .ci/run, so a skip there means something is missing.
"""
import os

import pytest


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not os.environ.get("CI"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        reporter.write_line(f"CI: {len(skipped)} test(s) skipped; a skip counts as a failure here",
                            red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# -- artifacts: signing keys and a small artifact factory shared by unit and integration tests --

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa  # noqa: E402


@dataclass
class KeyPair:
    kind: str
    private_path: Path  # PKCS#1 (RSA) or SEC1 (ECDSA): what mender-artifact accepts; Ed25519 PKCS#8
    public_path: Path  # PKIX
    private_key: object


def _write_key_pair(directory: Path, kind: str, key) -> KeyPair:
    traditional = kind in ("rsa", "ecdsa")
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL if traditional
        else serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    private_path, public_path = directory / f"{kind}.key", directory / f"{kind}.pub"
    private_path.write_bytes(private_pem)
    public_path.write_bytes(public_pem)
    return KeyPair(kind, private_path, public_path, key)


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> dict[str, KeyPair]:
    directory = tmp_path_factory.mktemp("keys")
    generated = {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=3072),
        "ecdsa": ec.generate_private_key(ec.SECP256R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
    }
    pairs = {kind: _write_key_pair(directory, kind, key) for kind, key in generated.items()}
    pairs["other-rsa"] = _write_key_pair(
        directory, "other-rsa", rsa.generate_private_key(public_exponent=65537, key_size=3072))
    return pairs
