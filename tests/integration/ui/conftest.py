"""Browser tests: Debian's headless Chromium driven by Selenium (chromium-driver) against a real
`tern-server serve` over HTTPS. On a failure the page's screenshot and source are saved in
build/test-artifacts/."""
from pathlib import Path

import pytest
from selenium import webdriver

from testkit.admin import ServerAdmin
from testkit.live_server import LiveServer

ARTIFACTS = Path(__file__).resolve().parents[3] / "build" / "test-artifacts"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with LiveServer(tmp_path_factory.mktemp("dashboard") / "data", workers=2) as server:
        yield server


@pytest.fixture(scope="module")
def admin(live) -> ServerAdmin:
    return ServerAdmin(live)


@pytest.fixture(scope="module")
def chromium():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1366,900"):
        options.add_argument(argument)
    options.accept_insecure_certs = True  # the server's self-signed certificate
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService("/usr/bin/chromedriver"))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chromium, live):
    """The module's Chromium with a clean cookie jar, at the server's login page."""
    chromium.get(f"{live.url}/login")
    chromium.delete_all_cookies()
    chromium.get(f"{live.url}/login")
    return chromium


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    driver = item.funcargs.get("browser") if hasattr(item, "funcargs") else None
    if report.failed and report.when == "call" and driver is not None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        stem = ARTIFACTS / item.name.replace("/", "_")
        driver.save_screenshot(str(stem.with_suffix(".png")))
        stem.with_suffix(".html").write_text(driver.page_source)
        report.sections.append(("browser", f"{driver.current_url}; screenshot and page source "
                                           f"in {stem}.png / .html"))
