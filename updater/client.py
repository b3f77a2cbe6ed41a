"""The Mender device API, as Debian's mender-client 3.4 speaks it, for the daemon.

Every call raises `requests.RequestException` on network errors, `Unauthorized` when the
server does not (yet) accept the device, `Aborted` on 409 and `ServerError` on any other
unexpected answer; the daemon decides what to retry.
"""
import base64
import json

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

DEVICES = "/api/devices"
AUTH = f"{DEVICES}/v1/authentication/auth_requests"
INVENTORY = f"{DEVICES}/v1/inventory/device/attributes"
NEXT = f"{DEVICES}/v2/deployments/device/deployments/next"
DEPLOYMENT = f"{DEVICES}/v1/deployments/device/deployments"
TIMEOUT = 60


class ServerError(Exception):
    """The server answered something the protocol does not allow here."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status

    @property
    def permanent(self) -> bool:
        """A 4xx that the same request again cannot turn into a success."""
        return self.status is not None and 400 <= self.status < 500 and \
            self.status not in (401, 408, 429)


class Unauthorized(ServerError):
    """The server has not accepted the device (pending, rejected) or the token expired."""


class Aborted(ServerError):
    """409: the deployment was aborted (or is already finished)."""


def sign(key, body: bytes) -> str:
    """X-MEN-Signature: base64 of the signature over the raw body."""
    if isinstance(key, rsa.RSAPrivateKey):
        return base64.b64encode(key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return base64.b64encode(key.sign(body)).decode()
    raise ValueError(f"unsupported device key type {type(key).__name__}")


class Client:
    def __init__(self, server_url: str, key, identity: dict[str, str],
                 certificate: str = ""):
        self.url = server_url.rstrip("/")
        self.key = key
        self.identity = identity
        self.session = requests.Session()
        # Given with each request: a session's `verify` loses to REQUESTS_CA_BUNDLE.
        self.verify = certificate or True
        self.token: str | None = None

    def authenticate(self) -> None:
        pubkey = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        body = json.dumps({"id_data": json.dumps(self.identity, separators=(",", ":")),
                           "tenant_token": "", "pubkey": pubkey.decode()}).encode()
        headers = {"Content-Type": "application/json", "X-MEN-Signature": sign(self.key, body)}
        response = self.session.post(self.url + AUTH, data=body, headers=headers,
                                     timeout=TIMEOUT, verify=self.verify)
        self._check(response, 200)
        self.token = response.text.strip()

    def send_inventory(self, attributes: dict[str, str]) -> None:
        document = [{"name": name, "value": value} for name, value in attributes.items()]
        self._check(self._call("PUT", INVENTORY, document), 200)

    def next_deployment(self, provides: dict[str, str]) -> dict | None:
        """The deployment for this device, or None (204)."""
        response = self._call("POST", NEXT, {"device_provides": provides,
                                             "update_control_map": False})
        self._check(response, 200, 204)
        return response.json() if response.status_code == 200 else None

    def report_status(self, deployment_id: str, status: str) -> None:
        response = self._call("PUT", f"{DEPLOYMENT}/{deployment_id}/status", {"status": status})
        self._check(response, 204)

    def upload_log(self, deployment_id: str, messages: list[dict]) -> None:
        """`messages`: Mender's {timestamp, level, message}, as the updater logs them."""
        response = self._call("PUT", f"{DEPLOYMENT}/{deployment_id}/log",
                              {"messages": messages})
        self._check(response, 204)

    def _call(self, method: str, path: str, document) -> requests.Response:
        """An authenticated call; authenticates first, and once more if the token expired."""
        for attempt in range(2):
            if self.token is None:
                self.authenticate()
            response = self.session.request(
                method, self.url + path, json=document, timeout=TIMEOUT, verify=self.verify,
                headers={"Authorization": f"Bearer {self.token}"})
            if response.status_code != 401 or attempt:
                return response
            self.token = None
        return response

    def _check(self, response: requests.Response, *expected: int) -> None:
        if response.status_code in expected:
            return
        message = f"{response.request.method} {response.url}: {response.status_code} " \
                  f"{response.text[:200]}"
        if response.status_code == 401:
            self.token = None
            raise Unauthorized(message, 401)
        if response.status_code == 409:
            raise Aborted(message, 409)
        raise ServerError(message, response.status_code)
