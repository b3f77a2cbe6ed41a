"""What the agent imports to start: each module is seconds under emulation and stays
resident (bench.ota, bench.agent). The boot-time resume needs neither the artifact reader
nor cryptography nor HTTP; the idle daemon speaks HTTPS through the standard library
(`updater.http`) and signs with cryptography, but imports neither requests (nor what it
pulls in) nor the artifact reader (until a deployment); the download needs no requests
either."""
import subprocess
import sys
from pathlib import Path

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


def test_the_idle_daemon_imports_neither_requests_nor_the_artifact_reader(tmp_path):
    modules = modules_after("from updater import cli\nfrom updater.agent.daemon import Daemon",
                            tmp_path)
    assert {"http", "ssl", "cryptography"} <= modules
    assert not modules & {"artifact", *REQUESTS}


def test_the_daemon_reads_its_key_without_cryptographys_serialization(tmp_path):
    code = ("from updater.agent.daemon import Daemon\nfrom updater import identity\n"
            f"identity.device_key(__import__('pathlib').Path({str(tmp_path / 'data')!r}))\n"
            "assert 'cryptography.hazmat.primitives.serialization' not in sys.modules")
    assert "cryptography" in modules_after(code, tmp_path)


def test_the_download_imports_no_requests(tmp_path):
    modules = modules_after("from updater.download import ResumableDownload", tmp_path)
    assert "http" in modules
    assert not modules & REQUESTS
