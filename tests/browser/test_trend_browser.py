"""The kidney trend view in a real browser (issue #23): Debian chromium through the whole SMART launch, the EHR's
authorization server being the test EHR (authlib) in front of the real FHIR test server.

Three demo patients are opened by EHR launch and one by standalone launch (picking the patient at the EHR); each
page is checked and kept as a screenshot in test-artifacts/. The refusals are seen as a clinician would see them:
an unknown iss, a forged state, access denied at the EHR, a scope not granted, an expired token. The browser's
console must show no Content-Security-Policy violation (the page has no script and no inline style).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from service.fhir.testserver import RunningServer
from tests.browser.chrome import INSTALLED, NOT_INSTALLED, chrome
from tests.trend.launch import Stack, reset, smart_stack

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
SHOWN = {  # demo patient -> what its summary line says (the same as its cards)
    "04-diabetic-ckd-no-sglt2i": "KDIGO G3b/A3 (very high risk)",
    "07-aki-spike": "CKD not established",
    "12-progression-high-kfre": "(very high risk)",
}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.fhir,
    pytest.mark.skipif(not INSTALLED, reason=NOT_INSTALLED),
]  # fmt: skip


@pytest.fixture(scope="module")
def stack(fhir_server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with smart_stack(fhir_server, tmp_path_factory.mktemp("trend-browser"), (*SHOWN, "01-normal")) as s:
        yield s


@pytest.fixture
def browser(stack: Stack, tmp_path: Path) -> Iterator[webdriver.Chrome]:
    reset(stack.ehr.options)
    driver = chrome(tmp_path / "chrome", "1280,2200", console_log=True)
    yield driver
    driver.quit()


def csp_violations(driver: webdriver.Chrome) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]


def shown_message(driver: webdriver.Chrome) -> str:
    return str(driver.find_element(By.ID, "message").text)


@pytest.mark.parametrize("slug", list(SHOWN))
def test_ehr_launch_in_chromium(stack: Stack, browser: webdriver.Chrome, slug: str) -> None:
    browser.get(stack.ehr.launch_url(stack.launch_url, stack.patients[slug]))
    assert urllib.parse.urlsplit(browser.current_url).path == "/trend/view"
    assert "code=" not in browser.current_url
    assert browser.title == "Kidney trend"
    assert SHOWN[slug] in browser.find_element(By.ID, "summary").text
    hover = browser.find_element(By.CSS_SELECTOR, "svg.chart circle.dot title").get_attribute("textContent") or ""
    assert hover.startswith("eGFR ")
    assert " mL/min/1.73 m² on " in hover
    rows = browser.find_elements(By.CSS_SELECTOR, "#egfr-table tbody tr")
    assert len(rows) == len(browser.find_elements(By.CSS_SELECTOR, "svg.chart circle.dot"))
    assert browser.find_element(By.CSS_SELECTOR, "#heat-map td.here").text.endswith("(this patient)") or not SHOWN[
        slug
    ].startswith("KDIGO")
    assert browser.get_cookies()[0]["httpOnly"] is True
    assert csp_violations(browser) == []
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"trend-{slug}.png"))


def test_standalone_launch_in_chromium(stack: Stack, browser: webdriver.Chrome) -> None:
    browser.get(f"{stack.launch_url}?iss={urllib.parse.quote(stack.ehr.iss)}")
    browser.find_element(By.ID, f"pick-{stack.patients['01-normal']}").click()
    assert urllib.parse.urlsplit(browser.current_url).path == "/trend/view"
    assert "CKD not established (normal)" in browser.find_element(By.ID, "summary").text
    view_url = browser.current_url
    browser.find_element(By.ID, "end").click()
    assert browser.find_element(By.ID, "title").text == "The kidney trend view is closed"
    browser.get(view_url)
    assert browser.find_element(By.ID, "title").text == "The kidney trend view has ended"


def test_refusals_in_chromium(stack: Stack, browser: webdriver.Chrome) -> None:
    browser.get(f"{stack.launch_url}?iss={urllib.parse.quote('https://unknown.example/fhir')}&launch=abc")
    assert urllib.parse.urlsplit(browser.current_url).netloc == urllib.parse.urlsplit(stack.base).netloc
    assert "not registered" in shown_message(browser)

    browser.get(f"{stack.launch_url}?iss={urllib.parse.quote(stack.ehr.iss)}")  # a launch waiting at the picker
    browser.get(f"{stack.base}/trend/callback?code=forged&state=forged")
    assert "(state)" in shown_message(browser)

    browser.get(f"{stack.launch_url}?iss={urllib.parse.quote(stack.ehr.iss)}")
    browser.find_element(By.ID, "deny").click()
    assert "access_denied" in shown_message(browser)

    stack.ehr.options.drop_scope = "patient/Condition.rs"
    browser.get(stack.ehr.launch_url(stack.launch_url, stack.patients["04-diabetic-ckd-no-sglt2i"]))
    assert "patient/Condition.rs" in shown_message(browser)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "trend-refused-scope.png"))

    stack.ehr.options.drop_scope = None
    stack.ehr.options.expired = True
    browser.get(stack.ehr.launch_url(stack.launch_url, stack.patients["04-diabetic-ckd-no-sglt2i"]))
    assert "refused the EHR's token" in shown_message(browser)
    assert csp_violations(browser) == []
