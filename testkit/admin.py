"""The one client of a live server's management side in tests: `tern-server` (on the data
directory, or over HTTPS as a remote operator) and the management API."""
import json
import os
import subprocess
import sys
import uuid

import requests

from testkit import wait_for
from testkit.devices import AUTH_PATH, SimulatedDevice
from testkit.live_server import LiveServer


class ServerAdmin:
    """An operator of a LiveServer: a user and its token, `tern-server` (`cli`), the
    management API over HTTPS (`api`, `get`).

    `cli` runs on the data directory, in-process, unless --server is given; with
    `over_https`, it always goes to the server's URL with the admin's token, as an operator
    on another machine would."""

    def __init__(self, live: LiveServer, email: str = "admin@example.com",
                 password: str = "tern admin password", over_https: bool = False):
        self.live = live
        self.over_https = False
        self.environment = {**os.environ, "TERN_PASSWORD": password}
        self.cli("user", "create", email)
        self.token = self.cli("--server", live.url, "--ca-cert", str(live.certificate),
                              "user", "login", email, json_output=False).strip()
        self.over_https = over_https

    @property
    def url(self) -> str:
        return self.live.url

    def cli(self, *args: str, json_output: bool = True):
        """tern-server with `args`; its --json output parsed unless `json_output` is false."""
        if "--server" in args:
            base = []
        elif self.over_https:
            base = ["--server", self.live.url, "--token", self.token,
                    "--ca-cert", str(self.live.certificate)]
        else:
            base = ["--data-dir", str(self.live.data_dir)]
        result = subprocess.run([sys.executable, "-m", "server", *base, *args,
                                 *(["--json"] if json_output else [])],
                                capture_output=True, text=True, timeout=300,
                                env=self.environment)
        if result.returncode != 0:
            raise RuntimeError(f"tern-server {' '.join(args)}: {result.stderr}")
        return json.loads(result.stdout) if json_output else result.stdout

    def api(self, method: str, path: str, **options):
        """`method` /api/management/v1<path> with the admin's token; the JSON answer, if any."""
        response = requests.request(method, f"{self.live.url}/api/management/v1{path}",
                                    headers={"Authorization": f"Bearer {self.token}"},
                                    verify=self.live.certificate, timeout=30, **options)
        response.raise_for_status()
        return response.json() if response.content else None

    def get(self, path: str):
        """GET /api/management/v1<path>."""
        return self.api("GET", path)

    def device(self, identity: dict) -> dict | None:
        found = [d for d in self.cli("devices", "list") if d["identity_data"] == identity]
        return found[0] if found else None

    def accept(self, identity: dict, timeout: float = 300) -> str:
        """Wait for the auth request of the device with `identity` and accept it; returns
        the device's id."""
        pending = wait_for(lambda: self.device(identity), timeout=timeout,
                           what=f"the auth request of {identity}")
        self.cli("devices", "accept", pending["id"])
        return pending["id"]

    def attributes(self, device_id: str) -> dict:
        return {a["name"]: a["value"] for a in self.get(f"/devices/{device_id}")["attributes"]}

    def device_status(self, deployment_id: str, device_id: str) -> str:
        devices = self.get(f"/deployments/{deployment_id}/devices")
        return next(d["status"] for d in devices if d["device_id"] == device_id)

    def device_log(self, deployment_id: str, device_id: str) -> list[str]:
        log = self.get(f"/deployments/{deployment_id}/devices/{device_id}/log")
        return [message["message"] for message in log["messages"]]

    def download_link(self, artifact_name: str, device_type: str = "qemux86-64") -> str:
        """The signed download link (or the storage's URL) that a new device gets for
        `artifact_name`: admit a simulated device, deploy the artifact to it, ask `next`."""
        device = SimulatedDevice({"mac": f"02:00:{uuid.uuid4().hex[:8]}"}, "ecdsa")
        body, headers = device.auth_request()
        auth = f"{self.url}{AUTH_PATH}"
        requests.post(auth, data=body, headers=headers, verify=self.live.certificate,
                      timeout=30)
        [pending] = [d for d in self.get("/devices?status=pending")
                     if d["identity_data"] == device.identity]
        self.api("PUT", f"/devices/{pending['id']}/status", json={"status": "accepted"})
        device.token = requests.post(auth, data=body, headers=headers,
                                     verify=self.live.certificate, timeout=30).text
        self.api("POST", "/deployments", json={"name": f"{artifact_name}-{pending['id']}",
                                               "artifact_name": artifact_name,
                                               "devices": [pending["id"]]})
        answer = requests.post(
            f"{self.url}/api/devices/v2/deployments/device/deployments/next",
            json={"device_provides": {"device_type": device_type,
                                      "artifact_name": "release-0"}},
            headers=device.headers, verify=self.live.certificate, timeout=30)
        answer.raise_for_status()
        return answer.json()["artifact"]["source"]["uri"]
