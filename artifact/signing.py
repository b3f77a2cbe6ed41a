"""Signing and verifying the manifest, as mender-artifact does.

The signature covers exactly the `manifest` member's bytes and is stored base64
encoded in `manifest.sig`:

- RSA: PKCS#1 v1.5 over SHA-256; at least 3072 bits to sign, 2048 to verify
  (older fleets' keys);
- ECDSA P-256: SHA-256, raw r||s (32 + 32 bytes), not DER;
- Ed25519: over the manifest itself.

Private keys may be PKCS#1, SEC1 or PKCS#8 PEM; public keys are PKIX PEM.
"""
import base64
import binascii
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from .errors import KeyFormatError, SignatureError

MIN_RSA_SIGN_BITS = 3072
MIN_RSA_VERIFY_BITS = 2048
_P256_HALF = 32

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


def load_private_key(pem: bytes, source: str = "key") -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise KeyFormatError(f"{source}: not an unencrypted PEM private key: {error}") from None
    _check_key_type(key, source, MIN_RSA_SIGN_BITS)
    return key


def load_public_key(pem: bytes, source: str = "key") -> PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as error:
        raise KeyFormatError(f"{source}: not a PKIX PEM public key: {error}") from None
    _check_key_type(key, source, MIN_RSA_VERIFY_BITS)
    return key


def load_key_file(path: str | Path) -> "VerifyKey":
    """A verify key from a PEM file: a public key, or the public half of a private key."""
    pem = Path(path).read_bytes()
    if b"PRIVATE KEY" in pem:
        return VerifyKey(str(path), load_private_key(pem, str(path)).public_key())
    return VerifyKey(str(path), load_public_key(pem, str(path)))


@dataclass(frozen=True)
class VerifyKey:
    name: str
    key: PublicKey


def sign(manifest: bytes, key: PrivateKey) -> bytes:
    """The `manifest.sig` content for `manifest`."""
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(manifest, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(manifest, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(_P256_HALF, "big") + s.to_bytes(_P256_HALF, "big")
    else:
        signature = key.sign(manifest)
    return base64.b64encode(signature)


def verify(manifest: bytes, signature_b64: bytes, keys: list[VerifyKey]) -> VerifyKey:
    """Return the first key that verifies the signature; raise SignatureError if none does."""
    try:
        signature = base64.b64decode(signature_b64.strip(), validate=True)
    except binascii.Error:
        raise SignatureError("manifest.sig: not valid base64") from None
    reasons = []
    for verify_key in keys:
        try:
            _verify_one(manifest, signature, verify_key.key)
            return verify_key
        except (InvalidSignature, SignatureError) as error:
            reasons.append(f"{verify_key.name}: {error or 'verification failed'}")
    raise SignatureError("manifest.sig: signature does not verify with any key: "
                         + "; ".join(reasons))


def _verify_one(manifest: bytes, signature: bytes, key: PublicKey) -> None:
    if isinstance(key, rsa.RSAPublicKey):
        if len(signature) != key.key_size // 8:
            raise SignatureError(f"RSA signature is {len(signature)} bytes, "
                                 f"the key needs {key.key_size // 8}")
        key.verify(signature, manifest, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if len(signature) != 2 * _P256_HALF:
            raise SignatureError(f"ECDSA signature is {len(signature)} bytes, expected raw r||s "
                                 f"of {2 * _P256_HALF} (DER signatures are not accepted)")
        r = int.from_bytes(signature[:_P256_HALF], "big")
        s = int.from_bytes(signature[_P256_HALF:], "big")
        key.verify(encode_dss_signature(r, s), manifest, ec.ECDSA(hashes.SHA256()))
    else:
        key.verify(signature, manifest)


def _check_key_type(key, source: str, min_rsa_bits: int) -> None:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if key.key_size < min_rsa_bits:
            raise KeyFormatError(f"{source}: RSA key of {key.key_size} bits; "
                                 f"at least {min_rsa_bits} are required")
    elif isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise KeyFormatError(f"{source}: ECDSA curve {key.curve.name}; only P-256 is supported")
    elif not isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        raise KeyFormatError(f"{source}: unsupported key type {type(key).__name__}; "
                             "use RSA, ECDSA P-256 or Ed25519")
