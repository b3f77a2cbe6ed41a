"""updater.forked.verifier: each signature check runs in a forked child, and a manifest and
signature it accepted are not checked again (the full download after an adaptive probe)."""
import pytest

from artifact import SignatureError
from artifact.signing import sign
from updater import forked


@pytest.fixture
def children(monkeypatch):
    """The functions run in forked children, in order."""
    started = []
    real = forked.in_child

    def counting(function, errors=(ValueError,)):
        started.append(function)
        return real(function, errors)

    monkeypatch.setattr(forked, "in_child", counting)
    return started


def signed(manifest: bytes, key_pair) -> bytes:
    return sign(manifest, key_pair.private_key)


def test_an_accepted_manifest_is_not_checked_twice(keys, children):
    verify = forked.verifier([str(keys["ecdsa"].public_path)])
    manifest = b"0" * 64 + b"  data/0000.tar.gz\n"
    signature = signed(manifest, keys["ecdsa"])
    first = verify(manifest, signature)
    assert verify(manifest, signature) == first
    assert len(children) == 1
    other = manifest.replace(b"0000", b"0001")
    assert verify(other, signed(other, keys["ecdsa"])) == first
    assert len(children) == 2  # other bytes: checked afresh


def test_a_refused_signature_is_refused_each_time(keys, children):
    verify = forked.verifier([str(keys["ecdsa"].public_path)])
    manifest = b"1" * 64 + b"  data/0000.tar.gz\n"
    forged = signed(manifest, keys["rsa"])  # a key the verifier does not hold
    for attempt in (1, 2):
        with pytest.raises(SignatureError):
            verify(manifest, forged)
        assert len(children) == attempt
    tampered = manifest.replace(b"1" * 8, b"2" * 8)
    with pytest.raises(SignatureError):
        verify(tampered, signed(manifest, keys["ecdsa"]))  # signed before it was changed
