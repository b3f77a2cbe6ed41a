"""A simulated device's identity and key, and its signed auth request, as mender-client
sends them: for tests that talk to the server's device API without the updater."""
import base64
import json

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

AUTH_PATH = "/api/devices/v1/authentication/auth_requests"


class SimulatedDevice:
    """A device's identity and key, and its signed auth request, as mender-client sends it."""

    def __init__(self, identity: dict, key_kind: str = "rsa"):
        self.identity = identity
        self.key = {"rsa": lambda: rsa.generate_private_key(65537, 2048),
                    "ecdsa": lambda: ec.generate_private_key(ec.SECP256R1()),
                    "ed25519": ed25519.Ed25519PrivateKey.generate}[key_kind]()
        self.pubkey = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        self.token: str | None = None

    def auth_request(self) -> tuple[bytes, dict[str, str]]:
        """The body and headers of an auth request."""
        body = json.dumps({"id_data": json.dumps(self.identity), "tenant_token": "",
                           "pubkey": self.pubkey}).encode()
        return body, {"Content-Type": "application/json", "X-MEN-Signature": self.sign(body)}

    def sign(self, body: bytes) -> str:
        if isinstance(self.key, rsa.RSAPrivateKey):
            signature = self.key.sign(body, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(self.key, ec.EllipticCurvePrivateKey):
            signature = self.key.sign(body, ec.ECDSA(hashes.SHA256()))
        else:
            signature = self.key.sign(body)
        return base64.b64encode(signature).decode()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}
