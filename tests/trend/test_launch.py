"""The kidney trend view's SMART launch end to end over HTTP (issue #23): ckd-cds, the test EHR's authorization
server (authlib) and the real FHIR test server, with a requests session as the browser (cookies, redirects).

The launch and its refusals: unknown iss, bad or replayed state, a callback from another browser, access denied, a
scope not granted, a token for another patient, a FHIR server answering with another patient's data, an expired
token. The token never reaches the browser, the store or the logs. The picture says what the cards say."""

from __future__ import annotations

import html
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from service.demo import demo_bundles
from service.fhir.testehr import RESOURCE_SCOPE, Token
from service.fhir.testserver import RunningServer
from tests.trend.launch import Stack, reset, smart_stack
from tests.web.test_hooks import call

pytestmark = pytest.mark.fhir
SLUGS = ("04-diabetic-ckd-no-sglt2i", "07-aki-spike", "01-normal")
CKD, AKI, NORMAL = SLUGS


@pytest.fixture(scope="module")
def stack(fhir_server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with smart_stack(fhir_server, tmp_path_factory.mktemp("trend"), SLUGS) as s:
        yield s


@pytest.fixture(autouse=True)
def fresh_options(stack: Stack) -> None:
    reset(stack.ehr.options)


def open_view(stack: Stack, slug: str, app_context: str | None = None) -> tuple[requests.Session, requests.Response]:
    browser = requests.Session()
    response = browser.get(stack.ehr.launch_url(stack.launch_url, stack.patients[slug], app_context), timeout=30)
    return browser, response


def message(response: requests.Response) -> str:
    found = re.search(r'<p id="message">(.*?)</p>', response.text, re.S)
    return html.unescape(found.group(1)) if found else ""


def hook_cards(stack: Stack, slug: str, other: RunningServer | None = None) -> list[dict[str, Any]]:
    """The patient-view cards for the same patient, read from the same FHIR server through the test EHR (or from
    `other`, a FHIR server with no SMART registration)."""
    token = f"hook-{slug}"  # what the EHR would hand a CDS service for this patient
    stack.ehr.tokens[token] = Token(patient=stack.patients[slug], scope=" ".join(RESOURCE_SCOPE.values()),
                                    expires_at=time.time() + 300)  # fmt: skip
    if other is not None:
        token = other.token
    body = call(stack.patients[slug], fhirServer=other.base_url if other else stack.ehr.iss,
                fhirAuthorization={"access_token": token, "token_type": "Bearer", "scope": "patient/*.read",
                                   "expires_in": 300, "subject": "ckd-cds"})  # fmt: skip
    response = requests.post(f"{stack.base}/cds-services/ckd-patient-view", json=body, timeout=30)
    assert response.status_code == 200, response.text
    cards: list[dict[str, Any]] = response.json()["cards"]
    return cards


def test_ehr_launch_opens_the_view_with_the_cards_values(stack: Stack, fhir_server: RunningServer) -> None:
    _browser, response = open_view(stack, CKD)
    assert response.status_code == 200
    assert urllib.parse.urlsplit(response.url).path == "/trend/view"  # no code, state or token in the URL shown
    assert [r.status_code for r in response.history] == [302, 302, 303]
    assert "script-src" not in response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    page = response.text
    cards = hook_cards(stack, CKD, other=fhir_server)  # the full evidence block: no SMART registration there
    text = "\n".join(c["detail"] for c in cards)
    pairs = set(re.findall(r"eGFR (\d+) mL/min/1\.73 m² on (\d{4}-\d\d-\d\d)", text))
    assert pairs  # the cards rest on eGFR values
    for value, day in pairs:
        assert f"<td>{day}</td><td>{value}</td>" in page
    slope = re.search(r"Trend: (-?\d+\.\d) mL/min", text)
    assert slope is not None
    assert f"Trend {slope.group(1)} mL/min/1.73 m² per year" in page
    kfre = re.search(r"kidney failure risk (\d+\.\d)% at 2 years, (\d+\.\d)% at 5 years", text)
    assert kfre is not None
    two, five = kfre.groups()
    assert f"KFRE: {two}% within 2 years and {five}% within 5 years" in page
    assert re.search(r"KDIGO category (G\w+/A\d)", text).group(1) in page  # type: ignore[union-attr]
    assert 'class="here"' in page or " here" in page  # the patient's heat-map cell


def test_aki_values_are_marked_in_the_launched_view(stack: Stack) -> None:
    _, response = open_view(stack, AKI)
    assert response.status_code == 200
    assert response.text.count('class="flagged"') >= 1
    assert "possible AKI: creatinine rose" in response.text


def test_cards_carry_a_smart_link_that_opens_the_view_on_that_card(stack: Stack) -> None:
    cards = hook_cards(stack, CKD)
    for card in cards:
        smart = [link for link in card["links"] if link["type"] == "smart"]
        assert len(smart) == 1
        assert smart[0]["label"] == "Kidney trend"
        assert smart[0]["url"].endswith("/trend/launch")
        assert json.loads(smart[0]["appContext"])["card"]
        assert stack.patients[CKD] not in smart[0]["appContext"]  # a tag, not the id
    assert "open **Kidney trend** below" in cards[0]["detail"]  # the evidence block leaves the rest to the view
    link = next(link for link in cards[0]["links"] if link["type"] == "smart")
    browser = requests.Session()
    response = browser.get(stack.ehr.launch_url(link["url"], stack.patients[CKD], link["appContext"]), timeout=30)
    assert response.status_code == 200
    assert re.search(r'<li class="\w+ focus">', response.text)


def test_no_smart_link_for_an_ehr_without_a_registration(stack: Stack, fhir_server: RunningServer) -> None:
    cards = hook_cards(stack, CKD, other=fhir_server)
    assert cards
    assert all(link["type"] == "absolute" for c in cards for link in c["links"])


def test_standalone_launch_picks_the_patient_at_the_ehr(stack: Stack) -> None:
    browser = requests.Session()
    picker = browser.get(f"{stack.launch_url}?iss={urllib.parse.quote(stack.ehr.iss)}", timeout=30)
    assert picker.status_code == 200
    assert "Choose a patient" in picker.text
    assert "launch%2Fpatient" in picker.url or "launch/patient" in urllib.parse.unquote(picker.url)
    pick = re.search(rf'href="([^"]+)" id="pick-{stack.patients[NORMAL]}"', picker.text)
    assert pick is not None
    response = browser.get(urllib.parse.urljoin(picker.url, pick.group(1).replace("&amp;", "&")), timeout=30)
    assert response.status_code == 200
    assert urllib.parse.urlsplit(response.url).path == "/trend/view"
    summary = re.search(r'<p class="summary" id="summary">(.*?)</p>', response.text, re.S)
    assert summary is not None
    assert "CKD not established (normal)" in summary.group(1)


@pytest.mark.parametrize("iss", ["https://evil.example/fhir", "http://127.0.0.1:1/fhir", "", "javascript:alert(1)"])
def test_unknown_iss_is_refused_before_any_redirect(stack: Stack, iss: str) -> None:
    response = requests.get(stack.launch_url, params={"iss": iss, "launch": "x"}, allow_redirects=False, timeout=10)
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "Set-Cookie" not in response.headers
    assert "not registered" in message(response)


def test_iss_of_a_registered_server_under_another_path_is_refused(stack: Stack) -> None:
    response = requests.get(stack.launch_url, params={"iss": stack.ehr.iss + "/../fhir2"}, allow_redirects=False,
                            timeout=10)  # fmt: skip
    assert response.status_code == 400
    assert "Location" not in response.headers


def _until_callback(stack: Stack, browser: requests.Session) -> str:
    """Launch and authorize, stopping before the callback: its URL (code and state)."""
    url = stack.ehr.launch_url(stack.launch_url, stack.patients[CKD])
    to_authorize = browser.get(url, allow_redirects=False, timeout=10)
    assert to_authorize.status_code == 302
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(to_authorize.headers["Location"]).query))
    assert query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) == 43
    assert query["aud"] == stack.ehr.iss
    assert query["state"]
    assert "patient/Observation.rs" in query["scope"].split()
    assert "launch" in query["scope"].split()
    to_callback = browser.get(to_authorize.headers["Location"], allow_redirects=False, timeout=10)
    assert to_callback.status_code == 302
    return str(to_callback.headers["Location"])


def test_bad_state_is_refused_and_the_launch_cannot_be_replayed(stack: Stack) -> None:
    browser = requests.Session()
    callback = _until_callback(stack, browser)
    tampered = re.sub(r"state=[^&]+", "state=forged", callback)
    response = browser.get(tampered, timeout=10)
    assert response.status_code == 400
    assert "(state)" in message(response)
    assert browser.get(callback, timeout=10).status_code == 200  # a forged answer does not spend the real launch
    replay = browser.get(callback, timeout=10)  # the real answer did
    assert replay.status_code == 400
    assert "already used" in message(replay)


def test_callback_in_another_browser_is_refused(stack: Stack) -> None:
    callback = _until_callback(stack, requests.Session())
    response = requests.get(callback, timeout=10)  # no launch cookie
    assert response.status_code == 400
    assert "this browser" in message(response)


def test_access_denied_at_the_ehr(stack: Stack) -> None:
    browser = requests.Session()
    picker = browser.get(f"{stack.launch_url}?iss={urllib.parse.quote(stack.ehr.iss)}", timeout=30)
    deny = re.search(r'href="([^"]+)" id="deny"', picker.text)
    assert deny is not None
    response = browser.get(urllib.parse.urljoin(picker.url, deny.group(1).replace("&amp;", "&")), timeout=30)
    assert response.status_code == 403
    assert "access_denied" in message(response)


def refusals(stack: Stack, reason: str) -> float:
    """ckd_cds_trend_launches_total for the callback's `reason`, as /metrics reports it."""
    text = requests.get(f"{stack.base}/metrics", timeout=10).text
    found = re.search(rf'ckd_cds_trend_launches_total{{outcome="{reason}",step="smart-callback"}} ([0-9.]+)', text)
    return float(found.group(1)) if found else 0.0


def test_a_scope_not_granted_is_refused_by_name(stack: Stack) -> None:
    stack.ehr.options.drop_scope = "patient/Observation.rs"
    before = refusals(stack, "scope")
    _, response = open_view(stack, CKD)
    assert refusals(stack, "scope") == before + 1  # operators see refusals by reason
    assert response.status_code == 403
    assert "patient/Observation.rs" in message(response)
    assert "<table" not in response.text


def test_token_for_another_patient_than_the_cards_is_refused(stack: Stack) -> None:
    card = hook_cards(stack, CKD)[0]
    link = next(link for link in card["links"] if link["type"] == "smart")
    stack.ehr.options.token_patient = stack.patients[NORMAL]  # the EHR switched patients between card and launch
    _, response = open_view(stack, CKD, link["appContext"])
    assert response.status_code == 403
    assert "different patient" in message(response)


def test_fhir_server_answering_with_another_patients_data_is_refused(stack: Stack) -> None:
    stack.ehr.options.serve_patient = stack.patients[NORMAL]
    _, response = open_view(stack, CKD)
    assert response.status_code == 403
    assert "another patient" in message(response)
    assert "<table" not in response.text


def test_expired_token_is_refused(stack: Stack) -> None:
    stack.ehr.options.expired = True  # the FHIR API answers 401
    _, response = open_view(stack, CKD)
    assert response.status_code == 401
    assert "refused the EHR's token" in message(response)
    stack.ehr.options.expired = False
    stack.ehr.options.token_lifetime = -30  # the token response says it has already expired
    _, response = open_view(stack, CKD)
    assert response.status_code == 401
    assert "already expired" in message(response)


def test_the_token_stays_on_the_server(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    stack.ehr.tokens.clear()
    browser, response = open_view(stack, CKD)
    assert response.status_code == 200
    (token,) = (t for t in stack.ehr.tokens if not t.startswith("hook-"))
    seen = [response, *response.history]
    for r in seen:
        assert token not in r.text
        assert token not in r.url
        assert token not in json.dumps(dict(r.headers))
    assert all(token not in c.value for c in browser.cookies)
    cookie = next(r.headers["Set-Cookie"] for r in response.history if "Set-Cookie" in r.headers)
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Path=/trend" in cookie
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith("authlib")]  # authlib: the test EHR's
    assert ours
    assert not any(token in line for line in ours)
    audit = stack.app.extensions["ckd_cds"].store.audit_records(200)
    steps = [(r["hook"], r["status"], r.get("outcome")) for r in audit if r.get("service_id") == "kidney-trend"]
    assert ("smart-launch", 302, "redirected") in steps
    assert ("smart-callback", 303, "shown") in steps
    assert token not in json.dumps(audit)
    assert stack.patients[CKD] not in json.dumps(audit)  # no patient id in clear
    database = Path(stack.app.extensions["ckd_cds"].store.url.removeprefix("sqlite:///"))
    for path in database.parent.glob(database.name + "*"):  # the file and its WAL
        assert token.encode() not in path.read_bytes()


def test_the_view_ends_when_the_token_would_have(stack: Stack) -> None:
    browser, response = open_view(stack, CKD)
    assert response.status_code == 200
    assert browser.get(response.url, timeout=10).status_code == 200  # a reload while it lasts
    assert requests.get(response.url, timeout=10).status_code == 401  # its URL without this browser's cookie
    store = stack.app.extensions["ckd_cds"].store
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE trend_views SET expires_at = '2000-01-01 00:00:00'"))
    ended = browser.get(response.url, timeout=10)
    assert ended.status_code == 401
    assert "<table" not in ended.text


def test_closing_the_view_forgets_it(stack: Stack) -> None:
    browser, response = open_view(stack, CKD)
    view_id = re.search(r'name="v" value="([^"]+)"', response.text)
    assert view_id is not None
    closed = browser.post(f"{stack.base}/trend/end", data={"v": view_id.group(1)}, timeout=10)
    assert closed.status_code == 200
    assert browser.get(response.url, timeout=10).status_code == 401


def test_the_view_is_no_longer_than_the_token(stack: Stack) -> None:
    stack.ehr.options.token_lifetime = 120
    open_view(stack, CKD)
    store = stack.app.extensions["ckd_cds"].store
    with store.engine.connect() as conn:
        latest = conn.execute(sa.text("SELECT max(expires_at) FROM trend_views")).scalar_one()
    left = (datetime.fromisoformat(str(latest)).replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds()
    assert 100 <= left <= 120


def test_two_tabs_keep_their_own_patients(stack: Stack) -> None:
    """One browser, two launches: each tab's URL keeps showing its own patient (a reload never shows the other)."""
    browser = requests.Session()
    first = browser.get(stack.ehr.launch_url(stack.launch_url, stack.patients[CKD]), timeout=30)
    second = browser.get(stack.ehr.launch_url(stack.launch_url, stack.patients[NORMAL]), timeout=30)
    assert first.url != second.url
    again = browser.get(first.url, timeout=10)
    assert again.status_code == 200
    assert re.search(r'<span id="patient">([^<]+)</span>', again.text).group(1) == re.search(  # type: ignore[union-attr]
        r'<span id="patient">([^<]+)</span>', first.text).group(1)  # type: ignore[union-attr]  # fmt: skip
    assert "G3b/A3" in again.text
    assert "CKD not established" in browser.get(second.url, timeout=10).text


def test_the_page_names_its_patient_as_the_ehr_does(stack: Stack) -> None:
    _browser, response = open_view(stack, CKD)
    label = re.search(r'<span id="patient">([^<]+)</span>', response.text)
    assert label is not None
    patient = next(e["resource"] for e in demo_bundles()[CKD]["entry"] if e["resource"]["resourceType"] == "Patient")
    name = patient["name"][0]
    assert html.unescape(label.group(1)).startswith(" ".join([*name["given"], name["family"]]))
    assert f"born {patient['birthDate']}" in label.group(1)
