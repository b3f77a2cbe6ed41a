"""`tern-server`: set up a data directory, serve it over HTTPS, and manage it.

Management commands talk to the API, either of a running server (`--server URL`,
with `--token`) or, by default, of the data directory in-process: one code path
through the same routes, checks and audit log either way.
"""
import gc
import getpass
import json
import os
import re
import socket
import ssl
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

import click

from .config import data_dir_config, new_secret

DEFAULT_BIND = "0.0.0.0:8443"
UPLOAD_CHUNK = 1 << 20
UPLOAD_ANSWER_SECONDS = 3600


def main() -> None:
    cli(prog_name="tern-server")


class ReadableFile(click.Path):
    """A file to read; a bad path is one line of error (as every failure here), not a usage
    message."""

    def __init__(self):
        super().__init__(exists=True, dir_okay=False, path_type=Path)

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as error:
            raise click.ClickException(error.format_message()) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              envvar="TERN_DATA_DIR", default="tern-data", show_default=True)
@click.option("--server", envvar="TERN_SERVER", help="URL of a running server to manage.")
@click.option("--token", envvar="TERN_TOKEN", help="API token for --server.")
@click.option("--ca-cert", envvar="TERN_CA_CERT", type=ReadableFile(),
              help="Certificate to trust for --server (e.g. its self-signed one).")
@click.option("--timeout", envvar="TERN_TIMEOUT", type=click.FloatRange(min=0, min_open=True),
              default=300, show_default=True,
              help="Seconds to wait for --server to connect or to send anything.")
@click.pass_context
def cli(ctx, data_dir, server, token, ca_cert, timeout):
    """Tern management server."""
    ctx.obj = {"data_dir": data_dir, "server": server, "token": token, "ca_cert": ca_cert,
               "timeout": timeout}


# -- init, serve --------------------------------------------------------------------------------


@cli.command()
@click.option("--database-url", help="PostgreSQL URL (postgresql+psycopg://...); "
                                     "default SQLite in the data directory.")
@click.pass_obj
def init(obj, database_url):
    """Create the data directory (or upgrade its database schema)."""
    root: Path = obj["data_dir"]
    settings_path, secret_path = root / "config.json", root / "secret.key"
    if settings_path.exists() and database_url:
        raise click.ClickException(f"{settings_path} exists; edit it to change the database")
    previous_umask = os.umask(0o077)  # what init creates is the server's alone
    try:
        root.mkdir(parents=True, exist_ok=True)
        (root / "artifacts").mkdir(exist_ok=True)
        if not settings_path.exists():
            settings_path.write_text(json.dumps({"database_url": database_url}, indent=2)
                                     + "\n")
        if not secret_path.exists():
            secret_path.touch(mode=0o600)
            secret_path.write_text(new_secret() + "\n")
    except OSError as error:
        raise click.ClickException(f"cannot create {error.filename}: {error.strerror}") from None
    finally:
        os.umask(previous_umask)
    _upgrade_privately(root, _data_dir_config(root)["DATABASE_URL"])
    click.echo(f"data directory ready: {root.resolve()}")


def _upgrade_privately(root: Path, database_url: str) -> None:
    """Upgrade the schema, then keep the data directory (0700) and a SQLite database
    (0600) to the server's user: they hold password hashes and the secret key. SQLite
    creates the -wal and -shm files later with its database's mode."""
    from sqlalchemy.engine import make_url

    previous_umask = os.umask(0o077)  # a database created now is private from the start
    try:
        _upgrade(database_url)
    finally:
        os.umask(previous_umask)
    private = {root: 0o700}  # data directories made before this was so, too
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        for suffix in ("", "-wal", "-shm", "-journal"):
            private[Path(url.database + suffix)] = 0o600
    for path, mode in private.items():
        if path.exists() and path.stat().st_mode & 0o777 != mode:
            try:
                path.chmod(mode)
            except PermissionError:  # not ours: say so, and serve anyway
                click.echo(f"warning: cannot make {path} mode {mode:o} (owned by another "
                           "user); it may be readable by others", err=True)


@cli.command()
@click.option("--bind", default=DEFAULT_BIND, show_default=True, metavar="HOST:PORT")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 256),
              help="Threads per worker.")
@click.option("--cert", type=click.Path(exists=True, dir_okay=False), help="PEM certificate.")
@click.option("--key", type=click.Path(exists=True, dir_okay=False), help="PEM private key.")
@click.option("--name", "names", multiple=True,
              help="Host name or address for the self-signed certificate; repeatable.")
@click.option("--request-log", type=click.Choice(["json", "off"]), default="json",
              show_default=True, help="One JSON object per request on stderr.")
@click.pass_obj
def serve(obj, bind, workers, threads, cert, key, names, request_log):
    """Serve the API over HTTPS with gunicorn (self-signed certificate unless --cert).

    The schema is upgraded first, once, before the workers start."""
    from gunicorn.app.base import BaseApplication

    from . import create_app
    from .tls import ensure_self_signed, fingerprint, server_context

    if bool(cert) != bool(key):
        raise click.UsageError("--cert and --key go together")
    port_claim = _claim_port(bind)
    # A stream's thread mostly sleeps (the table read once a second): all threads but one
    # may hold streams, the one left (and the front) answers the devices meanwhile.
    config = {"EVENT_STREAMS": max(1, threads - 1), **_data_dir_config(obj["data_dir"]),
              "REQUEST_LOG": request_log, "DATABASE_POOL_SIZE": threads}
    _upgrade_privately(obj["data_dir"], config["DATABASE_URL"])
    if not cert:
        host = bind.rsplit(":", 1)[0].strip("[]")
        defaults = ["localhost", "127.0.0.1", "::1", socket.gethostname()]
        wanted = list(dict.fromkeys([*names, *([host] if host not in ("0.0.0.0", "::") else []),
                                     *defaults]))
        cert_path, key_path, created = ensure_self_signed(obj["data_dir"] / "tls", wanted)
        cert, key = str(cert_path), str(key_path)
        click.echo(f"{'created' if created else 'using'} self-signed certificate {cert}")
    click.echo(f"certificate SHA-256 fingerprint: {fingerprint(Path(cert))}")
    click.echo(f"serving https://{bind}")
    sys.stdout.flush()

    class Server(BaseApplication):
        def load_config(self):
            for option, value in {"bind": [bind], "workers": workers, "threads": threads,
                                  "worker_class": "server.worker.FrontThreadWorker",
                                  "certfile": cert, "keyfile": key,
                                  "ssl_context": server_context,
                                  "timeout": 120, "graceful_timeout": 10, "reuse_port": True,
                                  "proc_name": "tern-server"}.items():
                self.cfg.set(option, value)

        def load(self):  # in each worker
            from .events.webhooks import start_background

            app = create_app(config)
            start_background(app)  # webhook deliveries, old events' deletion
            # The app's objects live as long as the worker: keep the cyclic collector off
            # them, or each full collection walks them all (tens of ms: a p99 spike).
            gc.freeze()
            return app

    # Metrics of every worker, added up at scrape time (server.metrics); set before any
    # worker imports prometheus_client.
    with port_claim, tempfile.TemporaryDirectory(prefix="tern-metrics-") as metrics_dir:
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", metrics_dir)
        Server().run()


def _upgrade(database_url: str) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from .migrate import upgrade

    try:
        upgrade(database_url)
    except SQLAlchemyError as error:
        raise click.ClickException(_database_failure(database_url, error)) from None


def _database_failure(database_url: str, error) -> str:
    """One line: the database (its password hidden) and the driver's reason."""
    from sqlalchemy import make_url

    shown = make_url(database_url).render_as_string(hide_password=True)
    return f"database {shown}: {_one_line(str(getattr(error, 'orig', None) or error))}"


def _claim_port(bind: str) -> socket.socket:
    """Fail at once if anything holds `bind`'s port, then hold it for this server.

    gunicorn's workers each bind their own SO_REUSEPORT listener, and the kernel lets any
    process of the same user join those: a second `serve` would silently share the port. A
    bind without SO_REUSEPORT fails on a port that anyone holds (SO_REUSEADDR only lets it
    pass TIME_WAIT connections). The socket returned, bound with SO_REUSEPORT but never
    listening (so never given connections), keeps the port from looking free to another
    `serve` while our workers start or restart."""
    host, _, port = bind.rpartition(":")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM)[0]
    except (ValueError, OSError) as e:
        raise click.UsageError(f"--bind {bind}: {e}") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            raise click.ClickException(f"cannot listen on {bind}: {e.strerror}"
                                       " (another server runs there?)") from None
    claim = socket.socket(family, kind, proto)
    claim.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    claim.bind(address)
    return claim


def _data_dir_config(data_dir: Path) -> dict:
    """The data directory's configuration, its artifact verify keys checked."""
    from .artifacts.keys import KeyConfigError, load_trusted_keys

    if not (data_dir / "config.json").exists():
        raise click.ClickException(f"{data_dir} is not a data directory; run "
                                   f"`tern-server --data-dir {data_dir} init` first")
    try:
        config = data_dir_config(data_dir)
        load_trusted_keys(config["ARTIFACT_VERIFY_KEYS"], Path(config["DATA_DIR"]))
    except OSError as error:
        raise click.ClickException(f"cannot read {error.filename}: {error.strerror}") from None
    except ValueError as error:  # config.json that is not JSON
        raise click.ClickException(f"{data_dir / 'config.json'}: {error}") from None
    except KeyConfigError as error:
        raise click.ClickException(f"{data_dir / 'config.json'}: {error}") from None
    return config


# -- the API client: a running server, or the data directory in-process --------------------------


class Api:
    """The management API of `--server URL`, or of the data directory through Flask's test
    client with a short-lived local token (audited as `local:<user>@cli`)."""

    def __init__(self, obj: dict):
        if obj["server"]:
            import requests

            self._session = requests.Session()
            if obj["token"]:
                self._session.headers["Authorization"] = f"Bearer {obj['token']}"
            self._obj = obj
            self._local = None
        else:
            self._local = self._local_client(obj["data_dir"])

    @staticmethod
    def _local_client(data_dir: Path):
        from sqlalchemy.exc import SQLAlchemyError

        from . import create_app
        from .auth import LOCAL, issue_token
        from .database import db

        app = create_app(_data_dir_config(data_dir))
        try:
            with app.app_context():
                token, _ = issue_token(LOCAL, "local", 600, name=f"{getpass.getuser()}@cli")
                db.session.commit()
        except SQLAlchemyError as error:
            raise click.ClickException(
                _database_failure(app.config["DATABASE_URL"], error)) from None
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        return client

    def call(self, method: str, path: str, *, body=None, params=None, upload=None):
        """`upload`: a file to stream as the body (chunked to a server)."""
        path = f"/api/management/v1{path}"
        if self._local is not None:
            options = {"json": body, "query_string": params}
            if upload is not None:
                options = {"input_stream": upload, "query_string": params,
                           "content_type": "application/octet-stream"}
            response = self._local.open(path, method=method, **options)
            status, document = response.status_code, response.get_json(silent=True)
        else:
            data = iter(lambda: upload.read(UPLOAD_CHUNK), b"") if upload else None
            response = request(self._obj, self._session, method, path, json=body,
                               params=params, data=data,
                               answer_seconds=UPLOAD_ANSWER_SECONDS if upload else None)
            status = response.status_code
            document = _json_of(response)
        if status >= 400:
            message = document.get("error") if isinstance(document, dict) else None
            raise click.ClickException(f"{status}: {_one_line(message or 'request failed')}")
        return document


def request(obj: dict, session, method: str, path: str, answer_seconds: float | None = None,
            **options):
    """One request to `--server`: every way of not getting an answer is one line of error.

    `answer_seconds`: a longer wait for the answer than --timeout (after an upload's last
    byte the server still stores the artifact, in S3 perhaps)."""
    import requests

    server = obj["server"].rstrip("/")
    timeout = (obj["timeout"], max(obj["timeout"], answer_seconds or 0))
    try:
        # verify per request: a session's own setting loses to REQUESTS_CA_BUNDLE
        return session.request(method, server + path, verify=obj["ca_cert"] or True,
                               timeout=timeout, **options)
    except requests.exceptions.Timeout:
        raise click.ClickException(f"{server} did not answer within {max(timeout):g} s "
                                   "(--timeout)") from None
    except requests.exceptions.ConnectionError as error:  # TLS errors included
        cause = _cause(error)
        if isinstance(cause, ssl.SSLCertVerificationError):
            raise click.ClickException(
                f"TLS verification of {server} failed: {_reason(cause)}; trust its "
                "certificate with --ca-cert (or TERN_CA_CERT)") from None
        raise click.ClickException(f"connection to {server} failed: {_reason(cause)}") from None
    except requests.exceptions.RequestException as error:  # a malformed URL
        raise click.ClickException(f"bad --server {server!r}: {_reason(error)}") from None
    except OSError as error:  # e.g. a --ca-cert that is not a certificate
        raise click.ClickException(f"{server}: {_reason(error)}") from None


def _cause(error: BaseException) -> BaseException:
    """The innermost exception of a requests error (urllib3 wraps it several times)."""
    while True:
        inner = getattr(error, "reason", None)
        if not isinstance(inner, BaseException):
            inner = error.__cause__ or error.__context__
        if inner is None and error.args and isinstance(error.args[0], BaseException):
            inner = error.args[0]
        if inner is None:
            return error
        error = inner


def _reason(error: BaseException) -> str:
    error = _cause(error)
    return _one_line(getattr(error, "verify_message", None) or getattr(error, "strerror", None)
                     or str(error) or type(error).__name__)


def _json_of(response):
    if not response.content or "json" not in response.headers.get("Content-Type", ""):
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _Progress:
    """A file read through a progress bar."""

    def __init__(self, file, bar):
        self._file, self._bar = file, bar

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self._bar.update(len(data))
        return data

    def tell(self) -> int:
        return self._file.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise click.ClickException(f"cannot read {path}: {error}") from None


def _output(document, as_json: bool, lines) -> None:
    if as_json:
        click.echo(json.dumps(document, indent=2))
    else:
        for line in lines(document):
            click.echo(line)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


# -- users --------------------------------------------------------------------------------------


ROLES = ("admin", "read-only")  # server.auth.ROLES, without importing the server


def _user_lines(users):
    for u in users if isinstance(users, list) else [users]:
        yield f"{u['id']}  {u['email']}  {u['role']}"


@cli.group()
def user():
    """Users of the management API and the dashboard: admin or read-only."""


@user.command("create")
@click.argument("email")
@click.password_option(envvar="TERN_PASSWORD")
@click.option("--role", type=click.Choice(ROLES), default="admin", show_default=True,
              help="read-only: sees everything, changes nothing.")
@json_option
@click.pass_obj
def user_create(obj, email, password, role, as_json):
    document = Api(obj).call("POST", "/users",
                             body={"email": email, "password": password, "role": role})
    _output(document, as_json,
            lambda d: [f"created user {d['email']} ({d['id']}), {d['role']}"])


@user.command("list")
@json_option
@click.pass_obj
def user_list(obj, as_json):
    _output(Api(obj).call("GET", "/users"), as_json, _user_lines)


@user.command("delete")
@click.argument("user_ref", metavar="EMAIL_OR_ID")
@click.pass_obj
def user_delete(obj, user_ref):
    """Delete a user and revoke all of their tokens."""
    Api(obj).call("DELETE", f"/users/{quote(user_ref, safe='')}")
    click.echo(f"deleted user {user_ref}; their tokens are revoked")


@user.command("passwd")
@click.argument("user_ref", metavar="EMAIL_OR_ID")
@click.password_option(envvar="TERN_PASSWORD", prompt="New password")
@click.pass_obj
def user_passwd(obj, user_ref, password):
    """Set a user's password; their login sessions end (API tokens stay)."""
    Api(obj).call("PATCH", f"/users/{quote(user_ref, safe='')}", body={"password": password})
    click.echo(f"password of {user_ref} changed; their login sessions are revoked")


@user.command("role")
@click.argument("user_ref", metavar="EMAIL_OR_ID")
@click.argument("role", type=click.Choice(ROLES))
@json_option
@click.pass_obj
def user_role(obj, user_ref, role, as_json):
    """Make a user an admin or read-only (their tokens follow at once)."""
    document = Api(obj).call("PATCH", f"/users/{quote(user_ref, safe='')}", body={"role": role})
    _output(document, as_json, _user_lines)


@user.command("revoke-tokens")
@click.argument("user_ref", metavar="EMAIL_OR_ID")
@click.pass_obj
def user_revoke_tokens(obj, user_ref):
    """Revoke every token of a user: login sessions and API tokens."""
    document = Api(obj).call("DELETE", f"/users/{quote(user_ref, safe='')}/tokens")
    click.echo(f"revoked {document['revoked']} tokens of {user_ref}")


@user.command("login")
@click.argument("email")
@click.password_option(envvar="TERN_PASSWORD", confirmation_prompt=False)
@click.pass_obj
def user_login(obj, email, password):
    """Print a token for --server URL (use it as --token or TERN_TOKEN)."""
    import requests

    if not obj["server"]:
        raise click.UsageError("login needs --server URL")
    response = request(obj, requests.Session(), "POST", "/api/management/v1/auth/login",
                       auth=(email, password))
    if response.status_code != 200:  # 401 wrong email or password, 429 too many failures
        error = (_json_of(response) or {}).get("error")
        raise click.ClickException(f"{response.status_code}: {error or 'login failed'}")
    click.echo(response.json()["token"])


# -- devices ------------------------------------------------------------------------------------


def _device_lines(devices):
    for d in devices if isinstance(devices, list) else [devices]:
        attributes = {a["name"]: a["value"] for a in d["attributes"]}
        yield (f"{d['id']}  {d['status']:<13}  {json.dumps(d['identity_data'])}  "
               f"{attributes.get('device_type', '-')}  {attributes.get('artifact_name', '-')}")


@cli.group()
def devices():
    """Devices: list, accept, reject, preauthorize, decommission."""


@devices.command("list")
@click.option("--status", type=click.Choice(["pending", "accepted", "rejected", "preauthorized"]))
@click.option("--group")
@click.option("--attr", "attributes", multiple=True, metavar="NAME=VALUE",
              help="Inventory attribute filter; repeatable.")
@json_option
@click.pass_obj
def devices_list(obj, status, group, attributes, as_json):
    params = {"status": status, "group": group}
    for attribute in attributes:
        name, _, value = attribute.partition("=")
        params[f"attr.{name}"] = value
    document = Api(obj).call("GET", "/devices",
                             params={k: v for k, v in params.items() if v is not None})
    _output(document, as_json, _device_lines)


def _status_command(status: str, verb: str):
    @click.argument("device_id")
    @click.option("--auth-id", help="The auth set (key); accept needs it when the device has "
                  "more than one key not rejected; reject without it rejects every key.")
    @json_option
    @click.pass_obj
    def command(obj, device_id, auth_id, as_json):
        body = {"status": status, **({"auth_id": auth_id} if auth_id else {})}
        document = Api(obj).call("PUT", f"/devices/{device_id}/status", body=body)
        _output(document, as_json, lambda d: [f"{d['id']}: {d['status']}"])

    command.__doc__ = f"{verb} a device."
    return command


devices.command("accept")(_status_command("accepted", "Accept"))
devices.command("reject")(_status_command("rejected", "Reject"))


@devices.command("decommission")
@click.argument("device_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def devices_decommission(obj, device_id, yes):
    """Decommission a device: its tokens revoked, its keys and inventory deleted, its
    unfinished deployments closed."""
    if not yes:
        click.confirm(f"Decommission device {device_id}?", abort=True, err=True)
    Api(obj).call("DELETE", f"/devices/{device_id}")
    click.echo(f"{device_id}: decommissioned")


@devices.command("preauthorize")
@click.option("--identity", "identity", multiple=True, required=True, metavar="KEY=VALUE",
              help="Identity attribute, as the device's identity script prints; repeatable.")
@click.option("--pubkey", type=ReadableFile(), required=True, help="PEM public key file.")
@json_option
@click.pass_obj
def devices_preauthorize(obj, identity, pubkey, as_json):
    identity_data = dict(item.split("=", 1) for item in identity if "=" in item)
    document = Api(obj).call("POST", "/devices",
                             body={"identity_data": identity_data,
                                   "pubkey": _read_text(pubkey)})
    _output(document, as_json, _device_lines)


# -- artifacts ----------------------------------------------------------------------------------


def _artifact_lines(artifacts):
    for a in artifacts if isinstance(artifacts, list) else [artifacts]:
        yield (f"{a['id']}  {a['name']}  {','.join(a['device_types_compatible'])}  "
               f"{a['size']} bytes  {_signature_state(a)}")


def _signature_state(artifact: dict) -> str:
    if artifact["signature"] == "verified":
        key = artifact["verified_by"]
        return f"verified by {key['name']} (SHA-256 {key['fingerprint'][:16]}...)"
    if artifact["signature"] == "unverified":
        return "signed, not verified (no keys configured)"
    return artifact["signature"]


@cli.group()
def artifacts():
    """Artifacts: upload, list."""


@artifacts.command("upload")
@click.argument("path", type=ReadableFile())
@click.option("--description", default="")
@click.option("--no-progress", is_flag=True)
@json_option
@click.pass_obj
def artifacts_upload(obj, path, description, no_progress, as_json):
    api = Api(obj)
    hidden = no_progress or as_json or not sys.stderr.isatty()
    with click.progressbar(length=path.stat().st_size, label=f"uploading {path.name}",
                           file=sys.stderr, hidden=hidden) as bar, path.open("rb") as source:
        document = api.call("POST", "/artifacts", params={"description": description},
                            upload=_Progress(source, bar))
    _output(document, as_json, _artifact_lines)


@artifacts.command("list")
@json_option
@click.pass_obj
def artifacts_list(obj, as_json):
    _output(Api(obj).call("GET", "/artifacts"), as_json, _artifact_lines)


# -- deployments --------------------------------------------------------------------------------


def _deployment_lines(deployments):
    for d in deployments if isinstance(deployments, list) else [deployments]:
        counts = ", ".join(f"{k} {v}" for k, v in d["statistics"].items() if v)
        yield f"{d['id']}  {d['name']}  {d['artifact_name']}  {d['status']}  ({counts})"
        if d.get("pause_reason"):
            yield f"  paused: {d['pause_reason']}"
        if len(d.get("phases", ())) > 1:
            for phase in d["phases"]:
                started = f"started {phase['started_at'][:16]}" if phase["started_at"] \
                    else "waiting"
                chosen = f" ({_conditions(phase['filter'])})" if phase.get("filter") else ""
                yield (f"  phase {phase['number']}: {phase['size']} devices{chosen}, "
                       f"{started}, {phase['successes']} succeeded, "
                       f"{phase['failures']} failed")


def _phase(spec: str, api: Api) -> dict:
    """`--phase SIZE|where=CONDITION|dynamic-group=NAME[,START][,max-failures=N|N%]` as the
    API's phase object. SIZE: a count, N% or rest (the last phase); where=: the devices
    matching the condition (as groups create --where; repeatable, all must hold);
    dynamic-group=: those matching the group's filter now; START: release, after=N% (of
    the phase before succeeded) or at=TIME (ISO 8601)."""
    first, *options = spec.split(",")
    phase = {}
    if "=" in first:
        options.insert(0, first)
    elif first != "rest":
        phase["size"] = int(first) if first.isdigit() else first
    for option in options:
        key, has_value, value = option.partition("=")
        if option == "release":
            phase["release"] = True
        elif has_value and key == "where":
            phase.setdefault("filter", []).append(parse_condition(value))
        elif has_value and key == "dynamic-group":
            group = api.call("GET", f"/dynamic-groups/{quote(value, safe='')}")
            phase.setdefault("filter", []).extend(group["filter"])
        elif has_value and key in ("after", "at", "max-failures"):
            name = {"after": "after_success", "at": "start_at"}.get(key, "max_failures")
            phase[name] = int(value) if key == "max-failures" and value.isdigit() else value
        else:
            raise click.ClickException(
                f"--phase {spec}: expected SIZE|where=CONDITION|dynamic-group=NAME"
                "[,release|after=N%|at=TIME][,max-failures=N], e.g. 10% or rest,after=90% "
                "or where=device_type=rpi4")
    return phase


@cli.group()
def deployments():
    """Deployments: list, create, show, pause, resume, release-phase, abort."""


@deployments.command("list")
@json_option
@click.pass_obj
def deployments_list(obj, as_json):
    """Deployments, newest first."""
    _output(Api(obj).call("GET", "/deployments"), as_json, _deployment_lines)


@deployments.command("create")
@click.option("--name", required=True)
@click.option("--artifact-name", required=True)
@click.option("--device", "device_ids", multiple=True, help="Device id; repeatable.")
@click.option("--group", help="A static group.")
@click.option("--dynamic-group", help="A dynamic group: devices that join it while the "
              "deployment is open get it too (unless --fixed).")
@click.option("--fixed", is_flag=True,
              help="With --dynamic-group: only the devices in the group now.")
@click.option("--all-devices", is_flag=True)
@click.option("--force", is_flag=True,
              help="Send the artifact even to devices that have it or seem incompatible.")
@click.option("--phase", "phases", multiple=True, metavar="SPEC",
              help="A phase, in order; repeatable: SIZE (N, N% or rest), or its devices by "
                   "inventory (where=CONDITION as groups create --where, or "
                   "dynamic-group=NAME), then how it starts (release, after=N% of the "
                   "phase before succeeded, at=TIME; the first starts with the deployment), "
                   "e.g. --phase 5 --phase 50%,after=90% --phase rest,release, or --phase "
                   "where=site=lab --phase rest,after=100%. Also max-failures=N|N%.")
@click.option("--max-failures", metavar="N|N%",
              help="Pause when more of a phase's finished devices failed (every phase).")
@click.option("--retries", type=click.IntRange(0, 100), default=0, show_default=True,
              help="Attempts a device may make after a failed one.")
@click.option("--start-at", metavar="TIME", help="Start at this time (ISO 8601; UTC unless "
                                                 "it has an offset).")
@click.option("--window", metavar="HH:MM-HH:MM",
              help="Daily maintenance window (UTC): nothing new starts outside it.")
@json_option
@click.pass_obj
def deployments_create(obj, name, artifact_name, device_ids, group, dynamic_group, fixed,
                       all_devices, force, phases, max_failures, retries, start_at, window,
                       as_json):
    body = {"name": name, "artifact_name": artifact_name, "force": force,
            "all_devices": all_devices, "retries": retries}
    if device_ids:
        body["devices"] = list(device_ids)
    if group:
        body["group"] = group
    if dynamic_group:
        body["dynamic_group"], body["fixed"] = dynamic_group, fixed
    api = Api(obj)
    if phases:
        body["phases"] = [_phase(spec, api) for spec in phases]
    if max_failures is not None:
        body["max_failures"] = int(max_failures) if max_failures.isdigit() else max_failures
    if start_at:
        body["start_at"] = start_at
    if window:
        body["window"] = window
    _output(api.call("POST", "/deployments", body=body), as_json, _deployment_lines)


@deployments.command("show")
@click.argument("deployment_id")
@json_option
@click.pass_obj
def deployments_show(obj, deployment_id, as_json):
    api = Api(obj)
    document = api.call("GET", f"/deployments/{deployment_id}")
    document["devices"] = api.call("GET", f"/deployments/{deployment_id}/devices")

    def lines(d):
        yield from _deployment_lines(d)
        for device in d["devices"]:
            yield f"  {device['device_id']}  {device['status']}"

    _output(document, as_json, lines)


@deployments.command("abort")
@click.argument("deployment_id")
@json_option
@click.pass_obj
def deployments_abort(obj, deployment_id, as_json):
    document = Api(obj).call("PUT", f"/deployments/{deployment_id}/status",
                             body={"status": "aborted"})
    _output(document, as_json, _deployment_lines)


@deployments.command("pause")
@click.argument("deployment_id")
@click.option("--reason", help="Why, for the audit log and the dashboard.")
@json_option
@click.pass_obj
def deployments_pause(obj, deployment_id, reason, as_json):
    """Pause: devices not yet started get nothing, those in the middle finish."""
    document = Api(obj).call("POST", f"/deployments/{deployment_id}/pause",
                             body={"reason": reason} if reason else {})
    _output(document, as_json, _deployment_lines)


@deployments.command("resume")
@click.argument("deployment_id")
@click.option("--artifact-name", help="A fixed release: the devices not started get it, and "
                                      "those that failed are offered it again.")
@json_option
@click.pass_obj
def deployments_resume(obj, deployment_id, artifact_name, as_json):
    """Resume a paused deployment."""
    document = Api(obj).call("POST", f"/deployments/{deployment_id}/resume",
                             body={"artifact_name": artifact_name} if artifact_name else {})
    _output(document, as_json, _deployment_lines)


@deployments.command("release-phase")
@click.argument("deployment_id")
@json_option
@click.pass_obj
def deployments_release_phase(obj, deployment_id, as_json):
    """Start the next phase now, whatever it waits for."""
    document = Api(obj).call("POST", f"/deployments/{deployment_id}/release")
    _output(document, as_json, _deployment_lines)


# -- groups -------------------------------------------------------------------------------------


CONDITION = re.compile(r"\s*(?P<attribute>[^\s=<>!]+)\s*(?P<op><=|>=|=|<|>|\s+in\s+)"
                       r"\s*(?P<value>.*)$")
OPERATORS = {"=": "$eq", "<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte", "in": "$in"}


def parse_condition(expression: str) -> dict:
    """One --where: `NAME=VALUE`, `NAME<VALUE` (<=, >, >=), `NAME in A,B,C`, `NAME exists`
    or `NAME missing`. A comparison's value that is a number compares numbers; `=` and `in`
    compare text (the filter's JSON, through --filter-json, can say either)."""
    words = expression.split()
    if len(words) == 2 and words[1] in ("exists", "missing"):
        return {"attribute": words[0], "type": "$exists", "value": words[1] == "exists"}
    match = CONDITION.match(expression)
    if match is None:
        raise click.ClickException(f"--where {expression!r}: expected NAME=VALUE, NAME<VALUE, "
                                   "NAME<=VALUE, NAME>VALUE, NAME>=VALUE, NAME in A,B or "
                                   "NAME exists|missing")
    kind, value = OPERATORS[match["op"].strip()], match["value"].strip()
    if kind == "$in":
        return {"attribute": match["attribute"], "type": kind, "value": value.split(",")}
    if kind != "$eq":
        try:
            number = float(value)
            value = int(number) if number.is_integer() and "." not in value else number
        except ValueError:
            pass
    return {"attribute": match["attribute"], "type": kind, "value": value}


def _conditions(document: list[dict]) -> str:
    return " and ".join(f"{c['attribute']} {c['type']} {json.dumps(c.get('value'))}"
                        for c in document)


def _group_lines(groups):
    for g in groups if isinstance(groups, list) else [groups]:
        if "filter" in g:
            yield f"{g['name']}  dynamic  {g['devices']} devices  ({_conditions(g['filter'])})"
        else:
            yield f"{g['name']}  static  {g['devices']} devices"


@cli.group()
def groups():
    """Groups: static (a device's group) and dynamic (an inventory filter)."""


@groups.command("list")
@json_option
@click.pass_obj
def groups_list(obj, as_json):
    api = Api(obj)
    document = api.call("GET", "/groups") + api.call("GET", "/dynamic-groups")
    _output(document, as_json, _group_lines)


@groups.command("create")
@click.argument("name")
@click.option("--where", "conditions", multiple=True, metavar="CONDITION",
              help="NAME=VALUE, NAME<VALUE (<=, >, >=), 'NAME in A,B', 'NAME exists' or "
                   "'NAME missing'; repeatable (all must hold).")
@click.option("--filter-json", help="The filter as JSON (a list of {attribute, type, value}).")
@json_option
@click.pass_obj
def groups_create(obj, name, conditions, filter_json, as_json):
    """Create a dynamic group: the accepted devices whose inventory matches."""
    if bool(conditions) == bool(filter_json):
        raise click.UsageError("give --where (repeatable) or --filter-json")
    if filter_json:
        try:
            document = json.loads(filter_json)
        except ValueError as error:
            raise click.ClickException(f"--filter-json: {error}") from None
    else:
        document = [parse_condition(c) for c in conditions]
    created = Api(obj).call("POST", "/dynamic-groups", body={"name": name, "filter": document})
    _output(created, as_json, _group_lines)


@groups.command("show")
@click.argument("name")
@json_option
@click.pass_obj
def groups_show(obj, name, as_json):
    """A dynamic group and the devices in it now."""
    api = Api(obj)
    document = api.call("GET", f"/dynamic-groups/{quote(name, safe='')}")
    document["device_ids"] = api.call("GET", f"/dynamic-groups/{quote(name, safe='')}/devices")

    def lines(d):
        yield from _group_lines(d)
        for device_id in d["device_ids"]:
            yield f"  {device_id}"

    _output(document, as_json, lines)


@groups.command("delete")
@click.argument("name")
@click.pass_obj
def groups_delete(obj, name):
    """Delete a dynamic group (deployments made to it keep their filter)."""
    Api(obj).call("DELETE", f"/dynamic-groups/{quote(name, safe='')}")
    click.echo(f"deleted dynamic group {name}")


# -- webhooks -----------------------------------------------------------------------------------


def _webhook_lines(webhooks):
    for w in webhooks if isinstance(webhooks, list) else [webhooks]:
        state = f"failing ({w['failures']}): {w['last_error']}" if w["failures"] else "ok"
        yield (f"{w['id']}  {w['url']}  {','.join(w['types'] or ['all events'])}  "
               f"delivered {w['delivered']}  {state}")


@cli.group()
def webhooks():
    """Webhooks: URLs that receive every event, signed (admins only)."""


@webhooks.command("add")
@click.argument("url")
@click.option("--secret", envvar="TERN_WEBHOOK_SECRET",
              help="The HMAC key (16 to 256 characters); generated and printed if not given.")
@click.option("--type", "types", multiple=True, help="Only this event type; repeatable.")
@json_option
@click.pass_obj
def webhooks_add(obj, url, secret, types, as_json):
    body = {"url": url, **({"secret": secret} if secret else {}),
            **({"types": list(types)} if types else {})}
    document = Api(obj).call("POST", "/webhooks", body=body)
    _output(document, as_json, lambda d: [*_webhook_lines(d), f"secret: {d['secret']}"])


@webhooks.command("list")
@json_option
@click.pass_obj
def webhooks_list(obj, as_json):
    _output(Api(obj).call("GET", "/webhooks"), as_json, _webhook_lines)


@webhooks.command("delete")
@click.argument("webhook_id")
@click.pass_obj
def webhooks_delete(obj, webhook_id):
    Api(obj).call("DELETE", f"/webhooks/{quote(webhook_id, safe='')}")
    click.echo(f"deleted webhook {webhook_id}")
