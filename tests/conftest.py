"""Suite-wide rules and the fixtures several directories share: signing keys, artifact files,
a throwaway PostgreSQL cluster (one per run).

In CI (CI=true) a skipped test fails the run: everything a test needs is
installed and started by .ci/run, so a skip there means something is missing.

`make test` runs two pytest-xdist workers (`-n 2`): the emulated-device tests (marked `qemu`)
in order on one, everything else in order on the other. Each QEMU device keeps one core
busy, and the host-side tests mostly wait on servers and fit beside it. The systemd
device's test (16 minutes, the longest) is a unit of its own, which the host-side worker
takes once its own tests are done: then two devices run at once, one per core, as
`make campaign` and `make replay` run them, and a clean-clone `.ci/run` takes 34.5
minutes instead of 47.6.
"""
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from testkit.artifacts import build_artifact
from testkit.host_device import payload_bytes
from testkit.postgres import PostgresServer


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not os.environ.get("CI"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        reporter.write_line(f"CI: {len(skipped)} test(s) skipped; a skip counts as a failure here",
                            red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# The emulated-device tests (marked qemu), run in order on one of `make test`'s two
# pytest-xdist workers; DeviceTestsInOrder knows them by their directory.
DEVICE_TEST_DIRS = ("tests/integration/qemu/", "tests/integration/e2e/")
# ...but for this one, which the other worker runs after its own tests.
LONGEST_DEVICE_TEST = "tests/integration/e2e/test_systemd_device.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if bool(item.get_closest_marker("qemu")) != item.nodeid.startswith(DEVICE_TEST_DIRS):
            raise pytest.UsageError(f"{item.nodeid}: the tests marked qemu, and only they, "
                                    f"live in {' and '.join(DEVICE_TEST_DIRS)}")


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # without xdist: never called
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    from xdist.scheduler import LoadScopeScheduling

    class DeviceTestsInOrder(LoadScopeScheduling):
        """Units of work: the host-side tests and the emulated-device tests, one per
        worker, and the longest device test, which the worker that finishes first takes."""

        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith(LONGEST_DEVICE_TEST):
                return "longest"
            return "qemu" if nodeid.startswith(DEVICE_TEST_DIRS) else "host"

    return DeviceTestsInOrder(config, log)


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


@pytest.fixture
def make_artifact(tmp_path):
    """Write an artifact file with the library (testkit.artifacts.build_artifact) and return
    its path; one file makes a rootfs-image unless module_type is given."""
    counter = iter(range(1_000_000))

    def make(files=None, *, name="release-2", device_types=("qemu-arm64",), key=None,
             module_type=None, scripts=None, depends=None, artifact_depends=None,
             compression="gzip") -> Path:
        data = build_artifact(
            {"rootfs.ext4": payload_bytes(name)} if files is None else files, name=name,
            device_types=device_types, module_type=module_type, depends=depends,
            artifact_depends=artifact_depends, scripts=scripts, compression=compression,
            signing_key=key.private_key if key else None)
        path = tmp_path / f"{name}-{next(counter)}.mender"
        path.write_bytes(data)
        return path

    return make


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    """A PostgreSQL cluster for the whole run; each user creates its own databases."""
    server = PostgresServer().start()
    yield server
    server.stop()
