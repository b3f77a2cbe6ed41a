import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from artifact import KeyFormatError, SignatureError, signing

MANIFEST = b"96bcd965947569404798bcbdb614f103db5a004eb6e364cfc162c146890ea35b  version\n"
FORMATS = {
    "pkcs1/sec1": serialization.PrivateFormat.TraditionalOpenSSL,
    "pkcs8": serialization.PrivateFormat.PKCS8,
}


def pem(key, private_format) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, private_format,
                             serialization.NoEncryption())


def verify_key(key) -> signing.VerifyKey:
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return signing.VerifyKey("test", signing.load_public_key(public))


@pytest.mark.parametrize("kind,private_format", [
    ("rsa", "pkcs1/sec1"), ("rsa", "pkcs8"), ("ecdsa", "pkcs1/sec1"), ("ecdsa", "pkcs8"),
    ("ed25519", "pkcs8"),  # Ed25519 keys exist only as PKCS#8
])
def test_private_key_formats_sign_what_the_public_key_verifies(keys, kind, private_format):
    key = signing.load_private_key(pem(keys[kind].private_key, FORMATS[private_format]))
    signature = signing.sign(MANIFEST, key)
    assert signing.verify(MANIFEST, signature, [verify_key(keys[kind].private_key)]).name == "test"
    with pytest.raises(SignatureError):
        signing.verify(MANIFEST + b"x", signature, [verify_key(keys[kind].private_key)])


def test_ecdsa_signature_is_raw_r_and_s(keys):
    import base64

    signature = signing.sign(MANIFEST, keys["ecdsa"].private_key)
    assert len(base64.b64decode(signature)) == 64
    assert len(signature) == 88


def test_small_rsa_keys_cannot_sign_but_old_ones_still_verify():
    small = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(KeyFormatError, match="at least 3072"):
        signing.load_private_key(pem(small, FORMATS["pkcs8"]))
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signature = base64.b64encode(small.sign(MANIFEST, padding.PKCS1v15(), hashes.SHA256()))
    assert signing.verify(MANIFEST, signature, [verify_key(small)])


def test_other_curves_and_garbage_are_refused():
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(KeyFormatError, match="only P-256"):
        signing.load_private_key(pem(p384, FORMATS["pkcs8"]))
    with pytest.raises(KeyFormatError, match="not a PKIX PEM public key"):
        signing.load_public_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


def test_signature_that_is_not_base64(keys):
    with pytest.raises(SignatureError, match="not valid base64"):
        signing.verify(MANIFEST, b"%%%", [verify_key(keys["rsa"].private_key)])
