"""What the agent imports to start: each module is seconds under emulation and stays
resident (bench.ota, bench.agent). The boot-time resume needs neither the artifact reader
nor cryptography nor HTTP; the idle daemon speaks HTTPS through the standard library
(`updater.http`) and signs in a forked child, so it holds neither cryptography nor
requests (nor what it pulls in) nor the artifact reader; nor, until a deployment begins,
the machine's steps, installers, bootloader and health checks (nor hashlib, shutil with
bz2 and lzma, zlib and typing, which only they import); the download needs no requests
either."""
import base64
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from updater import identity
from updater.agent.daemon import Daemon
from updater.config import Config

ROOT = Path(__file__).resolve().parents[3]
REQUESTS = {"requests", "urllib3", "idna", "chardet", "charset_normalizer", "certifi"}


# What only a deployment uses: imported when one begins (`Daemon.standalone`).
DEPLOYMENT = {"updater.agent.steps", "updater.agent.daemonsteps", "updater.agent.health",
              "updater.agent.scripts", "updater.install", "updater.install.rootfs",
              "updater.install.modules", "updater.bootloader", "updater.source",
              "hashlib", "shutil", "bz2", "lzma", "zlib", "typing"}
# A daemon that polls a server with nothing for it, twice (one inventory, two polls).
IDLE_DAEMON = """
from types import SimpleNamespace
from updater.agent.daemon import Daemon
from updater.config import Config
client = SimpleNamespace(verify=True, send_inventory=lambda inventory: None,
                         next_deployment=lambda provides: None)
daemon = Daemon(Config(data_dir={data!r}, server_url="https://ota.example.com",
                       bootloader="file", bootloader_env={env!r}, device_type="test"),
                client=client)
daemon.cycle(), daemon.cycle()
"""


def modules_after(code: str, tmp_path: Path, top_level: bool = True) -> set[str]:
    """Top-level packages (or all modules) imported by `code`, in a fresh interpreter; a
    `chardet` that fails loudly is on the path, as Debian's python3-requests installs one."""
    (tmp_path / "chardet").mkdir(exist_ok=True)
    (tmp_path / "chardet" / "__init__.py").write_text("raise RuntimeError('chardet imported')\n")
    name = "name.split('.')[0]" if top_level else "name"
    script = (f"import sys\n{code}\nprint(' '.join(sorted({{{name} for name, "
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


def test_the_idle_daemon_holds_nothing_only_a_deployment_uses(tmp_path):
    """Between polls: none of the deployment's modules; they come when one begins."""
    code = "from updater import cli\n" + IDLE_DAEMON.format(data=str(tmp_path / "data"),
                                                          env=str(tmp_path / "env"))
    idle = modules_after(code, tmp_path, top_level=False)
    assert {"updater.agent.daemon", "updater.agent.standalone", "http.client", "ssl"} <= idle
    assert not idle & DEPLOYMENT
    assert "platform" not in idle  # the inventory reads os.uname()
    deploying = modules_after(code + "daemon.standalone.machine\n", tmp_path, top_level=False)
    assert DEPLOYMENT - {"typing"} <= deploying  # (typing comes with the file bootloader too)


def test_the_idle_daemon_announces_the_adaptive_install_of_its_installers(tmp_path):
    """The inventory's delta capability, said without the installers, is theirs."""
    for share in (0.8, 0.0):
        config = Config(data_dir=str(tmp_path), server_url="https://ota.example.com",
                        bootloader="file", bootloader_env=str(tmp_path / "env"),
                        delta_max_share=share)
        idle = Daemon(config, client=SimpleNamespace(verify=True))
        deploying = Daemon(config, client=SimpleNamespace(verify=True))
        assert idle.adaptive() is deploying.standalone.steps.adaptive() is (share > 0)


def test_the_daemon_resumes_at_boot_in_a_child_when_nothing_is_in_progress(tmp_path):
    """`daemon --at-boot` on most boots: the resume's steps end with a forked child."""
    config = tmp_path / "tern.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\nbootloader = "file"\n'
                      f'bootloader_env = "{tmp_path / "env"}"\n'
                      f'server_url = "https://ota.example.com"\n')
    code = ("from updater import cli\n"
            "cli.daemon = lambda config: 0\n"
            f"cli.main(['--config', {str(config)!r}, 'daemon', '--at-boot'])\n")
    modules = modules_after(code, tmp_path, top_level=False)
    assert "updater.agent.standalone" in modules
    assert not modules & DEPLOYMENT


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
