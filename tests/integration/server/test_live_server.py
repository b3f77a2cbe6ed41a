"""`tern-server serve` for real: gunicorn, HTTPS by default with a self-signed certificate,
the CLI over HTTPS, and a device speaking with chunked request bodies."""
import json
import ssl
import subprocess

import pytest
import requests
from cryptography import x509

from server.tls import fingerprint
from testkit.devices import SimulatedDevice
from testkit.tls import IMAGE_OPENSSL_CONF, negotiated_cipher

pytestmark = pytest.mark.slow


def chunked(document) -> object:
    """A generator body: requests sends it with Transfer-Encoding: chunked, as Go's client."""
    data = json.dumps(document).encode()
    return (data[i:i + 16] for i in range(0, len(data), 16))


def test_serve_is_https_with_a_self_signed_certificate(live_server):
    server = live_server.live
    output = server.output.read_text()
    assert f"certificate SHA-256 fingerprint: {fingerprint(server.certificate)}" in output
    cert = x509.load_pem_x509_certificate(server.certificate.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "ota.test"} <= set(names.get_values_for_type(x509.DNSName))
    assert "127.0.0.1" in [str(a) for a in names.get_values_for_type(x509.IPAddress)]
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{server.url}/api/health", timeout=5)  # not trusted without the cert
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(server.url.replace("https", "http") + "/api/health", timeout=5)
    assert requests.get(f"{server.url}/api/health", verify=server.certificate,
                        timeout=5).status_code == 204


def test_cli_and_chunked_device_over_https(live_server, tmp_path):
    operator = live_server
    url, verify = operator.url, operator.live.certificate
    device = SimulatedDevice({"mac": "live"}, "ed25519")
    body, headers = device.auth_request()
    auth = f"{url}/api/devices/v1/authentication/auth_requests"
    assert requests.post(auth, data=body, headers=headers, verify=verify).status_code == 401
    [pending] = operator.cli("devices", "list", "--status", "pending")
    operator.cli("devices", "accept", pending["id"])
    response = requests.post(auth, data=body, headers=headers, verify=verify)
    assert response.status_code == 200
    device.token = response.text

    inventory = [{"name": "device_type", "value": "qemux86-64"},
                 {"name": "artifact_name", "value": "release-0"}]
    response = requests.put(f"{url}/api/devices/v1/inventory/device/attributes",
                            data=chunked(inventory), headers=device.headers, verify=verify)
    assert response.status_code == 200
    assert operator.cli("devices", "list", "--attr", "device_type=qemux86-64")[0]["id"] == \
        pending["id"]

    artifact = tmp_path / "app.mender"
    payload = tmp_path / "big.bin"
    payload.write_bytes(bytes(range(256)) * 8192)  # 2 MiB: several upload chunks
    subprocess.run(["mender-artifact", "write", "module-image", "-T", "single-file", "-n",
                    "app-1.0", "-t", "qemux86-64", "-f", str(payload), "-o", str(artifact)],
                   check=True, capture_output=True)
    uploaded = operator.cli("artifacts", "upload", str(artifact))
    assert uploaded["size"] == artifact.stat().st_size
    assert [a["name"] for a in operator.cli("artifacts", "list")] == ["app-1.0"]
    deployment = operator.cli("deployments", "create", "--name", "live", "--artifact-name",
                              "app-1.0", "--device", pending["id"])

    next_url = f"{url}/api/devices/v2/deployments/device/deployments/next"
    provides = {"device_provides": {"device_type": "qemux86-64", "artifact_name": "release-0"},
                "update_control_map": True}
    response = requests.post(next_url, data=chunked(provides), headers=device.headers,
                             verify=verify)
    assert response.status_code == 200
    uri = response.json()["artifact"]["source"]["uri"]
    assert uri.startswith(f"{url}/api/devices/v1/deployments/download/")
    tail = requests.get(uri, headers={"Range": "bytes=-4096"}, verify=verify)
    assert tail.status_code == 206 and tail.content == artifact.read_bytes()[-4096:]

    status_url = (f"{url}/api/devices/v1/deployments/device/deployments/{deployment['id']}"
                  "/status")
    for status in ("downloading", "installing", "success"):
        response = requests.put(status_url, data=chunked({"status": status}),
                                headers=device.headers, verify=verify)
        assert response.status_code == 204
    shown = operator.cli("deployments", "show", deployment["id"])
    assert shown["status"] == "finished" and shown["devices"][0]["status"] == "success"


def test_tls_handshake_uses_the_printed_certificate(live_server):
    server = live_server.live
    served = ssl.get_server_certificate(("127.0.0.1", server.port))
    assert x509.load_pem_x509_certificate(served.encode()) == \
        x509.load_pem_x509_certificate(server.certificate.read_bytes())


def test_a_client_that_prefers_chacha20_gets_it(live_server):
    """The emulated image's openssl.cnf (a board without AES instructions) lists ChaCha20
    first and gets it; a client with OpenSSL's defaults keeps AES-GCM."""
    port = live_server.live.port
    assert negotiated_cipher(port, IMAGE_OPENSSL_CONF) == "TLS_CHACHA20_POLY1305_SHA256"
    assert negotiated_cipher(port) == "TLS_AES_256_GCM_SHA384"
