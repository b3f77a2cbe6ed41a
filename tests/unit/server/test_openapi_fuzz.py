"""Schemathesis against /api/openapi.json: generated requests, valid and not, get no 5xx,
and every response code is one the document declares."""
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from server.openapi import PATHS

MAX_EXAMPLES = 12
OPERATIONS = [(path, method) for path, methods in PATHS.items() for method in methods
              if method != "parameters"]


@pytest.fixture
def headers(fleet, admin, upload, client):
    """A device, an artifact and a deployment exist, so that requests meet real rows too."""
    device = fleet.accepted()
    upload("app-1.0")
    client.post("/api/management/v1/deployments", json={
        "name": "d", "artifact_name": "app-1.0", "devices": [device.id]}, headers=admin)
    return {"device": device.headers, "user": admin}


@pytest.mark.parametrize("path, method", OPERATIONS)
def test_api_never_answers_5xx(app, headers, path, method):
    operation = schemathesis.openapi.from_wsgi("/api/openapi.json", app)[path][method.upper()]
    if path.startswith("/api/devices/"):
        auth = headers["device"]
    else:
        auth = {} if path.endswith("/auth/login") else headers["user"]
    if path.endswith("/auth_requests"):
        auth = {}

    @given(case=operation.as_strategy())
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        case.call_and_validate(headers={**(case.headers or {}), **auth},
                               checks=[not_a_server_error, status_code_conformance])

    run()
