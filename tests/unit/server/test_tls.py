"""The self-signed certificate of `tern-server serve`."""
from click.testing import CliRunner
from cryptography import x509

from server.cli import cli
from server.tls import ensure_self_signed, fingerprint


def test_certificate_names_the_hosts_and_addresses_given(tmp_path):
    cert, key, created = ensure_self_signed(tmp_path, ["ota.example.com", "10.0.2.2", "::1"])
    assert created and key.stat().st_mode & 0o077 == 0
    names = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["ota.example.com"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["10.0.2.2", "::1"]
    assert len(fingerprint(cert).split(":")) == 32


def test_existing_certificate_is_kept(tmp_path):
    cert, _, _ = ensure_self_signed(tmp_path, ["a.example"])
    before = cert.read_bytes()
    _, _, created = ensure_self_signed(tmp_path, ["b.example"])
    assert not created and cert.read_bytes() == before


def test_serve_wants_cert_and_key_together(tmp_path):
    cert, _, _ = ensure_self_signed(tmp_path, ["a.example"])
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "serve", "--cert", str(cert)])
    assert result.exit_code == 2
    assert "--cert and --key go together" in result.output
