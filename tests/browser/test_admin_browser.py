"""The admin console in a real browser (Debian chromium + chromedriver, headless, driven by Selenium).

An admin signs in, enters an invalid SGLT2 inhibitor eGFR limit and sees the inline error, enters a valid one and
sees the preview cards for a demo patient change, saves, and the next patient-view call reflects it; screenshots are
kept in test-artifacts/.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from flask import Flask
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.security import generate_password_hash
from werkzeug.serving import make_server

from service.demo import demo_bundles
from service.web.settings import AdminUser
from tests.browser.chrome import INSTALLED, NOT_INSTALLED, chrome
from tests.conftest import make_app
from tests.web.test_hooks import call, prefetch_for, resources

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not INSTALLED, reason=NOT_INSTALLED),
]  # fmt: skip


@pytest.fixture
def live_app(tmp_path: Path) -> Iterator[tuple[str, Flask]]:
    users = {"ann": AdminUser(role="editor", password_hash=generate_password_hash("correct horse")),
             "vic": AdminUser(role="viewer", password_hash=generate_password_hash("battery staple"))}  # fmt: skip
    app = make_app(tmp_path, None, admin_users=users)
    app.extensions["ckd_cds"].config.check_interval = 0
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", app
    server.shutdown()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    driver = chrome(tmp_path / "chrome", "1366,900")
    yield driver
    driver.quit()


def set_value(driver: webdriver.Chrome, element_id: str, value: str) -> None:
    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(value)


def test_admin_changes_sglt2i_limit_with_preview(live_app: tuple[str, Flask], browser: webdriver.Chrome) -> None:
    base, app = live_app
    wait = WebDriverWait(browser, 15)
    ARTIFACTS.mkdir(exist_ok=True)

    browser.get(f"{base}/admin")
    set_value(browser, "username", "ann")
    set_value(browser, "password", "correct horse")
    browser.find_element(By.ID, "sign-in").click()
    wait.until(ec.presence_of_element_located((By.ID, "config-form")))

    # An invalid value: the page says which field and why, and nothing is saved.
    set_value(browser, "f-sglt2i-min_egfr", "10")
    Select(browser.find_element(By.ID, "patient")).select_by_value("05-g4-on-metformin")
    browser.find_element(By.ID, "preview-button").click()
    summary = wait.until(ec.presence_of_element_located((By.ID, "error-summary")))
    assert "sglt2i.min_egfr" in summary.text
    assert "minimum" in browser.find_element(By.ID, "f-sglt2i-min_egfr-error").text
    browser.save_screenshot(str(ARTIFACTS / "admin-validation-error.png"))

    # A valid value: the diff and the preview show what changes for the demo patient (eGFR 22.5, T2D).
    set_value(browser, "f-sglt2i-min_egfr", "25")
    browser.find_element(By.ID, "preview-button").click()
    changed = wait.until(ec.presence_of_element_located((By.ID, "preview-changed")))
    assert changed.text == "The draft changes the cards."
    assert "SGLT2" in browser.find_element(By.ID, "cards-live").text
    assert "SGLT2" not in browser.find_element(By.ID, "cards-draft").text
    assert "+  min_egfr: 25" in browser.find_element(By.ID, "diff").text
    browser.save_screenshot(str(ARTIFACTS / "admin-preview.png"))

    set_value(browser, "f-comment", "SGLT2i only from eGFR 25 (local formulary)")
    browser.find_element(By.ID, "save-button").click()
    message = wait.until(ec.presence_of_element_located((By.ID, "message")))
    assert message.text == "Saved version 2."
    assert browser.find_element(By.ID, "live-version").text == "version 2"
    browser.save_screenshot(str(ARTIFACTS / "admin-saved.png"))

    # The next patient-view call from the EHR reflects the change, and the history records it.
    bundle = demo_bundles(date.today())["05-g4-on-metformin"]
    body = call(resources(bundle)[0]["id"], prefetch=prefetch_for(bundle))
    cards = app.test_client().post("/cds-services/ckd-patient-view", json=body).json["cards"]
    assert "sglt2i" not in {c["extension"]["org.ckd-cds.rule"]["id"] for c in cards}
    assert {c["extension"]["org.ckd-cds.rule"]["configVersion"] for c in cards} == {
        app.extensions["ckd_cds"].configs.latest().label
    }
    browser.get(f"{base}/admin/history")
    assert "SGLT2i only from eGFR 25" in browser.find_element(By.ID, "version-2").text


def feedback_history(app: Flask) -> None:
    """Chart openings and clinicians' answers, as an EHR would send them: accepted, overridden with reasons, and
    a second opening where an overridden card stays snoozed."""
    client = app.test_client()
    bundles = demo_bundles(date.today())

    def open_chart(slug: str) -> dict[str, dict[str, object]]:
        bundle = bundles[slug]
        body = call(resources(bundle)[0]["id"], prefetch=prefetch_for(bundle)) | {"hookInstance": slug + "-" + str(
            len(app.extensions["ckd_cds"].store.audit_records()))}  # fmt: skip
        cards = client.post("/cds-services/ckd-patient-view", json=body).json["cards"]
        return {c["extension"]["org.ckd-cds.rule"]["id"]: c for c in cards}

    answers = []
    now = datetime.now(UTC).isoformat()  # answers in the week the cards were shown (a fixed date drifts across weeks)
    for slug, reason in (("03-g3a-a2-not-coded", "patient-declined"), ("06-nsaid-egfr-below-60", "contraindicated"),
                         ("09-transplant", "already-addressed")):  # fmt: skip
        cards = open_chart(slug)
        answers.append(
            {
                "card": cards["statin"]["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": now,
                "overrideReason": {"reason": {"code": reason}},
            }
        )
        problem = cards["problem_list"]
        answers.append({"card": problem["uuid"], "outcome": "accepted", "outcomeTimestamp": now,
                        "acceptedSuggestions": [{"id": problem["suggestions"][0]["uuid"]}]})  # fmt: skip
    response = client.post("/cds-services/ckd-patient-view/feedback", json={"feedback": answers})
    assert response.status_code == 200
    assert "statin" not in open_chart("03-g3a-a2-not-coded")  # snoozed after the override


def test_feedback_dashboard(live_app: tuple[str, Flask], browser: webdriver.Chrome) -> None:
    base, app = live_app
    feedback_history(app)
    wait = WebDriverWait(browser, 15)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.get(f"{base}/admin/login")
    set_value(browser, "username", "vic")  # the viewer role is enough
    set_value(browser, "password", "battery staple")
    browser.find_element(By.ID, "sign-in").click()
    wait.until(ec.presence_of_element_located((By.ID, "config-form")))
    browser.find_element(By.LINK_TEXT, "Feedback").click()
    table = wait.until(ec.presence_of_element_located((By.ID, "feedback-table")))
    statin = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#rule-statin td")]
    assert statin[:5] == ["Statin", "3", "0", "3", "1"]  # shown 3 times, all overridden; then snoozed once
    assert statin[5] == "0 %"
    assert "already-addressed (1)" in statin[6]
    assert "patient-declined (1)" in statin[6]
    problem = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#rule-problem_list td")]
    assert problem[2] == "3"
    assert problem[5] == "100 %"
    loaded = browser.execute_script("const i = document.getElementById('chart'); return i.complete && i.naturalWidth")
    assert loaded
    assert loaded > 0
    assert "Statin" in table.text
    browser.save_screenshot(str(ARTIFACTS / "admin-feedback.png"))
    browser.find_element(By.LINK_TEXT, "Statin").click()
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "h2"), "Statin"))
    weekly = browser.find_element(By.ID, "weekly-table").text
    assert weekly.count("\n") >= 1
    browser.save_screenshot(str(ARTIFACTS / "admin-feedback-statin.png"))
    csv = app.test_client()
    csv_login = csv.post("/admin/login", data={"username": "vic", "password": "battery staple"})
    assert csv_login.status_code == 302
    lines = csv.get("/admin/feedback.csv").get_data(as_text=True).splitlines()
    assert lines[0] == "rule,week,shown,accepted,overridden,snoozed"
    assert any(line.startswith("statin,") and line.endswith(",3,0,3,1") for line in lines)
