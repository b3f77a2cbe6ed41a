"""What the agent imports to start: each module is seconds under emulation and stays
resident (bench.ota, bench.agent). The boot-time resume needs neither the artifact reader
nor cryptography nor HTTP; the idle daemon speaks HTTPS through the standard library
(`updater.http`) and signs in a forked child, so it holds neither cryptography nor
requests (nor what it pulls in) nor the artifact reader (until a deployment); the
download needs no requests either."""
import base64
import subprocess
import sys
from pathlib import Path

from updater import identity

ROOT = Path(__file__).resolve().parents[3]
REQUESTS = {"requests", "urllib3", "idna", "chardet", "charset_normalizer", "certifi"}


def modules_after(code: str, tmp_path: Path) -> set[str]:
    """Top-level packages imported by `code`, in a fresh interpreter; a `chardet` that
    fails loudly is on the path, as Debian's python3-requests installs one."""
    (tmp_path / "chardet").mkdir()
    (tmp_path / "chardet" / "__init__.py").write_text("raise RuntimeError('chardet imported')\n")
    script = (f"import sys\n{code}\nprint(' '.join(sorted({{name.split('.')[0] for name, "
              "module in sys.modules.items() if module is not None})))")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, env={"PYTHONPATH": f"{ROOT}:{tmp_path}"})
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_the_boot_time_resume_imports_no_artifact_reader_crypto_or_http(tmp_path):
    modules = modules_after("from updater import cli", tmp_path)
    assert "updater" in modules
    assert not modules & {"artifact", "cryptography", "http", "ssl", *REQUESTS}


def test_the_idle_daemon_imports_neither_cryptography_nor_requests_nor_the_reader(tmp_path):
    modules = modules_after("from updater import cli\nfrom updater.agent.daemon import Daemon",
                            tmp_path)
    assert {"http", "ssl"} <= modules
    assert not modules & {"artifact", "cryptography", *REQUESTS}
    assert "platform" not in modules  # the inventory's hostname and kernel: os.uname()


def test_the_daemon_holds_neither_argparse_nor_tomllib(tmp_path):
    """The command line and the settings file are read in a forked child: the daemon
    starts with the settings, without the modules that read them."""
    config = tmp_path / "tern.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\npoll_interval = 7.5\n')
    code = ("from updater import cli\n"
            "cli.daemon = lambda config: print(config.poll_interval, config.data_dir)\n"
            f"cli.main(['--config', {str(config)!r}, '--retry-interval', '3', 'daemon'])\n")
    modules = modules_after(code, tmp_path)
    assert {"updater", "7.5", str(tmp_path / "data")} <= modules  # the settings came through
    assert not modules & {"argparse", "tomllib", "gettext"}


def test_the_command_line_read_in_a_child_still_prints_and_exits_as_argparse(capfd):
    from updater import __version__, cli

    assert cli.main(["--version"]) == 0
    assert capfd.readouterr().out == f"tern-updater {__version__}\n"
    assert cli.main(["no-such-command"]) == 2
    assert "usage: tern-updater" in capfd.readouterr().err
    assert cli.main(["--config", "/nonexistent/tern.toml", "status"]) == 1
    assert capfd.readouterr().err == "tern-updater: /nonexistent/tern.toml: no such file\n"


def test_the_daemon_signs_its_auth_request_without_holding_cryptography(tmp_path):
    """The signature is made in a forked child (identity.ForkedSigner): cryptography is
    imported there, never in the daemon, which stays without it after authenticating."""
    data = tmp_path / "data"
    code = ("from updater.agent.daemon import Daemon\nfrom updater import identity\n"
            f"signer = identity.ForkedSigner(__import__('pathlib').Path({str(data)!r}))\n"
            "body, signature = signer.signed(lambda pem: pem.encode())\n"
            f"open({str(tmp_path / 'signed')!r}, 'w').write(signature + '\\n' + body.decode())")
    assert not modules_after(code, tmp_path) & {"cryptography", "artifact"}
    signature, body = (tmp_path / "signed").read_text().split("\n", 1)
    key = identity.device_key(data)
    key.public_key().verify(base64.b64decode(signature), body.encode())
    assert "BEGIN PUBLIC KEY" in body


def test_the_device_key_is_read_without_cryptographys_serialization(tmp_path):
    code = ("from updater import identity\n"
            f"identity.device_key(__import__('pathlib').Path({str(tmp_path / 'data')!r}))\n"
            "assert 'cryptography.hazmat.primitives.serialization' not in sys.modules")
    assert "cryptography" in modules_after(code, tmp_path)


def test_the_download_imports_no_requests(tmp_path):
    modules = modules_after("from updater.download import ResumableDownload", tmp_path)
    assert "http" in modules
    assert not modules & REQUESTS


def test_an_install_verifies_the_signature_in_a_forked_child(tmp_path, keys, make_artifact):
    """The install's process checks the manifest's signature in a forked child
    (updater.forked.verifier): the keys are loaded there, so cryptography's OpenSSL
    backend (Debian's cryptography 38: a few MiB of the install's peak) never loads in
    it; a wrong key is refused all the same."""
    artifact = make_artifact(key=keys["rsa"])
    for key, expected in (("rsa", "verified by"), ("other-rsa", "SignatureError")):
        code = ("import os, sys\nfrom artifact import ArtifactReader, SignatureError, signing\n"
                "from updater import forked\n"
                "parent, load = os.getpid(), signing.load_key_file\n"
                "def spy(path):\n"
                "    print('loaded in', 'the parent' if os.getpid() == parent else 'a child')\n"
                "    return load(path)\n"
                "signing.load_key_file = spy\n"
                f"verifier = forked.verifier([{str(keys[key].public_path)!r}])\n"
                "try:\n"
                f"    with open({str(artifact)!r}, 'rb') as stream, "
                "ArtifactReader(stream, verifier=verifier) as reader:\n"
                "        print('verified by', reader.verified_by)\n"
                "except SignatureError as error:\n"
                "    print('SignatureError', error)\n")
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                                text=True, env={"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0] == "loaded in a child", result.stdout
        assert result.stdout.splitlines()[1].startswith(expected), result.stdout
