"""The dashboard in headless Chromium against a live HTTPS server: log in with the keyboard,
accept a device that asked to join, upload an artifact (the progress bar reaches 100 %), deploy
it to simulated devices and watch the live progress bar until every device has finished, read
a failed device's log, abort a deployment that hangs."""
import json
import threading
import time

import pytest
import requests
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from testkit import wait_for
from testkit.artifacts import build_artifact
from testkit.devices import SimulatedDevice
from updater.agent.steps import timestamp
from updater.client import Aborted, Client, Unauthorized, Unreachable
from updater.identity import KeySigner

pytestmark = pytest.mark.slow

EMAIL, PASSWORD = "admin@example.com", "tern admin password"  # ServerAdmin's user
DEVICE_TYPE = "qemux86-64"


class FleetDevice:
    """A protocol-level device: a SimulatedDevice's identity and key, spoken through the
    updater's device API client, in a thread of its own."""

    def __init__(self, live, mac: str):
        self.simulated = SimulatedDevice({"mac": mac}, "ed25519")
        self.client = Client(live.url, KeySigner(self.simulated.key), self.simulated.identity,
                             str(live.certificate))
        self.provides = {"device_type": DEVICE_TYPE, "artifact_name": "release-0"}
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.downloaded = 0
        self.aborted = False

    def ask_to_join(self) -> None:
        with pytest.raises(Unauthorized):
            self.client.authenticate()

    def start_update(self, outcome: str = "success", delay: float = 0, step: float = 1.0,
                     log: tuple[str, ...] = ()) -> None:
        """Poll for a deployment, download it, report each state `step` s apart, then the
        outcome; outcome "hang" keeps reporting downloading until the deployment is aborted."""
        def run():
            try:
                self._update(outcome, delay, step, log)
            except BaseException as error:  # handed to the test thread by finish()
                self.error = error
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def _update(self, outcome, delay, step, log) -> None:
        # Tried again as the daemon does: once, on the loaded CI host beside a QEMU device,
        # the server dropped a device's TLS handshake and the test waited for it in vain.
        wait_for(self._inventory_sent, timeout=60, interval=1, what="the inventory sent")
        deployment = wait_for(lambda: self.client.next_deployment(self.provides), timeout=120,
                              what="a deployment")
        time.sleep(delay)
        with requests.get(deployment["artifact"]["source"]["uri"], stream=True,
                          verify=self.client.verify, timeout=60) as response:
            response.raise_for_status()
            self.downloaded = sum(len(chunk) for chunk in response.iter_content(1 << 16))
        deployment_id = deployment["id"]
        if outcome == "hang":
            try:
                while True:
                    self.client.report_status(deployment_id, "downloading")
                    time.sleep(step)
            except Aborted:
                self.aborted = True
                return
        for status in ("downloading", "installing", "rebooting"):
            self.client.report_status(deployment_id, status)
            time.sleep(step)
        if log:
            self.client.upload_log(deployment_id, [
                {"timestamp": timestamp(), "level": "error", "message": line} for line in log])
        self.client.report_status(deployment_id, outcome)

    def _inventory_sent(self) -> bool:
        try:
            self.client.send_inventory(self.provides)
            return True
        except Unreachable:
            return False

    def finish(self, timeout: float = 60) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the simulated device did not finish"
        if self.error is not None:
            raise self.error


def wait(browser, condition, timeout: float = 30):
    return WebDriverWait(browser, timeout, poll_frequency=0.2).until(condition)


def log_in(browser, email: str = EMAIL) -> None:
    browser.find_element(By.ID, "email").send_keys(email)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "nav[aria-label=Main]")))


def go(browser, link_text: str) -> None:
    browser.find_element(By.LINK_TEXT, link_text).click()


def flash(browser) -> str:
    return wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, ".flash"))).text


def progress_value(browser) -> tuple[int, int]:
    """The live progress bar's (value, max), read again if it was just swapped."""
    for _ in range(10):
        try:
            bar = browser.find_element(By.CSS_SELECTOR, "#progress progress")
            return int(bar.get_attribute("value")), int(bar.get_attribute("max"))
        except StaleElementReferenceException:
            continue
    raise AssertionError("the progress bar kept changing under the reader")


@pytest.fixture(scope="module")
def artifact_file(tmp_path_factory):
    """A single-file module artifact with a 4 MiB payload: several upload progress events."""
    path = tmp_path_factory.mktemp("artifact") / "app-2.0.mender"
    path.write_bytes(build_artifact({"app.bin": bytes(range(256)) * (4 << 12)}, name="app-2.0",
                                    device_types=[DEVICE_TYPE], module_type="single-file",
                                    compression="none"))
    return path


def test_log_in_with_the_keyboard_and_out(browser, admin):
    assert "/login" in browser.current_url
    browser.execute_script("document.activeElement.blur()")
    for _ in range(5):  # from the top of the page: the skip link, then the form
        browser.switch_to.active_element.send_keys(Keys.TAB)
        if browser.switch_to.active_element.get_attribute("id") == "email":
            break
    email = browser.switch_to.active_element
    assert email.get_attribute("id") == "email"
    assert browser.execute_script(
        "return getComputedStyle(document.activeElement).outlineStyle") == "solid"
    email.send_keys(EMAIL, Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("id") == "password"
    browser.switch_to.active_element.send_keys(PASSWORD, Keys.ENTER)
    wait(browser, EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Fleet overview"))
    assert EMAIL in browser.find_element(By.CSS_SELECTOR, "form.logout").text

    browser.find_element(By.CSS_SELECTOR, "form.logout button").click()
    assert flash(browser) == "You are logged out."
    browser.get(browser.current_url.replace("/login", "/deployments"))
    assert "/login?next=" in browser.current_url


def test_accept_upload_deploy_watch_progress_read_log_and_abort(browser, live, admin,
                                                                artifact_file):
    log_in(browser)
    newcomer = FleetDevice(live, "52:54:00:aa:00:01")
    newcomer.ask_to_join()
    others = [FleetDevice(live, f"52:54:00:aa:00:0{i}") for i in (2, 3)]
    for device in others:
        device.ask_to_join()
        [row] = [d for d in admin.api("GET", "/devices")
                 if d["identity_data"] == device.simulated.identity]
        admin.api("PUT", f"/devices/{row['id']}/status", json={"status": "accepted"})

    # Accept the newcomer from the pending tab.
    go(browser, "Devices")
    go(browser, "Pending")
    row = browser.find_element(By.XPATH, "//tr[td[contains(., 'mac=52:54:00:aa:00:01')]]")
    row.find_element(By.XPATH, ".//button[text()='Accept']").click()
    assert "accepted" in flash(browser)
    assert browser.find_elements(By.XPATH, "//td[contains(., 'mac=52:54:00:aa:00:01')]") == []
    newcomer.client.authenticate()  # accepted now

    # Upload: the progress text is recorded across the page change that follows it.
    go(browser, "Artifacts")
    browser.execute_script("""
        const status = document.getElementById("upload-status");
        new MutationObserver(() => {
          const seen = JSON.parse(sessionStorage.getItem("upload") || "[]");
          seen.push(status.textContent);
          sessionStorage.setItem("upload", JSON.stringify(seen));
        }).observe(status, {childList: true, characterData: true, subtree: true});""")
    browser.find_element(By.ID, "artifact-file").send_keys(str(artifact_file))
    browser.find_element(By.ID, "description").send_keys("from the browser test")
    browser.find_element(By.CSS_SELECTOR, "#upload button").click()
    wait(browser, EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Artifact app-2.0"))
    seen = json.loads(browser.execute_script("return sessionStorage.getItem('upload')"))
    assert "100 % sent" in seen, seen
    details = browser.find_element(By.TAG_NAME, "main").text
    for expected in ("single-file", "unsigned", str(artifact_file.stat().st_size),
                     "from the browser test", DEVICE_TYPE):
        assert expected in details, expected

    # Deploy to all accepted devices; they finish 0, 2 and 4 s apart, the last one failing.
    fleet = [newcomer, *others]
    for index, device in enumerate(fleet):
        failing = index == 2
        device.start_update("failure" if failing else "success", delay=2 * index, step=0.7,
                            log=("ArtifactInstall: writing app.bin",
                                 "ArtifactInstall: No space left on device") if failing else ())
    browser.find_element(By.LINK_TEXT, "Deploy app-2.0").click()
    browser.find_element(By.ID, "name").clear()
    browser.find_element(By.ID, "name").send_keys("app-2.0 everywhere")
    browser.find_element(By.CSS_SELECTOR, "input[name=target][value=all]").click()
    browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    wait(browser, EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "app-2.0 everywhere"))
    seen_values = [progress_value(browser)[0]]
    deadline = time.monotonic() + 90
    while seen_values[-1] < 3 and time.monotonic() < deadline:
        time.sleep(0.3)
        value, maximum = progress_value(browser)
        assert maximum == 3
        if value != seen_values[-1]:
            seen_values.append(value)
    assert seen_values[-1] == 3, (seen_values, [device.error for device in fleet])
    assert seen_values == sorted(seen_values) and seen_values[0] < 3, seen_values
    for device in fleet:
        device.finish()
        assert device.downloaded == artifact_file.stat().st_size
    wait(browser, EC.text_to_be_present_in_element((By.ID, "progress"), "finished"))
    summary = browser.find_element(By.CSS_SELECTOR, "#progress .count").text
    assert "2 ok" in summary and "1 failed" in summary
    assert browser.find_elements(By.ID, "abort") == []  # nothing left to abort

    # The failed device's log.
    browser.find_element(By.CSS_SELECTOR, "#progress a[id^=log-]").click()
    wait(browser, EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Log of device"))
    log_text = browser.find_element(By.CSS_SELECTOR, "table.log").text
    assert "No space left on device" in log_text

    # A deployment that hangs at downloading, aborted from its page.
    stuck = fleet[2]
    stuck.start_update("hang", step=0.5)
    go(browser, "Deployments")
    go(browser, "New deployment")
    browser.find_element(By.ID, "name").send_keys("stuck")
    browser.find_element(By.CSS_SELECTOR, "input[name=target][value=devices]").click()
    stuck_id = next(d["id"] for d in admin.api("GET", "/devices")
                    if d["identity_data"] == stuck.simulated.identity)
    browser.find_element(By.CSS_SELECTOR, f"input[name=devices][value='{stuck_id}']").click()
    browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    wait(browser, EC.text_to_be_present_in_element((By.ID, "progress"), "downloading"), 60)
    browser.find_element(By.ID, "abort").click()
    wait(browser, EC.alert_is_present()).accept()
    assert "aborted" in flash(browser)
    wait(browser, EC.text_to_be_present_in_element((By.CSS_SELECTOR, "#progress h2"), "aborted"))
    stuck.finish()
    assert stuck.aborted

    go(browser, "Overview")
    charts = browser.find_element(By.TAG_NAME, "main").get_attribute("innerHTML")
    assert "release-0: 3 devices" in charts  # the simulated devices never reported app-2.0
    assert ": 2 success, 1 failure</title>" in charts


def test_a_read_only_user_sees_no_actions(browser, live, admin):
    admin.cli("user", "create", "viewer@example.com", "--role", "read-only")
    FleetDevice(live, "52:54:00:aa:00:09").ask_to_join()
    log_in(browser, "viewer@example.com")
    assert "viewer@example.com (read-only)" in browser.find_element(
        By.CSS_SELECTOR, "form.logout").text
    go(browser, "Devices")
    go(browser, "Pending")
    assert browser.find_elements(By.XPATH, "//td[contains(., 'mac=52:54:00:aa:00:09')]")
    for page in ("Pending", "Preauthorized", "Artifacts", "Deployments", "Overview"):
        go(browser, page)
        assert browser.find_elements(By.CSS_SELECTOR, "main form, main button") == [], page
        assert browser.find_elements(By.LINK_TEXT, "New deployment") == [], page


def test_deployment_progress_follows_the_event_stream_without_a_reload(browser, live, admin,
                                                                      artifact_file):
    """The deployment page changes as the device reports, with no reload and no polling:
    the server's event stream says when, the page fetches its live part then."""
    device = FleetDevice(live, "52:54:00:aa:00:20")
    device.ask_to_join()
    [row] = [d for d in admin.api("GET", "/devices")
             if d["identity_data"] == device.simulated.identity]
    admin.api("PUT", f"/devices/{row['id']}/status", json={"status": "accepted"})
    if not any(a["name"] == "app-2.0" for a in admin.api("GET", "/artifacts")):
        admin.cli("artifacts", "upload", str(artifact_file))
    deployment = admin.api("POST", "/deployments", json={
        "name": "followed", "artifact_name": "app-2.0", "devices": [row["id"]]})
    log_in(browser)
    browser.get(f"{live.url}/deployments/{deployment['id']}")
    wait(browser, EC.text_to_be_present_in_element((By.CSS_SELECTOR, "#progress h2"), "pending"))
    browser.execute_script("window.sameDocument = true;")

    device.start_update("success", step=3)
    wait(browser, EC.text_to_be_present_in_element(
        (By.CSS_SELECTOR, f"tr[data-device='{row['id']}']"), "installing"), 60)
    wait(browser, EC.text_to_be_present_in_element((By.CSS_SELECTOR, "#progress h2"),
                                                   "finished"), 60)
    device.finish()
    assert progress_value(browser) == (1, 1)
    assert browser.execute_script("return window.sameDocument === true")  # never reloaded
    requested = browser.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)")
    assert any(url.endswith(f"/deployments/{deployment['id']}/events") for url in requested)
    fragments = [url for url in requested if "/progress" in url]
    # one fetch on connecting, then one per event at most (downloading, installing,
    # rebooting, success, finished): not one every few seconds
    assert 1 <= len(fragments) <= 6, fragments
