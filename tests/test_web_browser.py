"""The dashboard in a real headless Chromium (Debian's chromium and chromium-driver), one lab
per module. Screenshots go to ``test-artifacts/`` (or ``PYROINST_TEST_ARTIFACTS``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import pyroinst
from devices.dummy import DummyDevice
from pyroinst import InstServer
from tests.helpers import web_lab

TOKEN = "browser-token-51ad0c"
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("PYROINST_TEST_ARTIFACTS", ROOT / "test-artifacts"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

if not (CHROMIUM and DRIVER):
    if os.environ.get("CI"):
        raise RuntimeError("CI needs chromium and chromium-driver (.ci/run installs them)")
    pytest.skip(
        "no chromium/chromedriver: apt-get install chromium chromium-driver",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def lab():
    from qcodes.instrument_drivers.mock_instruments import DummyInstrument

    devices = {
        "dev": DummyDevice(idn_delay=0.01),
        "dev2": DummyDevice(idn_delay=0.01),
        "qdac": DummyInstrument("qdac_browser", gates=["ch1", "ch2"]),
    }
    try:
        with web_lab(TOKEN, devices) as found:
            yield found
    finally:
        devices["qdac"].close()


@pytest.fixture(scope="module")
def browser(lab):
    options = webdriver.ChromeOptions()
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        options.add_argument(argument)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        _, _, web = lab
        driver.get(web.login_url)  # logs in, as the link pyroinst web prints does
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, timeout: float = 20.0):
    """Poll ``condition(driver)`` until it is truthy. The page redraws its tables while we
    look: an element gone stale is looked up again."""
    return WebDriverWait(
        driver,
        timeout,
        poll_frequency=0.05,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    ).until(lambda d: condition(d))


def rows(driver) -> dict[str, str]:
    return {
        row.get_attribute("data-name"): row.get_attribute("data-alive")
        for row in driver.find_elements(By.CSS_SELECTOR, "#devices tbody tr")
    }


def test_login_link_and_the_device_table(lab, browser):
    _, _, web = lab
    assert browser.current_url == web.url  # the token is gone from the address bar
    cookie = next(c for c in browser.get_cookies() if c["name"] == "pyroinst_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    table = wait(browser, lambda d: rows(d) if {"dev", "dev2"} <= set(rows(d)) else None)
    assert table["dev"] == "true" and table["dev2"] == "true"


def test_measure_from_the_form_to_a_drawn_plot(lab, browser):
    _, _, web = lab
    browser.get(web.url + "#/device/dev")
    form = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, 'form[data-method="measure"]'))
    form.find_element(By.NAME, "time").send_keys("1500")
    form.find_element(By.CSS_SELECTOR, "button").click()
    link = wait(browser, lambda d: form.find_element(By.CSS_SELECTOR, "pre.result a"))
    link.click()
    wait(browser, lambda d: d.find_element(By.ID, "job-state").text == "done")
    progress = browser.find_element(By.CSS_SELECTOR, "#job-progress .progress")
    assert progress.get_attribute("data-value") == "100"
    plot = browser.find_element(By.ID, "plot")
    assert int(plot.get_attribute("data-drawn")) > 0
    assert plot.get_attribute("data-kind") == "line"
    assert plot.find_elements(By.CSS_SELECTOR, "canvas")  # uPlot drew on its canvas
    downloads = browser.find_elements(By.CSS_SELECTOR, ".downloads a")
    assert [a.text for a in downloads] == ["result .npy", ".csv"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "job-view.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_cancel_a_long_job_from_the_device_view(lab, browser):
    _, _, web = lab
    browser.get(web.url + "#/device/dev2")
    form = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, 'form[data-method="measure"]'))
    form.find_element(By.NAME, "time").send_keys("60000")
    form.find_element(By.CSS_SELECTOR, "button").click()
    job_id = wait(browser, lambda d: form.find_element(By.CSS_SELECTOR, "pre.result a")).text
    row = f'#jobs tr[data-job="{job_id}"]'
    # Clicked inside the wait: the table is redrawn each second under our feet.
    wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, f"{row} button.cancel").click() or True)
    wait(
        browser,
        lambda d: d.find_element(By.CSS_SELECTOR, row).get_attribute("data-state") == "cancelled",
    )


def test_a_qcodes_instrument_shows_its_parameters_and_nothing_hidden(lab, browser):
    _, _, web = lab
    browser.get(web.url + "#/device/qdac")
    cell = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, '[data-parameter="ch1"]'))
    wait(browser, lambda d: cell.text not in ("", "…"))
    item = cell.find_element(By.XPATH, "..")
    assert "ch1" in item.text and " V" in item.text and "Gate ch1" in item.text
    page = browser.find_element(By.TAG_NAME, "body").text
    for hidden in ("close_all", "remove_parameter", "write_raw", "ask_raw"):
        assert hidden not in page
    form = browser.find_element(By.CSS_SELECTOR, 'form[data-method="qcodes_get"]')
    assert "instrument" not in form.text  # the served method's own parameters
    assert form.find_elements(By.NAME, "path")
    browser.execute_script("arguments[0].scrollIntoView()", item)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "dashboard-qcodes.png"))


def test_a_server_that_goes_away_and_comes_back(lab, browser):
    ns, _, web = lab
    browser.get(web.url + "#/")
    extra = InstServer(ns_host=ns.host, ns_port=ns.port, token=TOKEN, heartbeat=0)
    extra.add_device(DummyDevice(idn_delay=0.01), "flaky")
    extra.start()
    port = int(extra.location.rsplit(":", 1)[1])
    wait(browser, lambda d: rows(d).get("flaky") == "true")
    with pyroinst.locate_ns(ns.host, ns.port) as nsp:
        uri, metadata = nsp.lookup("flaky", return_metadata=True)
    extra.stop()
    with pyroinst.locate_ns(ns.host, ns.port) as nsp:
        nsp.register("flaky", uri, metadata=metadata)  # as a crashed server leaves it
    wait(browser, lambda d: rows(d).get("flaky") == "false")
    cell = '#devices tr[data-name="flaky"] td.bad'
    reason = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, cell).text)
    assert "connection refused" in reason
    again = InstServer(port=port, ns_host=ns.host, ns_port=ns.port, token=TOKEN, heartbeat=0)
    again.add_device(DummyDevice(idn_delay=0.01), "flaky")
    with again:
        wait(browser, lambda d: rows(d).get("flaky") == "true")
    browser.save_screenshot(str(ARTIFACTS / "device-table.png"))


def test_a_measurement_is_one_growing_trace_and_channels_have_trends(lab, browser):
    _, _, web = lab
    browser.get(web.url + "#/device/dev")
    form = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, 'form[data-method="measure"]'))
    # The device view shows property values, and a trend of each channel (its history).
    gain = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, '[data-property="gain"]'))
    wait(browser, lambda d: gain.text not in ("", "…") and float(gain.text) == 1.0)
    trend = '.trend[data-channel="temperature"]'
    wait(
        browser,
        lambda d: int(d.find_element(By.CSS_SELECTOR, trend).get_attribute("data-points")) > 1,
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "device-view.png"))
    form.find_element(By.NAME, "time").send_keys("1000")
    form.find_element(By.CSS_SELECTOR, "button").click()
    wait(browser, lambda d: form.find_element(By.CSS_SELECTOR, "pre.result a")).click()
    wait(browser, lambda d: d.find_element(By.ID, "job-state").text == "done")
    plot = browser.find_element(By.ID, "plot")
    wait(browser, lambda d: plot.get_attribute("data-points") == "1000")
    assert plot.get_attribute("data-kind") == "line"
    assert plot.find_elements(By.CSS_SELECTOR, "canvas")
    browser.save_screenshot(str(ARTIFACTS / "job-trace.png"))
    # The job table shows each job's arguments.
    browser.get(web.url + "#/device/dev")
    wait(browser, lambda d: "measure(1000)" in d.find_element(By.ID, "jobs").text)
