"""The auth token kept across restarts (updater/tokens.py) and the client that uses it: used
only for the server, identity and key it was issued for; anything wrong with the file costs
an auth request, never a crash; a refused token is dropped and the client authenticates."""
import json
import os
import stat
from email.message import Message

import pytest

from updater import identity
from updater.client import AUTH, INVENTORY, Client
from updater.http import Answer
from updater.tokens import TokenStore

URL = "https://tern.example.com"
DEVICE = {"mac": "52:54:00:12:34:56"}


@pytest.fixture
def store(tmp_path) -> TokenStore:
    data = tmp_path / "data"
    return TokenStore(data / "auth-token.json", identity.device_key_file(data))


def test_a_token_comes_back_for_the_server_and_identity_it_was_issued_for(store):
    store.save(URL, DEVICE, "token-1")
    assert store.load(URL, DEVICE) == "token-1"
    assert store.load(URL + "/", DEVICE) == "token-1"  # the same URL
    store.save(URL, DEVICE, "token-2")
    assert store.load(URL, DEVICE) == "token-2"


def test_a_token_is_never_offered_to_another_server_identity_or_key(store):
    store.save(URL, DEVICE, "token-1")
    assert store.load("https://other.example.com", DEVICE) is None
    assert store.load("http://tern.example.com", DEVICE) is None
    assert store.load(URL + ":8443", DEVICE) is None
    assert store.load(URL, {"mac": "52:54:00:00:00:01"}) is None
    assert store.load(URL, {**DEVICE, "serial": "1"}) is None
    store.key_file.write_bytes(store.key_file.read_bytes() + b"\n")  # another key
    assert store.load(URL, DEVICE) is None


def test_the_token_file_is_private_whatever_the_umask(store):
    old = os.umask(0)
    try:
        store.save(URL, DEVICE, "token-1")
        assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
        store.path.with_name(store.path.name + ".tmp").write_bytes(b"left by a power cut")
        os.chmod(store.path.with_name(store.path.name + ".tmp"), 0o666)
        store.save(URL, DEVICE, "token-2")
        assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    finally:
        os.umask(old)
    assert store.load(URL, DEVICE) == "token-2"


@pytest.mark.parametrize("content", [
    b"", b"{", b"\xff\xfe garbage", b"null", b"[]", b'"token"', b"[" * 100_000,
    b'{"version": 2, "token": "t"}',
    json.dumps({"version": 1, "server_url": URL, "identity": DEVICE}).encode(),
    json.dumps({"version": 1, "server_url": URL, "identity": DEVICE, "token": 7}).encode(),
    json.dumps({"version": 1, "server_url": URL, "identity": DEVICE, "token": ""}).encode(),
], ids=["empty", "cut", "binary", "null", "list", "string", "deep", "version", "no-token",
        "number", "empty-token"])
def test_a_corrupt_token_file_is_ignored(store, content):
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_bytes(content)
    assert store.load(URL, DEVICE) is None
    store.save(URL, DEVICE, "token-1")  # and replaced at the next authentication
    assert store.load(URL, DEVICE) == "token-1"


@pytest.mark.parametrize("token", ["", "abc\r\nX-Injected: 1", "two words", "caf\u00e9",
                                   None, 7])
def test_a_kept_token_that_is_no_bearer_token_is_ignored(store, token):
    """Bound right, but damaged: a token that would break the Authorization header (and
    the daemon's every request) is never used."""
    store.save(URL, DEVICE, "token-1")
    document = json.loads(store.path.read_text())
    store.path.write_text(json.dumps({**document, "token": token}))
    assert store.load(URL, DEVICE) is None
    store.path.write_text(json.dumps({**document, "token": "eyJh.eyJz-_x.c2ln"}))
    assert store.load(URL, DEVICE) == "eyJh.eyJz-_x.c2ln"


def test_an_unreadable_or_unwritable_token_file_costs_no_crash(store, capsys):
    store.path.mkdir(parents=True)  # a directory where the file should be
    assert store.load(URL, DEVICE) is None
    store.save(URL, DEVICE, "token-1")
    assert "the auth token is not kept" in capsys.readouterr().err
    store.discard()
    assert "auth-token.json" in capsys.readouterr().err
    store.key_file.unlink()  # no key: nothing to bind to
    store.path.rmdir()
    assert store.load(URL, DEVICE) is None


class Server:
    """A transport answering as the server would: a token for an auth request, 401 for any
    token but the valid one."""

    def __init__(self, valid: str = "fresh-token"):
        self.valid = valid
        self.requests: list[tuple[str, str | None]] = []

    def request(self, method, url, body, headers, timeout):
        path = url.removeprefix(URL)
        self.requests.append((path, headers.get("Authorization")))
        if path == AUTH:
            return Answer(200, "OK", Message(), self.valid.encode())
        ok = headers.get("Authorization") == f"Bearer {self.valid}"
        return Answer(200 if ok else 401, "", Message(), b"")


class Signer:
    def __init__(self):
        self.signed_count = 0

    def signed(self, build):
        self.signed_count += 1
        return build("PEM"), "signature"


def test_the_client_uses_the_kept_token_without_signing(store):
    store.save(URL, DEVICE, "kept-token")
    server, signer = Server(valid="kept-token"), Signer()
    Client(URL, signer, DEVICE, transport=server, tokens=store).send_inventory({"a": "1"})
    assert server.requests == [(INVENTORY, "Bearer kept-token")]
    assert signer.signed_count == 0


def test_a_refused_kept_token_is_dropped_and_the_client_authenticates(store):
    store.save(URL, DEVICE, "revoked-token")
    server, signer = Server(), Signer()
    Client(URL, signer, DEVICE, transport=server, tokens=store).send_inventory({"a": "1"})
    assert server.requests == [(INVENTORY, "Bearer revoked-token"), (AUTH, None),
                               (INVENTORY, "Bearer fresh-token")]
    assert signer.signed_count == 1
    assert store.load(URL, DEVICE) == "fresh-token"


def test_a_token_of_another_server_is_never_sent(store):
    store.save("https://old.example.com", DEVICE, "old-server-token")
    server = Server()
    Client(URL, Signer(), DEVICE, transport=server, tokens=store).send_inventory({"a": "1"})
    assert server.requests == [(AUTH, None), (INVENTORY, "Bearer fresh-token")]
    assert store.load(URL, DEVICE) == "fresh-token"


def test_a_token_refused_for_good_is_not_offered_at_the_next_start(store):
    """Refused again after a fresh authentication (the device is no longer accepted): the
    kept token is discarded, the next start authenticates first."""
    store.save(URL, DEVICE, "revoked-token")

    class Refusing(Server):
        def request(self, method, url, body, headers, timeout):
            answer = super().request(method, url, body, headers, timeout)
            return answer if url.endswith(AUTH) else Answer(401, "", Message(), b"")

    with pytest.raises(Exception, match="401"):
        Client(URL, Signer(), DEVICE, transport=Refusing(), tokens=store).send_inventory({})
    assert not store.path.exists()
