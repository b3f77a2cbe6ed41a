"""The OpenAPI 3 description of the API at /api/openapi.json, a docs page, and /api/health."""
import html

from flask import Blueprint, url_for

blueprint = Blueprint("meta", __name__, url_prefix="/api")

DEVICE_AUTH = [{"deviceToken": []}]
USER_AUTH = [{"userToken": []}]


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    return {str(code): {"description": "error", **_json(_ref("Error"))} for code in codes}


def _operation(summary: str, security: list, ok: dict, *, body: dict | None = None,
               errors: tuple[int, ...] = (400, 401, 403, 404), params: list | None = None) -> dict:
    operation = {"summary": summary, "security": security, "responses": {**ok, **_errors(*errors)}}
    if body is not None:
        operation["requestBody"] = {"required": True, **body}
    if params:
        operation["parameters"] = params
    return operation


def _path_param(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "query", "required": False,
            "schema": schema or {"type": "string"}}


def _ok(code: int, description: str, schema: dict | None = None) -> dict:
    return {str(code): {"description": description, **(_json(schema) if schema else {})}}


STRING = {"type": "string"}
OBJECT = {"type": "object"}
STRINGS = {"type": "array", "items": STRING}
INTEGER = {"type": "integer"}
NULLABLE_STRING = {"type": "string", "nullable": True}
COUNT_OR_PERCENT = {"oneOf": [{"type": "integer", "minimum": 0},
                              {"type": "string", "pattern": "^[0-9]{1,3}%$"}]}
DEVICE_ID, DEPLOYMENT_ID, ARTIFACT_ID = (_path_param(n) for n in
                                          ("device_id", "deployment_id", "artifact_id"))
USER = {**_path_param("user"), "description": "the user's id or email"}
ROLE = {"type": "string", "enum": ["admin", "read-only"]}

SCHEMAS = {
    "Error": {"type": "object", "required": ["error"],
              "properties": {"error": STRING, "request_id": STRING}},
    "AuthRequest": {"type": "object", "required": ["id_data", "pubkey"],
                    "properties": {"id_data": STRING, "pubkey": STRING, "tenant_token": STRING}},
    "Attributes": {"type": "array", "maxItems": 1000, "items": {
        "type": "object", "required": ["name", "value"],
        "properties": {"name": STRING, "value": {"oneOf": [STRING, STRINGS]},
                       "description": STRING}}},
    "Provides": {"type": "object", "required": ["device_type"],
                 "properties": {"device_type": STRING, "artifact_name": STRING},
                 "additionalProperties": STRING},
    "NextAnswer": {"type": "object", "required": ["id", "artifact"], "properties": {
        "id": STRING, "artifact": {"type": "object", "properties": {
            "id": STRING, "artifact_name": STRING, "device_types_compatible": STRINGS,
            "source": {"type": "object", "properties": {"uri": STRING, "expire": STRING}}}}}},
    "Status": {"type": "object", "required": ["status"],
               "properties": {"status": STRING, "substate": STRING}},
    "Log": {"type": "object", "required": ["messages"], "properties": {"messages": {
        "type": "array", "items": {"type": "object", "required": ["message"], "properties": {
            "timestamp": STRING, "level": STRING, "message": STRING}}}}},
    "Device": {"type": "object", "properties": {
        "id": STRING, "identity_data": OBJECT, "status": STRING,
        "group": {"type": "string", "nullable": True}, "auth_sets": {"type": "array"},
        "attributes": {"type": "array"}}},
    "Artifact": {"type": "object", "properties": {
        "id": STRING, "name": STRING, "device_types_compatible": STRINGS, "size": {
            "type": "integer"}, "sha256": STRING, "info": OBJECT,
        # unverified: signed, but the server had no verify keys when it was uploaded
        "signature": {"type": "string", "enum": ["unsigned", "unverified", "verified"]},
        "verified_by": {"type": "object", "nullable": True, "description":
                        "the verify key that verified the signature (null unless verified)",
                        "properties": {"name": STRING, "fingerprint": {
                            "type": "string", "description":
                            "SHA-256 (hex) of the public key's DER SubjectPublicKeyInfo"}}}}},
    "Deployment": {"type": "object", "properties": {
        "id": STRING, "name": STRING, "artifact_name": STRING,
        "status": {"type": "string", "enum": ["pending", "scheduled", "inprogress", "paused",
                                              "finished", "aborted"]},
        "device_count": {"type": "integer"}, "statistics": OBJECT,
        "attempts": {"type": "integer", "description": "attempts that ended in success or "
                                                       "failure, retries included"},
        "retries": INTEGER, "start_at": NULLABLE_STRING, "window": NULLABLE_STRING,
        "paused_at": NULLABLE_STRING,
        "pause_reason": {"type": "string", "nullable": True,
                         "description": "why it paused: a phase's failure threshold, or "
                                        "the operator's reason"},
        "phases": {"type": "array", "items": _ref("Phase")},
        "dynamic_group": {"type": "string", "nullable": True},
        "filter": {"type": "array", "nullable": True, "items": _ref("Condition")},
        "open_to_joiners": {"type": "boolean"}}},
    "Phase": {"type": "object", "properties": {
        "number": INTEGER, "size": INTEGER,
        "filter": {"type": "array", "nullable": True, "items": _ref("Condition")},
        "start_at": NULLABLE_STRING,
        "after_success": NULLABLE_STRING, "release": {"type": "boolean"},
        "max_failures": {"oneOf": [INTEGER, STRING], "nullable": True},
        "started_at": NULLABLE_STRING, "successes": INTEGER, "failures": INTEGER}},
    "NewPhase": {"type": "object", "additionalProperties": False, "properties": {
        "size": {**COUNT_OR_PERCENT, "description": "devices (a count, or 'N%' of the "
                 "deployment's, rounded so that the phases add up exactly); the last phase "
                 "may leave it out to take the rest"},
        "filter": {"type": "array", "minItems": 1, "maxItems": 20,
                   "items": _ref("Condition"), "description":
                   "instead of a size: the phase's devices are the deployment's that match "
                   "this inventory filter (a canary chosen by the operator; a device matching "
                   "several phases' filters is in the first). The phases without a filter "
                   "share the rest in hash order, their sizes and percentages counted over "
                   "the rest"},
        "start_at": {"type": "string", "format": "date-time",
                     "description": "starts at this time"},
        "after_success": {"type": "string", "pattern": "^[0-9]{1,3}%$",
                          "description": "starts once this share of the phase before "
                                         "succeeded"},
        "release": {"type": "boolean", "description": "starts when an operator releases it"},
        "max_failures": {**COUNT_OR_PERCENT, "description": "failure threshold over the "
                         "phase's finished devices; crossing it pauses the deployment"}},
        "description": "Every phase but the first starts in exactly one way: start_at, "
                       "after_success or release. The first starts with the deployment "
                       "(at its start_at), at its own start_at, or on release."},
    "Condition": {"type": "object", "required": ["attribute", "type"], "description":
                  "A number compares numbers (decimal attribute values only), a string "
                  "compares text byte by byte; a list attribute matches if any item does",
                  "properties": {
                      "attribute": STRING, "scope": {"type": "string", "enum": ["inventory"]},
                      "type": {"type": "string", "enum": ["$eq", "$lt", "$lte", "$gt", "$gte",
                                                          "$in", "$exists"]},
                      "value": {"oneOf": [STRING, {"type": "number"}, {"type": "boolean"},
                                          {"type": "array", "items": {
                                              "oneOf": [STRING, {"type": "number"}]}}]}}},
    "DynamicGroup": {"type": "object", "properties": {
        "name": STRING, "filter": {"type": "array", "items": _ref("Condition")},
        "devices": {"type": "integer"}, "created_at": STRING}},
    "Event": {"type": "object", "properties": {
        "id": {"type": "integer"}, "at": STRING, "type": {"type": "string", "enum": [
            "deployment.created", "deployment.phase_started", "deployment.paused",
            "deployment.resumed", "deployment.finished", "deployment.aborted",
            "deployment.device_added", "deployment.device_status",
            "deployment.device_finished", "device.accepted", "device.decommissioned"]},
        "data": OBJECT}},
    "Webhook": {"type": "object", "properties": {
        "id": STRING, "url": STRING, "types": {"type": "array", "nullable": True,
                                               "items": STRING},
        "created_at": STRING, "last_event_id": {"type": "integer"},
        "delivered": {"type": "integer"}, "failures": {"type": "integer"},
        "last_error": {"type": "string", "nullable": True}, "next_attempt_at": STRING,
        "secret": {"type": "string", "description": "only in the answer to its creation"}}},
    "User": {"type": "object", "properties": {
        "id": STRING, "email": STRING, "role": ROLE, "created_at": STRING}},
    "NewDeployment": {"type": "object", "required": ["name", "artifact_name"], "properties": {
        "name": STRING, "artifact_name": STRING, "devices": STRINGS, "group": STRING,
        "dynamic_group": STRING, "fixed": {"type": "boolean", "description":
                                           "with dynamic_group: no devices that join later"},
        "all_devices": {"type": "boolean"}, "force": {"type": "boolean"},
        "phases": {"type": "array", "minItems": 1, "maxItems": 100,
                   "items": _ref("NewPhase")},
        "max_failures": {**COUNT_OR_PERCENT, "description": "every phase's failure "
                         "threshold, unless it gives its own"},
        "retries": {"type": "integer", "minimum": 0, "maximum": 100, "description":
                    "attempts a device may make after a failed one"},
        "start_at": {"type": "string", "format": "date-time",
                     "description": "nothing starts before (UTC if no offset)"},
        "window": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]-[0-2][0-9]:[0-5][0-9]$",
                   "description": "daily maintenance window, UTC by the server's clock "
                                  "(22:00-04:00 wraps past midnight): outside it, devices "
                                  "get nothing new to start"}}},
}

NEXT = "/api/devices/v1/deployments/device/deployments"
MANAGEMENT = "/api/management/v1"
NEXT_RESPONSES = {**_ok(200, "a deployment", _ref("NextAnswer")), **_ok(204, "nothing to do")}

PATHS = {
    "/api/devices/v1/authentication/auth_requests": {"post": {
        **_operation("Authenticate a device; 200 with the token as text, 401 until accepted; "
                     "409 when the device has too many keys awaiting a decision, 429 when the "
                     "source sent too many new keys, 503 when too many devices are pending", [],
                     {"200": {"description": "device token",
                              "content": {"application/jwt": {"schema": STRING}}}},
                     body=_json(_ref("AuthRequest")), errors=(400, 401, 403, 404, 409, 429, 503)),
        "parameters": [{"name": "X-MEN-Signature", "in": "header", "required": True,
                        "schema": STRING}]}},
    "/api/devices/v1/inventory/device/attributes": {
        method: _operation(f"{verb} the device's inventory", DEVICE_AUTH, _ok(200, "stored"),
                           body=_json(_ref("Attributes")))
        for method, verb in (("put", "Replace"), ("patch", "Merge into"))},
    "/api/devices/v2/deployments/device/deployments/next": {"post": _operation(
        "The next deployment for the device", DEVICE_AUTH, NEXT_RESPONSES,
        body=_json({"type": "object", "required": ["device_provides"], "properties": {
            "device_provides": _ref("Provides"), "update_control_map": {"type": "boolean"}}}))},
    f"{NEXT}/next": {
        "post": _operation("The next deployment (v1, provides flat)", DEVICE_AUTH,
                           NEXT_RESPONSES, body=_json(_ref("Provides"))),
        "get": _operation("The next deployment (v1, query)", DEVICE_AUTH, NEXT_RESPONSES,
                          params=[{**_query("device_type"), "required": True},
                                  _query("artifact_name")])},
    f"{NEXT}/{{deployment_id}}/status": {"put": _operation(
        "Report the device's progress; 409 once aborted", DEVICE_AUTH, _ok(204, "stored"),
        body=_json(_ref("Status")), errors=(400, 401, 403, 404, 409), params=[DEPLOYMENT_ID])},
    f"{NEXT}/{{deployment_id}}/log": {"put": _operation(
        "Upload the deployment log", DEVICE_AUTH, _ok(204, "stored"), body=_json(_ref("Log")),
        params=[DEPLOYMENT_ID])},
    "/api/devices/v1/deployments/download/{artifact_id}": {"get": _operation(
        "Download an artifact through a signed, expiring link (HTTP Range supported)", [],
        {**_ok(200, "the artifact"), **_ok(206, "part of the artifact")},
        params=[ARTIFACT_ID, _query("expire"), _query("signature")])},
    f"{MANAGEMENT}/auth/login": {"post": {
        **_operation("Log in with HTTP Basic (email, password); returns a token. 429 with "
                     "Retry-After after too many failures from the address or for the account",
                     [], _ok(200, "token", {"type": "object", "properties": {"token": STRING}}),
                     errors=(400, 401, 403, 404, 429)),
        "security": [{"basicAuth": []}]}},
    f"{MANAGEMENT}/users": {
        "get": _operation("List users", USER_AUTH, _ok(200, "users", {
            "type": "array", "items": _ref("User")})),
        "post": _operation("Create a user (admin by default)", USER_AUTH,
                           _ok(201, "created", _ref("User")),
                           errors=(400, 401, 403, 409), body=_json({
                               "type": "object", "required": ["email", "password"],
                               "properties": {"email": STRING, "password": STRING,
                                              "role": ROLE}}))},
    f"{MANAGEMENT}/users/{{user}}": {
        "patch": _operation("Set a user's password (ends their login sessions) or role",
                            USER_AUTH, _ok(200, "user", _ref("User")),
                            errors=(400, 401, 403, 404, 409), params=[USER], body=_json({
                                "type": "object", "properties": {"password": STRING,
                                                                 "role": ROLE}})),
        "delete": _operation("Delete a user and revoke their tokens", USER_AUTH,
                             _ok(204, "deleted"), errors=(401, 403, 404, 409), params=[USER])},
    f"{MANAGEMENT}/users/{{user}}/tokens": {"delete": _operation(
        "Revoke every token of a user", USER_AUTH, _ok(200, "count", {
            "type": "object", "properties": {"revoked": {"type": "integer"}}}),
        params=[USER])},
    f"{MANAGEMENT}/tokens": {
        "get": _operation("List my personal API tokens", USER_AUTH,
                          _ok(200, "tokens", {"type": "array"})),
        "post": _operation("Create a personal API token (with a login token, not an API "
                           "token); scope: admin, read-only or metrics, no wider than my "
                           "role, by default my role", USER_AUTH, _ok(201, "token", OBJECT),
                           body=_json({"type": "object", "required": ["name"], "properties": {
                               "name": STRING, "expires_in": {"type": "integer"},
                               "scope": {"type": "string",
                                         "enum": ["admin", "read-only", "metrics"]}}}))},
    f"{MANAGEMENT}/tokens/{{token_id}}": {"delete": _operation(
        "Revoke a personal API token", USER_AUTH, _ok(204, "revoked"),
        params=[_path_param("token_id")])},
    f"{MANAGEMENT}/audit": {"get": _operation(
        "The audit log, newest first", USER_AUTH, _ok(200, "entries", {"type": "array"}),
        params=[_query("limit", {"type": "integer"}), _query("offset", {"type": "integer"})])},
    f"{MANAGEMENT}/devices": {
        "get": _operation("List devices; filter by status, group and attr.NAME=VALUE",
                          USER_AUTH, _ok(200, "devices", {"type": "array",
                                                          "items": _ref("Device")}),
                          params=[_query("status"), _query("group")]),
        "post": _operation("Preauthorize a device", USER_AUTH, _ok(201, "created",
                                                                   _ref("Device")),
                           errors=(400, 401, 403, 409), body=_json({
                               "type": "object", "required": ["identity_data", "pubkey"],
                               "properties": {"identity_data": OBJECT, "pubkey": STRING}}))},
    f"{MANAGEMENT}/devices/{{device_id}}": {
        "get": _operation("Show a device", USER_AUTH, _ok(200, "device", _ref("Device")),
                          params=[DEVICE_ID]),
        "delete": _operation("Decommission a device", USER_AUTH, _ok(204, "decommissioned"),
                             params=[DEVICE_ID])},
    f"{MANAGEMENT}/devices/{{device_id}}/status": {"put": _operation(
        "Accept or reject an auth set (key), given by auth_id; without it, accept the one key "
        "not rejected (409 if there are several) or reject every key", USER_AUTH,
        _ok(200, "device", _ref("Device")), params=[DEVICE_ID],
        errors=(400, 401, 403, 404, 409), body=_json({
            "type": "object", "required": ["status"], "properties": {
                "status": {"type": "string", "enum": ["accepted", "rejected"]},
                "auth_id": STRING}}))},
    f"{MANAGEMENT}/devices/{{device_id}}/tokens": {"delete": _operation(
        "Revoke the device's tokens", USER_AUTH, _ok(200, "count", OBJECT), params=[DEVICE_ID])},
    f"{MANAGEMENT}/devices/{{device_id}}/group": {
        "put": _operation("Put the device in a static group", USER_AUTH,
                          _ok(200, "device", _ref("Device")), params=[DEVICE_ID],
                          body=_json({"type": "object", "required": ["group"],
                                      "properties": {"group": STRING}})),
        "delete": _operation("Take the device out of its group", USER_AUTH,
                             _ok(200, "device", _ref("Device")), params=[DEVICE_ID])},
    f"{MANAGEMENT}/groups": {"get": _operation("Static groups and their sizes", USER_AUTH,
                                               _ok(200, "groups", {"type": "array"}))},
    f"{MANAGEMENT}/dynamic-groups": {
        "get": _operation("Dynamic groups and their sizes now", USER_AUTH, _ok(200, "groups", {
            "type": "array", "items": _ref("DynamicGroup")})),
        "post": _operation("Create a dynamic group: the accepted devices matching a filter "
                           "(every condition holds)", USER_AUTH,
                           _ok(201, "created", _ref("DynamicGroup")), errors=(400, 401, 403, 409),
                           body=_json({"type": "object", "required": ["name", "filter"],
                                       "properties": {"name": STRING, "filter": {
                                           "type": "array", "items": _ref("Condition")}}}))},
    f"{MANAGEMENT}/dynamic-groups/{{name}}": {
        "get": _operation("Show a dynamic group", USER_AUTH, _ok(200, "group",
                                                                 _ref("DynamicGroup")),
                          params=[_path_param("name")]),
        "delete": _operation("Delete a dynamic group (its deployments keep their filter)",
                             USER_AUTH, _ok(204, "deleted"), params=[_path_param("name")])},
    f"{MANAGEMENT}/dynamic-groups/{{name}}/devices": {"get": _operation(
        "The ids of the devices in a dynamic group now", USER_AUTH, _ok(200, "ids", STRINGS),
        params=[_path_param("name")])},
    f"{MANAGEMENT}/events": {"get": _operation(
        "Events after an id, oldest first (types: comma-separated)", USER_AUTH,
        _ok(200, "events", {"type": "array", "items": _ref("Event")}),
        params=[_query("after", {"type": "integer"}), _query("limit", {"type": "integer"}),
                _query("types")])},
    f"{MANAGEMENT}/events/stream": {"get": _operation(
        "Server-sent events: each event as `id`, `event` (its type) and `data` (the Event as "
        "JSON), a heartbeat comment every 5 s; resumes after the Last-Event-ID header (or "
        "`after`), else from now. Ends after the server's stream lifetime (the client "
        "reconnects); 503 when the process has its maximum of streams open", USER_AUTH,
        {"200": {"description": "the stream", "content": {"text/event-stream": {
            "schema": STRING}}}}, errors=(400, 401, 403, 404, 503),
        params=[_query("after", {"type": "integer"}), _query("types"),
                {"name": "Last-Event-ID", "in": "header", "required": False,
                 "schema": STRING}])},
    f"{MANAGEMENT}/webhooks": {
        "get": _operation("Webhooks (admins only)", USER_AUTH, _ok(200, "webhooks", {
            "type": "array", "items": _ref("Webhook")})),
        "post": _operation("Add a webhook (admins only): every event from now on (or those of "
                           "`types`) is POSTed in order, signed: X-Tern-Signature: sha256=HMAC-"
                           "SHA256(secret, X-Tern-Timestamp + '.' + body); retried with backoff "
                           "until a 2xx. The answer holds the secret (generated unless given)",
                           USER_AUTH, _ok(201, "created", _ref("Webhook")),
                           errors=(400, 401, 403),
                           body=_json({"type": "object", "required": ["url"], "properties": {
                               "url": STRING, "secret": STRING, "types": STRINGS}}))},
    f"{MANAGEMENT}/webhooks/{{webhook_id}}": {
        "get": _operation("Show a webhook", USER_AUTH, _ok(200, "webhook", _ref("Webhook")),
                          params=[_path_param("webhook_id")]),
        "delete": _operation("Delete a webhook", USER_AUTH, _ok(204, "deleted"),
                             params=[_path_param("webhook_id")])},
    f"{MANAGEMENT}/artifacts": {
        "get": _operation("List artifacts", USER_AUTH, _ok(200, "artifacts", {
            "type": "array", "items": _ref("Artifact")}), params=[_query("name")]),
        "post": _operation("Upload an artifact (the body is the artifact, streamed)", USER_AUTH,
                           _ok(201, "stored", _ref("Artifact")), errors=(400, 401, 403, 409, 413),
                           params=[_query("description")], body={"content": {
                               "application/octet-stream": {"schema": {
                                   "type": "string", "format": "binary"}}}})},
    f"{MANAGEMENT}/artifacts/{{artifact_id}}": {
        "get": _operation("Show an artifact", USER_AUTH, _ok(200, "artifact", _ref("Artifact")),
                          params=[ARTIFACT_ID]),
        "delete": _operation("Delete an artifact", USER_AUTH, _ok(204, "deleted"),
                             errors=(401, 403, 404, 409), params=[ARTIFACT_ID])},
    f"{MANAGEMENT}/artifacts/{{artifact_id}}/download": {"get": _operation(
        "Download an artifact", USER_AUTH, _ok(200, "the artifact"), params=[ARTIFACT_ID])},
    f"{MANAGEMENT}/deployments": {
        "get": _operation("List deployments, newest first", USER_AUTH, _ok(200, "deployments", {
            "type": "array", "items": _ref("Deployment")})),
        "post": _operation("Deploy an artifact to devices, a static or dynamic group or all "
                           "devices", USER_AUTH,
                           _ok(201, "created", _ref("Deployment")),
                           body=_json(_ref("NewDeployment")))},
    f"{MANAGEMENT}/deployments/{{deployment_id}}": {"get": _operation(
        "Show a deployment", USER_AUTH, _ok(200, "deployment", _ref("Deployment")),
        params=[DEPLOYMENT_ID])},
    f"{MANAGEMENT}/deployments/{{deployment_id}}/statistics": {"get": _operation(
        "Device counts per status", USER_AUTH, _ok(200, "statistics", OBJECT),
        params=[DEPLOYMENT_ID])},
    f"{MANAGEMENT}/deployments/{{deployment_id}}/devices": {"get": _operation(
        "Per-device status", USER_AUTH, _ok(200, "devices", {"type": "array"}),
        params=[DEPLOYMENT_ID])},
    f"{MANAGEMENT}/deployments/{{deployment_id}}/devices/{{device_id}}/log": {"get": _operation(
        "A device's deployment log", USER_AUTH, _ok(200, "log", _ref("Log")),
        params=[DEPLOYMENT_ID, DEVICE_ID])},
    f"{MANAGEMENT}/deployments/{{deployment_id}}/status": {"put": _operation(
        "Abort the deployment", USER_AUTH, _ok(200, "aborted", _ref("Deployment")),
        errors=(400, 401, 403, 404, 409), params=[DEPLOYMENT_ID], body=_json({
            "type": "object", "required": ["status"],
            "properties": {"status": {"type": "string", "enum": ["aborted"]}}}))},
    f"{MANAGEMENT}/deployments/{{deployment_id}}/pause": {"post": _operation(
        "Pause the deployment: devices not yet started get nothing, those in the middle "
        "finish", USER_AUTH, _ok(200, "paused", _ref("Deployment")),
        errors=(400, 401, 403, 404, 409), params=[DEPLOYMENT_ID], body={**_json({
            "type": "object", "properties": {"reason": STRING}}), "required": False})},
    f"{MANAGEMENT}/deployments/{{deployment_id}}/resume": {"post": _operation(
        "Resume a paused deployment; with artifact_name (a fixed release), the devices not "
        "started get that artifact and those that failed are offered it again",
        USER_AUTH, _ok(200, "resumed", _ref("Deployment")), errors=(400, 401, 403, 404, 409),
        params=[DEPLOYMENT_ID], body={**_json({
            "type": "object", "properties": {"artifact_name": STRING}}), "required": False})},
    f"{MANAGEMENT}/deployments/{{deployment_id}}/release": {"post": _operation(
        "Start the first phase not started yet, whatever it waits for (a gate)", USER_AUTH,
        _ok(200, "released", _ref("Deployment")), errors=(401, 403, 404, 409),
        params=[DEPLOYMENT_ID])},
    "/api/health": {"get": {"summary": "Liveness: 204, no database access", "security": [],
                            "responses": _ok(204, "alive")}},
    "/metrics": {"get": _operation(
        "Prometheus metrics (text exposition format); a metrics-scoped token will do",
        USER_AUTH,
        {"200": {"description": "metrics", "content": {"text/plain": {"schema": {
            "type": "string"}}}}})},
}

DOCUMENT = {
    "openapi": "3.0.3",
    "info": {"title": "Tern management server", "version": "1",
             "description": "Mender-compatible device API (/api/devices) and the management "
                            "API (/api/management/v1). Errors: {error, request_id}. Users "
                            "are admin or read-only (403 on any change); API tokens have a "
                            "scope: admin, read-only or metrics (/metrics only)."},
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "deviceToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "userToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "basicAuth": {"type": "http", "scheme": "basic"},
        },
    },
}


@blueprint.get("/openapi.json")
def openapi_document():
    return DOCUMENT


@blueprint.get("/docs")
def docs_page():
    """A plain page listing every operation (the machine has no CDN for Swagger UI)."""
    rows = "".join(
        f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
        f"<td>{html.escape(operation['summary'])}</td></tr>"
        for path, operations in PATHS.items() for method, operation in operations.items()
        if method != "parameters")
    return (f"<!doctype html><title>Tern API</title><h1>Tern API</h1>"
            f"<p>Machine-readable: <a href='{url_for('meta.openapi_document')}'>openapi.json</a>"
            f"</p><table>{rows}</table>")


@blueprint.get("/health")
def health():
    return "", 204
