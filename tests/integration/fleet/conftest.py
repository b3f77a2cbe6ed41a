"""What the fleet tests share: `tern-fleet` run as a command, the server's statuses."""
import json
import subprocess
import sys
from pathlib import Path

from testkit.admin import ServerAdmin

TERN_FLEET = str(Path(sys.executable).parent / "tern-fleet")


def tern_fleet(server: ServerAdmin, keys, *args: str) -> dict:
    result = subprocess.run(
        [TERN_FLEET, "run", "--server", server.live.url,
         "--ca-cert", str(server.live.certificate), "--token", server.token,
         "--verify-key", str(keys["ed25519"].public_path), "--poll-interval", "1",
         "--retry-interval", "1", "--timeout", "240", "--json", *args],
        capture_output=True, text=True, timeout=300)
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    return report


def server_statuses(server: ServerAdmin, deployment_id: str) -> dict[str, str]:
    return {d["device_id"]: d["status"]
            for d in server.get(f"/deployments/{deployment_id}/devices")}
