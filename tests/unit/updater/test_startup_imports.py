"""What the agent imports to start: each module is seconds under emulation (bench.ota).
The boot-time resume needs neither the artifact reader nor cryptography nor requests; the
daemon needs requests and cryptography to poll, but not the artifact reader (until a
deployment) nor chardet (requests' optional encoding guesser)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


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
    assert not modules & {"artifact", "cryptography", "requests", "urllib3", "ssl"}


def test_the_daemon_imports_requests_without_chardet_nor_the_artifact_reader(tmp_path):
    modules = modules_after("from updater import cli\ncli.skip_chardet()\n"
                            "from updater.agent.daemon import Daemon", tmp_path)
    assert {"requests", "cryptography"} <= modules
    assert not modules & {"artifact", "chardet"}


def test_debian_requests_warning_about_its_charset_normalizer_stays_out_of_the_log():
    warning = ("urllib3 (1.26.12) or chardet (None)/charset_normalizer (3.0.1) doesn't match a "
               "supported version!")  # Debian's requests 2.28.1 once chardet is kept out
    script = ("from updater import cli\ncli.skip_chardet()\nimport warnings\n"
              f"warnings.warn({warning!r})")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0 and result.stderr == ""
