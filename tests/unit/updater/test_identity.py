"""The daemon's device identity and key."""
import base64
import os
import threading

import pytest

import updater
from updater import forked, identity
from updater.config import Config


def interface(net, name: str, kind: str, mac: str) -> None:
    (net / name).mkdir(parents=True)
    (net / name / "type").write_text(kind + "\n")
    (net / name / "address").write_text(mac + "\n")


def test_identity_is_the_first_ethernet_mac(tmp_path):
    net = tmp_path / "net"
    interface(net, "lo", "772", "00:00:00:00:00:00")
    interface(net, "wlan0", "1", "52:54:00:00:00:02")
    interface(net, "eth0", "1", "52:54:00:00:00:01")
    interface(net, "can0", "280", "")
    assert identity.identity(Config(), net) == {"mac": "52:54:00:00:00:01"}
    (net / "eth0" / "type").write_text("772\n")
    (net / "wlan0" / "type").write_text("772\n")
    with pytest.raises(ValueError, match="no ethernet interface"):
        identity.identity(Config(), net)


def test_identity_script_lines(tmp_path):
    config = Config(identity_script="printf 'mac=aa\\nserial=42\\nnoise\\n'")
    assert identity.identity(config) == {"mac": "aa", "serial": "42"}
    with pytest.raises(ValueError, match="no KEY=VALUE"):
        identity.identity(Config(identity_script="echo nothing"))


def test_device_key_is_made_once_and_private(tmp_path):
    key = identity.device_key(tmp_path / "data")
    path = tmp_path / "data" / "device-key.pem"
    assert path.stat().st_mode & 0o777 == 0o600
    again = identity.device_key(tmp_path / "data")
    assert again.private_bytes_raw() == key.private_bytes_raw()


def test_device_keys_of_cryptography_and_of_the_agent_read_each_other(tmp_path):
    """The agent reads its Ed25519 key without cryptography's serialization package; what
    it writes and reads is the PKCS #8 PEM cryptography writes and reads, and any other
    key (RSA) still loads."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    path = tmp_path / "device-key.pem"
    made = identity.device_key(tmp_path)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert loaded.private_bytes_raw() == made.private_bytes_raw()
    for key in (ed25519.Ed25519PrivateKey.generate(), rsa.generate_private_key(65537, 2048)):
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        read = identity.device_key(tmp_path)
        assert read.public_key() == key.public_key()


def test_inventory_names_the_agent_version():
    """The package's version (debian/rules writes it into updater/__init__.py): the server
    sees which agent a device runs, e.g. after an OTA that updated the agent itself."""
    found = identity.inventory("qemu-arm64", {"artifact_name": "release-1"})
    assert found["client_version"] == f"tern-updater {updater.__version__}"
    assert found["artifact_name"] == "release-1" and found["device_type"] == "qemu-arm64"


def test_inventory_names_the_host_and_kernel_as_platform_does():
    """Read from os.uname(): the daemon does not hold the platform module for two names."""
    import platform

    found = identity.inventory("qemu-arm64", {})
    assert (found["hostname"], found["kernel"]) == (platform.node(), platform.release())


def test_the_forked_signer_signs_with_the_device_key(tmp_path):
    """The daemon's signer: the same key, the same signature as in the process."""
    signer = identity.ForkedSigner(tmp_path / "data")
    body, signature = signer.signed(lambda pem: f"key={pem}".encode())
    key = identity.device_key(tmp_path / "data")
    key.public_key().verify(base64.b64decode(signature), body)
    assert body.startswith(b"key=-----BEGIN PUBLIC KEY-----")
    assert (body, signature) == identity.KeySigner(key).signed(lambda pem: f"key={pem}".encode())


def test_a_key_the_child_cannot_read_is_the_same_error_in_the_daemon(tmp_path):
    """What fails in the child is raised in the daemon as the ValueError or OSError it
    was there (one line from the daemon's command), not a crash of the child."""
    signer = identity.ForkedSigner(tmp_path)
    (tmp_path / "device-key.pem").write_text("not a key\n")
    with pytest.raises(ValueError, match="Unable to load PEM"):
        signer.signed(lambda pem: pem.encode())
    (tmp_path / "device-key.pem").unlink()
    (tmp_path / "device-key.pem").mkdir()
    with pytest.raises(OSError, match="Is a directory"):
        signer.signed(lambda pem: pem.encode())


def test_a_child_that_dies_without_an_answer_is_an_oserror():
    with pytest.raises(OSError, match="without an answer .exit status 3"):
        forked.in_child(lambda: os._exit(3))


def test_an_unexpected_error_in_the_child_comes_back_as_the_first_kind_named():
    with pytest.raises(KeyError, match="ZeroDivisionError: integer division"):
        forked.in_child(lambda: 1 // 0, (KeyError, OSError))
    assert forked.in_child(lambda: (b"a", "b", 3)) == (b"a", "b", 3)


def test_in_child_forks_only_a_process_with_one_thread():
    """fork copies the calling thread alone: with another thread (the fleet simulator's
    pools), the function runs in the process."""
    assert forked.in_child(os.getpid) != os.getpid()
    done = threading.Event()
    other = threading.Thread(target=done.wait)
    other.start()
    try:
        assert forked.in_child(os.getpid) == os.getpid()
    finally:
        done.set()
        other.join()
