"""The Mender device API, as Debian's mender-client 3.4 speaks it, for the daemon.

Every call raises `Unreachable` when no answer came (connection, TLS, timeout),
`Unauthorized` when the server does not (yet) accept the device, `Aborted` on 409 and
`ServerError` on any other unexpected answer (all are `ServerError`s); the daemon decides
what to retry. The calls go through `updater.http` (the standard library), or whatever
`transport` with its `request` the caller gives (the fleet simulator: pooled sessions).
"""
import http.client
import json

from .http import Answer, Connections
from .tokens import TokenStore

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


class Unreachable(ServerError):
    """No answer: the connection failed, timed out or broke (it may work again later)."""


class Unauthorized(ServerError):
    """The server has not accepted the device (pending, rejected) or the token expired."""


class Aborted(ServerError):
    """409: the deployment was aborted (or is already finished)."""


class Client:
    def __init__(self, server_url: str, signer, identity: dict[str, str],
                 certificate: str = "", transport=None, tokens: TokenStore | None = None):
        """`signer`: signs the auth request with the device's key (`identity.KeySigner`,
        or the daemon's `identity.ForkedSigner`); `tokens`: where the token is kept across
        restarts (the daemon's), and the one kept for this server and identity is used."""
        self.url = server_url.rstrip("/")
        self.signer = signer
        self.identity = identity
        self.verify = certificate or True  # the server's CA file, or the system's CAs
        self.transport = transport or Connections(self.verify)
        self.tokens = tokens
        self.token = tokens.load(self.url, identity) if tokens else None

    def authenticate(self) -> None:
        body, signature = self.signer.signed(self._auth_body)
        headers = {"Content-Type": "application/json", "X-MEN-Signature": signature}
        response = self._send("POST", AUTH, body, headers)
        self._check("POST", AUTH, response, 200)
        self.token = response.body.decode().strip()
        if self.tokens:
            self.tokens.save(self.url, self.identity, self.token)

    def _auth_body(self, pubkey: str) -> bytes:
        return json.dumps({"id_data": json.dumps(self.identity, separators=(",", ":")),
                           "tenant_token": "", "pubkey": pubkey}).encode()

    def send_inventory(self, attributes: dict[str, str]) -> None:
        document = [{"name": name, "value": value} for name, value in attributes.items()]
        self._check("PUT", INVENTORY, self._call("PUT", INVENTORY, document), 200)

    def next_deployment(self, provides: dict[str, str]) -> dict | None:
        """The deployment for this device, or None (204)."""
        response = self._call("POST", NEXT, {"device_provides": provides,
                                             "update_control_map": False})
        self._check("POST", NEXT, response, 200, 204)
        return json.loads(response.body) if response.status == 200 else None

    def report_status(self, deployment_id: str, status: str) -> None:
        path = f"{DEPLOYMENT}/{deployment_id}/status"
        self._check("PUT", path, self._call("PUT", path, {"status": status}), 204)

    def upload_log(self, deployment_id: str, messages: list[dict]) -> None:
        """`messages`: Mender's {timestamp, level, message}, as the updater logs them."""
        path = f"{DEPLOYMENT}/{deployment_id}/log"
        self._check("PUT", path, self._call("PUT", path, {"messages": messages}), 204)

    def _call(self, method: str, path: str, document) -> Answer:
        """An authenticated call; authenticates first, and once more if the token expired."""
        body = json.dumps(document).encode()
        for attempt in range(2):
            if self.token is None:
                self.authenticate()
            response = self._send(method, path, body, {
                "Content-Type": "application/json", "Authorization": f"Bearer {self.token}"})
            if response.status != 401 or attempt:
                return response
            self._drop_token()
        return response

    def _drop_token(self) -> None:
        """The server refused the token (expired, revoked, not accepted)."""
        if self.token is not None and self.tokens:
            self.tokens.discard()
        self.token = None

    def _send(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Answer:
        try:
            return self.transport.request(method, self.url + path, body, headers, TIMEOUT)
        except (OSError, http.client.HTTPException) as error:
            raise Unreachable(f"{method} {self.url}{path}: {error}") from error

    def _check(self, method: str, path: str, response: Answer, *expected: int) -> None:
        if response.status in expected:
            return
        text = response.body[:200].decode(errors="replace")
        message = f"{method} {self.url}{path}: {response.status} {text}"
        if response.status == 401:
            self._drop_token()
            raise Unauthorized(message, 401)
        if response.status == 409:
            raise Aborted(message, 409)
        raise ServerError(message, response.status)
