"""`tern-server serve`'s TLS: the self-signed certificate it makes when no --cert is given,
and the cipher choice."""
import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_DAYS = 10 * 365

# OpenSSL's SSL_OP_PRIORITIZE_CHACHA (not among Python's ssl constants): with the server's
# preference on, as Python's server contexts have it, take ChaCha20-Poly1305 when a client
# lists it first. Clients do that when their CPU has no AES instructions (Go's TLS, so
# mender-client; an openssl.cnf, as Tern's emulated image and docs/porting.md's boards):
# there ChaCha20 reads an artifact faster than AES-GCM (on the emulated device, 44 MB in
# 3.5-4.3 s against 6.1-6.5 s: BENCHMARKS.md, bench.ota).
OP_PRIORITIZE_CHACHA = 1 << 21


def server_context(config, default_factory) -> ssl.SSLContext:
    """gunicorn's `ssl_context` hook: its default context, taking the client's ChaCha20."""
    context = default_factory()
    context.options |= OP_PRIORITIZE_CHACHA
    return context


def fingerprint(cert_path: Path) -> str:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def ensure_self_signed(directory: Path, names: list[str]) -> tuple[Path, Path, bool]:
    """Return (cert, key, created); an existing pair is kept, whatever names it has."""
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path, False
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path, True


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)
