"""`tern-server`: set up a data directory, serve it over HTTPS, and manage it.

Management commands talk to the API, either of a running server (`--server URL`,
with `--token`) or, by default, of the data directory in-process: one code path
through the same routes, checks and audit log either way.
"""
import gc
import getpass
import json
import os
import socket
import sys
import tempfile
from pathlib import Path

import click

from .config import data_dir_config, new_secret

DEFAULT_BIND = "0.0.0.0:8443"
UPLOAD_CHUNK = 1 << 20


def main() -> None:
    cli(prog_name="tern-server")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              envvar="TERN_DATA_DIR", default="tern-data", show_default=True)
@click.option("--server", envvar="TERN_SERVER", help="URL of a running server to manage.")
@click.option("--token", envvar="TERN_TOKEN", help="API token for --server.")
@click.option("--ca-cert", envvar="TERN_CA_CERT", type=click.Path(exists=True, dir_okay=False),
              help="Certificate to trust for --server (e.g. its self-signed one).")
@click.pass_context
def cli(ctx, data_dir, server, token, ca_cert):
    """Tern management server."""
    ctx.obj = {"data_dir": data_dir, "server": server, "token": token, "ca_cert": ca_cert}


# -- init, serve --------------------------------------------------------------------------------


@cli.command()
@click.option("--database-url", help="PostgreSQL URL (postgresql+psycopg://...); "
                                     "default SQLite in the data directory.")
@click.pass_obj
def init(obj, database_url):
    """Create the data directory (or upgrade its database schema)."""
    from .migrate import upgrade

    root: Path = obj["data_dir"]
    root.mkdir(parents=True, exist_ok=True)
    (root / "artifacts").mkdir(exist_ok=True)
    settings_path, secret_path = root / "config.json", root / "secret.key"
    if not settings_path.exists():
        settings_path.write_text(json.dumps({"database_url": database_url}, indent=2) + "\n")
    elif database_url:
        raise click.ClickException(f"{settings_path} exists; edit it to change the database")
    if not secret_path.exists():
        secret_path.touch(mode=0o600)
        secret_path.write_text(new_secret() + "\n")
    upgrade(data_dir_config(root)["DATABASE_URL"])
    click.echo(f"data directory ready: {root.resolve()}")


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
    from .migrate import upgrade
    from .tls import ensure_self_signed, fingerprint

    if bool(cert) != bool(key):
        raise click.UsageError("--cert and --key go together")
    port_claim = _claim_port(bind)
    config = {**_data_dir_config(obj["data_dir"]), "REQUEST_LOG": request_log,
              "DATABASE_POOL_SIZE": threads}
    upgrade(config["DATABASE_URL"])
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
                                  "timeout": 120, "graceful_timeout": 10, "reuse_port": True,
                                  "proc_name": "tern-server"}.items():
                self.cfg.set(option, value)

        def load(self):
            app = create_app(config)
            # The app's objects live as long as the worker: keep the cyclic collector off
            # them, or each full collection walks them all (tens of ms: a p99 spike).
            gc.freeze()
            return app

    # Metrics of every worker, added up at scrape time (server.metrics); set before any
    # worker imports prometheus_client.
    with port_claim, tempfile.TemporaryDirectory(prefix="tern-metrics-") as metrics_dir:
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", metrics_dir)
        Server().run()


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
    if not (data_dir / "config.json").exists():
        raise click.ClickException(f"{data_dir} is not a data directory; run "
                                   f"`tern-server --data-dir {data_dir} init` first")
    return data_dir_config(data_dir)


# -- the API client: a running server, or the data directory in-process --------------------------


class Api:
    """The management API of `--server URL`, or of the data directory through Flask's test
    client with a short-lived local token (audited as `local:<user>@cli`)."""

    def __init__(self, obj: dict):
        if obj["server"]:
            import requests

            self._session = requests.Session()
            self._verify = obj["ca_cert"] or True  # per request: a session's loses to the env
            if obj["token"]:
                self._session.headers["Authorization"] = f"Bearer {obj['token']}"
            self._base = obj["server"].rstrip("/")
            self._local = None
        else:
            self._local = self._local_client(obj["data_dir"])

    @staticmethod
    def _local_client(data_dir: Path):
        from . import create_app
        from .auth import LOCAL, issue_token
        from .extensions import db

        app = create_app(_data_dir_config(data_dir))
        with app.app_context():
            token, _ = issue_token(LOCAL, "local", 600, name=f"{getpass.getuser()}@cli")
            db.session.commit()
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
            response = self._session.request(method, self._base + path, json=body,
                                             params=params, data=data, timeout=3600,
                                             verify=self._verify)
            status = response.status_code
            document = response.json() if response.content and "json" in response.headers.get(
                "Content-Type", "") else None
        if status >= 400:
            message = document.get("error") if isinstance(document, dict) else None
            raise click.ClickException(f"{status}: {message or 'request failed'}")
        return document


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


def _output(document, as_json: bool, lines) -> None:
    if as_json:
        click.echo(json.dumps(document, indent=2))
    else:
        for line in lines(document):
            click.echo(line)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


# -- users --------------------------------------------------------------------------------------


@cli.group()
def user():
    """Users of the management API."""


@user.command("create")
@click.argument("email")
@click.password_option(envvar="TERN_PASSWORD")
@json_option
@click.pass_obj
def user_create(obj, email, password, as_json):
    document = Api(obj).call("POST", "/users", body={"email": email, "password": password})
    _output(document, as_json, lambda d: [f"created user {d['email']} ({d['id']})"])


@user.command("login")
@click.argument("email")
@click.password_option(envvar="TERN_PASSWORD", confirmation_prompt=False)
@click.pass_obj
def user_login(obj, email, password):
    """Print a token for --server URL (use it as --token or TERN_TOKEN)."""
    import requests

    if not obj["server"]:
        raise click.UsageError("login needs --server URL")
    response = requests.post(obj["server"].rstrip("/") + "/api/management/v1/auth/login",
                             auth=(email, password), verify=obj["ca_cert"] or True, timeout=30)
    if response.status_code != 200:
        raise click.ClickException(f"{response.status_code}: login failed")
    click.echo(response.json()["token"])


# -- devices ------------------------------------------------------------------------------------


def _device_lines(devices):
    for d in devices if isinstance(devices, list) else [devices]:
        attributes = {a["name"]: a["value"] for a in d["attributes"]}
        yield (f"{d['id']}  {d['status']:<13}  {json.dumps(d['identity_data'])}  "
               f"{attributes.get('device_type', '-')}  {attributes.get('artifact_name', '-')}")


@cli.group()
def devices():
    """Devices: list, accept, reject, preauthorize."""


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
    @click.option("--auth-id", help="The auth set (default: the device's newest).")
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


@devices.command("preauthorize")
@click.option("--identity", "identity", multiple=True, required=True, metavar="KEY=VALUE",
              help="Identity attribute, as the device's identity script prints; repeatable.")
@click.option("--pubkey", type=click.File("r"), required=True, help="PEM public key file.")
@json_option
@click.pass_obj
def devices_preauthorize(obj, identity, pubkey, as_json):
    identity_data = dict(item.split("=", 1) for item in identity if "=" in item)
    document = Api(obj).call("POST", "/devices",
                             body={"identity_data": identity_data, "pubkey": pubkey.read()})
    _output(document, as_json, _device_lines)


# -- artifacts ----------------------------------------------------------------------------------


def _artifact_lines(artifacts):
    for a in artifacts if isinstance(artifacts, list) else [artifacts]:
        yield (f"{a['id']}  {a['name']}  {','.join(a['device_types_compatible'])}  "
               f"{a['size']} bytes  {a['signature']}")


@cli.group()
def artifacts():
    """Artifacts: upload, list."""


@artifacts.command("upload")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
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


def _deployment_lines(d):
    counts = ", ".join(f"{k} {v}" for k, v in d["statistics"].items() if v)
    yield f"{d['id']}  {d['name']}  {d['artifact_name']}  {d['status']}  ({counts})"


@cli.group()
def deployments():
    """Deployments: create, show, abort."""


@deployments.command("create")
@click.option("--name", required=True)
@click.option("--artifact-name", required=True)
@click.option("--device", "device_ids", multiple=True, help="Device id; repeatable.")
@click.option("--group")
@click.option("--all-devices", is_flag=True)
@click.option("--force", is_flag=True,
              help="Send the artifact even to devices that have it or seem incompatible.")
@json_option
@click.pass_obj
def deployments_create(obj, name, artifact_name, device_ids, group, all_devices, force,
                       as_json):
    body = {"name": name, "artifact_name": artifact_name, "force": force,
            "all_devices": all_devices}
    if device_ids:
        body["devices"] = list(device_ids)
    if group:
        body["group"] = group
    _output(Api(obj).call("POST", "/deployments", body=body), as_json, _deployment_lines)


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
