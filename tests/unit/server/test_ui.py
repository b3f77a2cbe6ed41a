"""The web dashboard through Flask's test client: login and logout, CSRF, every page with data,
its actions, and HTML errors for pages while the APIs keep answering JSON."""
import re

import pytest

from testkit.artifacts import single_file_artifact
from testkit.devices import SimulatedDevice

from .conftest import PASSWORD, configure_verify_keys, public_key_fingerprint

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(client, path: str = "/login") -> str:
    return CSRF.search(client.get(path).get_data(as_text=True)).group(1)


def log_in(client, email="admin@example.com", password=PASSWORD, next_page=""):
    return client.post("/login", data={"email": email, "password": password, "next": next_page,
                                       "csrf_token": csrf_token(client)})


@pytest.fixture
def browser(app, admin):
    """A test client logged in to the dashboard as the admin user (made by `admin`)."""
    client = app.test_client()
    assert log_in(client).status_code == 303
    return client


def post(client, path: str, data: dict | None = None, **options):
    """A form post with the session's CSRF token, as the page's form sends it."""
    return client.post(path, data={**(data or {}), "csrf_token": csrf_token(client, "/")},
                       **options)


def page(response) -> str:
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    assert response.content_type.startswith("text/html")
    return response.get_data(as_text=True)


# -- login, logout, CSRF ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/devices", "/devices?status=pending", "/artifacts",
                                  "/deployments", "/deployments/new", "/devices/x"])
def test_pages_redirect_to_login_without_a_session(client, path):
    response = client.get(path)
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/login?next=")


def test_actions_without_login_change_nothing(client, fleet, app):
    device = SimulatedDevice({"mac": "pending"})
    fleet.authenticate(device)
    device_id = fleet.device_id(device)
    token = csrf_token(client)  # a valid CSRF token of an anonymous session
    response = client.post(f"/devices/{device_id}/status",
                           data={"status": "accepted", "csrf_token": token})
    assert response.status_code == 303 and response.headers["Location"].startswith("/login")
    assert client.get(f"/api/management/v1/devices/{device_id}",
                      headers=fleet.admin).json["status"] == "pending"


def test_login_sets_a_secure_httponly_session_cookie_and_goes_to_next(app, admin):
    client = app.test_client()
    response = log_in(client, next_page="/artifacts")
    assert response.status_code == 303 and response.headers["Location"] == "/artifacts"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("tern_session=")
    assert {"Secure", "HttpOnly", "SameSite=Lax"} <= {p.strip() for p in cookie.split(";")}
    assert "admin@example.com" in page(client.get("/artifacts"))


def test_login_never_redirects_to_another_site(app, admin):
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        client = app.test_client()
        assert log_in(client, next_page=target).headers["Location"] == "/"


def test_wrong_password_is_a_401_page(app, admin):
    client = app.test_client()
    response = log_in(client, password="wrong password")
    assert response.status_code == 401
    assert "wrong email or password" in response.get_data(as_text=True)
    assert client.get("/").status_code == 303


def test_logout_revokes_the_session_token(app, browser):
    cookie = browser.get_cookie("tern_session")
    assert post(browser, "/logout").headers["Location"] == "/login"
    assert browser.get("/").status_code == 303
    stolen = app.test_client()  # the old cookie, replayed: its token is revoked
    stolen.set_cookie("tern_session", cookie.value)
    assert stolen.get("/").status_code == 303


@pytest.mark.parametrize("token", [None, "forged"])
def test_forms_without_a_valid_csrf_token_are_a_400(browser, fleet, token):
    device = SimulatedDevice({"mac": "pending"})
    fleet.authenticate(device)
    device_id = fleet.device_id(device)
    data = {"status": "accepted", **({"csrf_token": token} if token else {})}
    response = browser.post(f"/devices/{device_id}/status", data=data)
    assert response.status_code == 400
    assert "CSRF" in page_text(response)
    assert browser.get(f"/api/management/v1/devices/{device_id}",
                       headers=fleet.admin).json["status"] == "pending"


def test_login_form_needs_a_csrf_token_too(app, admin):
    response = app.test_client().post("/login", data={"email": "admin@example.com",
                                                      "password": PASSWORD})
    assert response.status_code == 400


def page_text(response) -> str:
    assert response.content_type.startswith("text/html")
    return response.get_data(as_text=True)


# -- errors: HTML for pages, JSON for the APIs ------------------------------------------------


def test_errors_are_html_pages_for_the_dashboard_and_json_for_the_api(browser, admin):
    response = browser.get("/devices/no-such-device")
    assert response.status_code == 404
    assert "no device no-such-device" in page_text(response)
    response = browser.get("/devices?status=bogus")
    assert response.status_code == 400 and "<h1>" in page_text(response)
    api = browser.get("/api/management/v1/devices/no-such-device", headers=admin)
    assert api.status_code == 404 and api.json["error"] == "no device no-such-device"
    assert browser.get("/api/management/v1/devices").status_code == 401  # no cookie auth
    response = browser.get("/no/such/page")
    assert response.status_code == 404 and "There is no page at /no/such/page" in \
        page_text(response)
    assert browser.get("/api/no/such/path").json["error"]


# -- pages with data --------------------------------------------------------------------------


def test_overview_shows_counts_and_both_charts(browser, fleet, upload, client, admin):
    devices = [fleet.accepted(mac=f"52:54:00:00:00:0{i}") for i in range(3)]
    fleet.authenticate(SimulatedDevice({"mac": "still-pending"}))
    upload("app-1.0")
    deployment = client.post("/api/management/v1/deployments", json={
        "name": "first", "artifact_name": "app-1.0", "all_devices": True}, headers=admin).json
    for device, status in zip(devices, ("success", "failure"), strict=False):
        fleet.next(device)
        assert fleet.status(device, deployment["id"], status).status_code == 204
    html = page(browser.get("/"))
    assert re.search(r"<strong>3</strong> accepted", html)
    assert re.search(r"<strong>1</strong> pending", html)
    assert "<title>release-0: 3 devices</title>" in html
    assert re.search(r"<title>\d{4}-\d\d-\d\d: 1 success, 1 failure</title>", html)
    assert 'value="2"' in html and "first" in html  # 2 of 3 finished


def test_device_tabs_and_accept_reject(browser, fleet):
    device = SimulatedDevice({"mac": "new-device"})
    fleet.authenticate(device)
    device_id = fleet.device_id(device)
    assert "mac=new-device" in page(browser.get("/devices?status=pending"))
    assert "mac=new-device" not in page(browser.get("/devices?status=accepted"))
    response = post(browser, f"/devices/{device_id}/status",
                    {"status": "accepted", "next": "/devices?status=pending"})
    assert response.status_code == 303
    assert response.headers["Location"] == "/devices?status=pending"
    assert fleet.authenticate(device).status_code == 200
    assert "mac=new-device" in page(browser.get("/devices?status=accepted"))
    post(browser, f"/devices/{device_id}/status", {"status": "rejected"})
    assert fleet.authenticate(device).status_code == 401
    assert "mac=new-device" in page(browser.get("/devices?status=rejected"))
    audit = browser.get("/api/management/v1/audit", headers=fleet.admin).json
    assert [(e["action"], e["actor"]) for e in audit[:2]] == [
        ("device.reject", "user:admin@example.com"), ("device.accept", "user:admin@example.com")]


def test_preauthorize_then_the_device_is_accepted_on_its_first_request(browser, fleet):
    device = SimulatedDevice({"mac": "pre", "serial": "7"}, "ed25519")
    response = post(browser, "/devices/preauthorize",
                    {"identity": "mac=pre\nserial = 7\n", "pubkey": device.pubkey})
    assert response.status_code == 303
    assert "mac=pre" in page(browser.get("/devices?status=preauthorized"))
    assert fleet.authenticate(device).status_code == 200
    response = post(browser, "/devices/preauthorize", {"identity": "not a pair",
                                                       "pubkey": device.pubkey})
    assert response.status_code == 400 and "name=value" in page_text(response)


def test_device_page_shows_inventory_and_sets_and_clears_the_group(browser, fleet):
    device = fleet.accepted(device_type="raspberrypi4")
    html = page(browser.get(f"/devices/{device.id}"))
    assert "raspberrypi4" in html and "52:54:00:00:00:01" in html
    post(browser, f"/devices/{device.id}/group", {"group": "lab"})
    assert "group: lab" in page(browser.get(f"/devices/{device.id}"))
    assert "lab (1)" in page(browser.get("/devices"))
    response = post(browser, f"/devices/{device.id}/group", {"group": "no spaces allowed"})
    assert response.status_code == 400
    post(browser, f"/devices/{device.id}/group", {"group": "", "clear": ""})
    assert "group: none" in page(browser.get(f"/devices/{device.id}"))


def test_artifact_upload_details_and_delete(browser, tmp_path, keys, app):
    configure_verify_keys(app, ["ecdsa.pub"], keys["ecdsa"].public_path.parent)
    path = single_file_artifact(tmp_path, "app-2.0", depends={"artifact_name": ["app-1.0"]},
                          signing_key=keys["ecdsa"].private_key)
    token = csrf_token(browser, "/artifacts")
    response = browser.post("/artifacts?description=nightly", data=path.read_bytes(),
                            headers={"X-CSRFToken": token, "Accept": "application/json",
                                     "Content-Type": "application/octet-stream"})
    assert response.status_code == 201, response.json
    html = page(browser.get(response.json["url"]))
    fingerprint = public_key_fingerprint(keys["ecdsa"].public_path)
    for expected in ("app-2.0", "verified by ecdsa.pub", fingerprint, "single-file",
                     "nightly", "qemux86-64",
                     "artifact_name: app-1.0", "rootfs-image.single-file.version: app-2.0",
                     str(path.stat().st_size)):
        assert expected in html, expected
    html = page(browser.get("/artifacts"))
    assert "app-2.0" in html and "verified by ecdsa.pub" in html
    assert "Uploads must be signed with one of these keys" in html and fingerprint in html
    assert post(browser, f"/artifacts/{response.json['id']}/delete").status_code == 303
    html = page(browser.get("/artifacts"))
    assert "Artifact app-2.0 deleted." in html and "No artifacts yet." in html


def test_artifact_pages_tell_unsigned_from_signed_but_unverified(browser, upload, keys):
    upload("plain-1.0")
    upload("signed-1.0", signing_key=keys["rsa"].private_key)
    html = page(browser.get("/artifacts"))
    assert "No verify keys are configured" in html
    assert re.search(r"plain-1.0</a>.*?<span class=\"signature unsigned\">unsigned</span>",
                     html, re.S)
    assert re.search(r"signed-1.0</a>.*?signed, not verified \(no keys configured\)", html, re.S)


def test_a_bad_upload_is_a_json_400_for_the_page_script(browser):
    response = browser.post("/artifacts", data=b"not an artifact",
                            headers={"X-CSRFToken": csrf_token(browser, "/artifacts"),
                                     "Accept": "application/json",
                                     "Content-Type": "application/octet-stream"})
    assert response.status_code == 400
    assert response.json["error"].startswith("invalid artifact")
    response = browser.post("/artifacts", data=b"x", headers={"Accept": "application/json"})
    assert response.status_code == 400 and "CSRF" in response.json["error"]


def test_deploy_to_a_group_see_progress_and_logs_then_abort(browser, fleet, upload, client):
    lab = [fleet.accepted(mac=f"52:54:00:00:01:0{i}") for i in range(2)]
    other = fleet.accepted(mac="52:54:00:00:02:00")
    for device in lab:
        post(browser, f"/devices/{device.id}/group", {"group": "lab"})
    upload("app-1.0")
    html = page(browser.get("/deployments/new?artifact_name=app-1.0"))
    assert "lab (2)" in html and other.id in html
    response = post(browser, "/deployments", {"name": "to the lab", "artifact_name": "app-1.0",
                                              "target": "group", "group": "lab"})
    assert response.status_code == 303
    deployment_path = response.headers["Location"]
    deployment_id = deployment_path.rsplit("/", 1)[1]
    assert fleet.next(other).status_code == 204

    fleet.next(lab[0])
    fleet.status(lab[0], deployment_id, "downloading")
    progress = page(browser.get(f"{deployment_path}/progress"))
    assert "data-events" in progress and "downloading" in progress
    assert 'max="2" value="0"' in progress
    fleet.status(lab[0], deployment_id, "failure")
    client.put(f"/api/devices/v1/deployments/device/deployments/{deployment_id}/log",
               json={"messages": [{"timestamp": "2026-01-01T00:00:00Z", "level": "error",
                                   "message": "ArtifactInstall: <no space left>"}]},
               headers=lab[0].headers)
    html = page(browser.get(deployment_path))
    assert 'max="2" value="1"' in html and "1 failed" in html
    log = page(browser.get(f"{deployment_path}/devices/{lab[0].id}/log"))
    assert "ArtifactInstall: &lt;no space left&gt;" in log  # escaped

    assert post(browser, f"{deployment_path}/abort").status_code == 303
    progress = page(browser.get(f"{deployment_path}/progress"))
    assert "data-events" not in progress and "aborted" in progress
    response = post(browser, f"{deployment_path}/abort")
    assert response.status_code == 409 and "already aborted" in page_text(response)
    assert "to the lab" in page(browser.get("/deployments"))


def test_deployment_form_mistakes_are_400_pages(browser, fleet, upload):
    device = fleet.accepted()
    upload("app-1.0")
    for data in ({"name": "x", "artifact_name": "app-1.0"},
                 {"name": "x", "artifact_name": "app-1.0", "target": "devices"},
                 {"name": "x", "artifact_name": "nope", "target": "devices",
                  "devices": device.id},
                 {"name": "", "artifact_name": "app-1.0", "target": "all"}):
        response = post(browser, "/deployments", data)
        assert response.status_code == 400, data
        assert "<h1>400" in page_text(response)


def test_long_lists_come_in_pages_of_100(browser, fleet, app):
    app.config["NEW_KEYS_PER_SOURCE"] = 101  # all from one address, within a minute
    for index in range(101):
        fleet.authenticate(SimulatedDevice({"mac": f"page-{index:03}"}, "ed25519"))
    first = page(browser.get("/devices?status=pending"))
    assert "1–100 of 101" in first and first.count('value="accepted"') == 100
    assert 'href="/devices?status=pending&amp;page=2" rel="next"' in first
    second = page(browser.get("/devices?status=pending&page=2"))
    assert "101–101 of 101" in second and second.count('value="accepted"') == 1
    assert "mac=page-100" in second and "mac=page-100" not in first


# -- roles ------------------------------------------------------------------------------------


def test_a_read_only_user_sees_no_actions_and_cannot_post_them(app, client, admin, fleet, upload):
    client.post("/api/management/v1/users", json={
        "email": "viewer@example.com", "password": PASSWORD, "role": "read-only"}, headers=admin)
    viewer = app.test_client()
    assert log_in(viewer, email="viewer@example.com").status_code == 303
    device = SimulatedDevice({"mac": "pending"})
    fleet.authenticate(device)
    device_id = fleet.device_id(device)
    artifact = upload("app-1.0")
    for path in ("/devices?status=pending", f"/devices/{device_id}", "/artifacts",
                 f"/artifacts/{artifact['id']}", "/deployments", "/"):
        html = page(viewer.get(path))
        forms = re.findall(r'<form[^>]*method="post"[^>]*action="([^"]+)"', html)
        assert forms == ["/logout"], (path, forms)
        assert "/deployments/new" not in html, path
    assert viewer.get("/deployments/new").status_code == 403
    refused = post(viewer, f"/devices/{device_id}/status", {"status": "accepted"})
    assert refused.status_code == 403
    assert "read-only: it can read but not change anything" in page_text(refused)
    assert client.get(f"/api/management/v1/devices/{device_id}",
                      headers=admin).json["status"] == "pending"
    # an admin's pages have them
    admin_page = app.test_client()
    log_in(admin_page)
    assert "Accept" in page(admin_page.get("/devices?status=pending"))
    assert post(viewer, "/logout").status_code == 303


def test_a_phased_deployment_shows_its_phases_the_pause_and_why_and_its_actions(
        app, browser, client, admin, fleet, upload):
    devices = [fleet.accepted(mac=f"52:54:00:00:03:0{i}", key_kind="ed25519") for i in range(4)]
    upload("app-1.0")
    upload("app-1.1")
    deployment = client.post("/api/management/v1/deployments", json={
        "name": "canary first", "artifact_name": "app-1.0", "devices": [d.id for d in devices],
        "phases": [{"size": "50%", "max_failures": 0}, {"release": True}]},
        headers=admin).json
    path = f"/deployments/{deployment['id']}"
    phase_of = {d["device_id"]: d["phase"] for d in client.get(
        f"/api/management/v1{path}/devices", headers=admin).json}
    canary = next(d for d in devices if phase_of[d.id] == 1)
    fleet.next(canary)
    fleet.status(canary, deployment["id"], "failure")

    html = page(browser.get(path))
    assert ("Paused since" in html and "phase 1: 1 of 1 finished devices failed, more than "
            "the 0 allowed" in html)
    assert '<tr data-phase="2">' in html and "when released" in html and "waiting" in html
    forms = re.findall(r'<form[^>]*method="post"[^>]*action="([^"]+)"', html)
    assert forms == ["/logout", f"{path}/resume", f"{path}/abort"]
    assert "<option>app-1.1</option>" in html

    client.post("/api/management/v1/users", json={
        "email": "viewer@example.com", "password": PASSWORD, "role": "read-only"}, headers=admin)
    viewer = app.test_client()
    log_in(viewer, email="viewer@example.com")
    assert re.findall(r'<form[^>]*method="post"[^>]*action="([^"]+)"',
                      page(viewer.get(path))) == ["/logout"]
    for action in ("resume", "release", "pause"):
        assert post(viewer, f"{path}/{action}").status_code == 403

    assert post(browser, f"{path}/resume", {"artifact_name": "app-1.1"}).status_code == 303
    html = page(browser.get(path))
    assert "Paused since" not in html and "app-1.1" in html
    forms = re.findall(r'<form[^>]*method="post"[^>]*action="([^"]+)"', html)
    assert forms == ["/logout", f"{path}/pause", f"{path}/release", f"{path}/abort"]
    assert post(browser, f"{path}/release").status_code == 303
    assert post(browser, f"{path}/pause", {"reason": "night shift"}).status_code == 303
    assert "night shift" in page(browser.get(path))
    shown = client.get(f"/api/management/v1{path}", headers=admin).json
    assert shown["status"] == "paused" and shown["phases"][1]["started_at"] is not None


def test_the_new_deployment_form_makes_a_canary_first_rollout(browser, client, admin, fleet,
                                                              upload):
    for index in range(4):
        fleet.accepted(mac=f"52:54:00:00:04:0{index}", key_kind="ed25519")
    upload("app-1.0")
    assert 'name="canary"' in page(browser.get("/deployments/new"))
    response = post(browser, "/deployments", {
        "name": "ramp", "artifact_name": "app-1.0", "target": "all", "canary": "25%",
        "then": "after", "after_success": "100%", "max_failures": "0", "retries": "1",
        "window": "22:00-04:00"})
    assert response.status_code == 303
    shown = client.get(f"/api/management/v1{response.headers['Location']}", headers=admin).json
    assert [(p["size"], p["after_success"], p["max_failures"]) for p in shown["phases"]] == \
        [(1, None, 0), (3, "100%", 0)]
    assert (shown["retries"], shown["window"], shown["device_count"]) == (1, "22:00-04:00", 4)
    refused = post(browser, "/deployments", {"name": "x", "artifact_name": "app-1.0",
                                             "target": "all", "canary": "200%"})
    assert refused.status_code == 400 and "phases[0].size must be" in page_text(refused)


def test_the_canary_may_be_the_devices_of_a_dynamic_group(browser, client, admin, fleet,
                                                          upload):
    devices = [fleet.accepted(mac=f"52:54:00:00:05:0{index}", key_kind="ed25519")
               for index in range(4)]
    for device in devices[:1]:
        fleet.client.patch("/api/devices/v1/inventory/device/attributes",
                           json=[{"name": "site", "value": "lab"}], headers=device.headers)
    site_lab = [{"attribute": "site", "type": "$eq", "value": "lab"}]
    assert client.post("/api/management/v1/dynamic-groups", headers=admin, json={
        "name": "lab", "filter": site_lab}).status_code == 201
    upload("app-1.0")
    assert 'name="canary_group"' in page(browser.get("/deployments/new"))
    response = post(browser, "/deployments", {
        "name": "lab first", "artifact_name": "app-1.0", "target": "all",
        "canary_group": "lab", "then": "after", "after_success": "100%"})
    assert response.status_code == 303
    shown = client.get(f"/api/management/v1{response.headers['Location']}", headers=admin).json
    assert [(p["size"], p["filter"]) for p in shown["phases"]] == [(1, site_lab), (3, None)]
    assert 'matching site $eq "lab"' in page(browser.get(response.headers["Location"]))
    refused = post(browser, "/deployments", {"name": "x", "artifact_name": "app-1.0",
                                             "target": "all", "canary": "1",
                                             "canary_group": "lab"})
    assert refused.status_code == 400 and "not both" in page_text(refused)


def test_a_deployment_page_streams_its_own_events_only(browser, client, admin, fleet, upload):
    one, two = fleet.accepted("52:54:00:00:00:01"), fleet.accepted("52:54:00:00:00:02")
    upload("app-1.0")
    ids = [client.post("/api/management/v1/deployments", headers=admin, json={
        "name": f"d{n}", "artifact_name": "app-1.0", "devices": [device.id]}).json["id"]
        for n, device in enumerate((one, two))]
    for device, deployment_id in zip((one, two), ids, strict=True):
        fleet.next(device)
        fleet.status(device, deployment_id, "downloading")
    first = client.get("/api/management/v1/events", headers=admin).json[0]["id"]
    response = browser.get(f"/deployments/{ids[0]}/events", query_string={"after": first})
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    body = response.get_data(as_text=True)
    assert body.count("event: ") == 3 and ids[1] not in body  # created, started, downloading
    assert "event: deployment.created" in body and "event: deployment.device_status" in body
    assert "event: deployment.phase_started" in body
    assert client.get(f"/deployments/{ids[0]}/events").status_code == 303  # no session: login
    assert browser.get("/deployments/nope/events").status_code == 404


def test_deploy_to_a_dynamic_group_from_the_form(browser, client, admin, fleet, upload):
    member = fleet.accepted("52:54:00:00:00:01")
    client.put("/api/devices/v1/inventory/device/attributes", headers=member.headers, json=[
        {"name": "device_type", "value": "qemux86-64"}, {"name": "ram_mb", "value": "2048"}])
    client.post("/api/management/v1/dynamic-groups", headers=admin, json={
        "name": "big", "filter": [{"attribute": "ram_mb", "type": "$gte", "value": 1024}]})
    upload("app-1.0")
    form = page(browser.get("/deployments/new"))
    assert 'value="dynamic_group"' in form and "big (1 now)" in form
    response = post(browser, "/deployments", {"name": "to big", "artifact_name": "app-1.0",
                                              "target": "dynamic_group", "dynamic_group": "big"})
    assert response.status_code == 303
    shown = page(browser.get(response.headers["Location"]))
    assert "Dynamic group <strong>big</strong>" in shown and "join it get this" in shown
    assert 'ram_mb $gte 1024' in shown and 'id="abort"' in shown
    response = post(browser, "/deployments", {"name": "fixed", "artifact_name": "app-1.0",
                                              "target": "dynamic_group", "dynamic_group": "big",
                                              "fixed": "on"})
    assert "the devices it had at creation" in page(browser.get(response.headers["Location"]))


def test_a_device_row_shows_the_bytes_its_agent_fetched(browser, fleet, upload, client):
    device = fleet.accepted(mac="52:54:00:00:03:00")
    upload("app-2.0")
    deployment_id = client.post("/api/management/v1/deployments", json={
        "name": "delta", "artifact_name": "app-2.0", "devices": [device.id]},
        headers=fleet.admin).json["id"]
    fleet.next(device)
    stats = 'download stats {"mode": "adaptive", "fetched": 1258291, "full": 100663296}'
    client.put(f"/api/devices/v1/deployments/device/deployments/{deployment_id}/log",
               json={"messages": [{"timestamp": "2026-01-01T00:00:00Z", "level": "info",
                                   "message": stats}]}, headers=device.headers)
    html = page(browser.get(f"/deployments/{deployment_id}/progress"))
    assert '<td class="downloaded">1.2 MiB of 96.0 MiB (adaptive)</td>' in html
    [row] = client.get(f"/api/management/v1/deployments/{deployment_id}/devices",
                       headers=fleet.admin).json
    assert row["download"] == {"mode": "adaptive", "fetched": 1258291, "full": 100663296}
