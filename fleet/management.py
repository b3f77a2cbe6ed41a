"""The operator's side: the server's management API, with a user's token."""
from pathlib import Path

from .device import WorkerSessions

API = "/api/management/v1"


class ManagementError(Exception):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class Management:
    def __init__(self, server_url: str, token: str, certificate: str = "",
                 sessions: WorkerSessions | None = None):
        self.url = server_url.rstrip("/") + API
        self.headers = {"Authorization": f"Bearer {token}"}
        self.verify = certificate or True
        self.sessions = sessions or WorkerSessions()  # called from the fleet's workers

    def call(self, method: str, path: str, expected: int = 200, **kwargs):
        response = self.sessions.request(method, self.url + path, headers=self.headers,
                                         verify=self.verify, timeout=300, **kwargs)
        if response.status_code != expected:
            raise ManagementError(f"{method} {path}: {response.status_code} "
                                  f"{response.text[:300]}", response.status_code)
        return response.json() if response.content else None

    def preauthorize(self, identity: dict, pubkey: str) -> str | None:
        """The device's id; None if the server has this identity with this key already."""
        try:
            device = self.call("POST", "/devices", 201,
                               json={"identity_data": identity, "pubkey": pubkey})
        except ManagementError as error:
            if error.status == 409:
                return None
            raise
        return device["id"]

    def devices(self, status: str | None = None) -> list[dict]:
        return self.call("GET", "/devices", params={"status": status} if status else None)

    def accept(self, device_id: str) -> None:
        self.call("PUT", f"/devices/{device_id}/status", json={"status": "accepted"})

    def upload(self, artifact: Path) -> dict | None:
        """Upload an artifact; None when the server has it already (409)."""
        with open(artifact, "rb") as body:
            response = self.sessions.request(
                "POST", self.url + "/artifacts", data=body, headers=self.headers,
                verify=self.verify, timeout=300)
        if response.status_code == 409:
            return None
        if response.status_code != 201:
            raise ManagementError(f"uploading {artifact}: {response.status_code} "
                                  f"{response.text[:300]}", response.status_code)
        return response.json()

    def create_deployment(self, name: str, artifact_name: str,
                          devices: list[str] | None = None, retries: int = 0,
                          phases: list[dict] | None = None) -> str:
        """To `devices`, or to every accepted device; a failed device may retry `retries`
        times; `phases`: the API's phase objects."""
        target = {"devices": devices} if devices is not None else {"all_devices": True}
        body = {"name": name, "artifact_name": artifact_name, "retries": retries, **target,
                **({"phases": phases} if phases else {})}
        return self.call("POST", "/deployments", 201, json=body)["id"]

    def deployment(self, deployment_id: str) -> dict:
        return self.call("GET", f"/deployments/{deployment_id}")

    def deployment_statuses(self, deployment_id: str) -> dict[str, str]:
        """device id -> its status in the deployment."""
        return {device["device_id"]: device["status"]
                for device in self.deployment_devices(deployment_id)}

    def deployment_devices(self, deployment_id: str) -> list[dict]:
        """The deployment's device rows: status, the download's stats, ..."""
        return self.call("GET", f"/deployments/{deployment_id}/devices")
