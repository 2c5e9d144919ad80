"""The trend view's data agree with the cards of the same chart (issue #23: "the picture for the demo patients matches
what the cards say: same values, same flags"). Both come from one assessment; these tests read the cards as a
clinician sees them and find the same numbers and flags in the view's data."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from flask.testing import FlaskClient

from service.clinical.assess import assess
from service.demo import demo_bundles
from service.fhir.adapter import record_from_bundle
from service.trend.model import TrendView, shown_egfr, trend_view
from tests.web.test_demo_cards import EXPECTED
from tests.web.test_hooks import call, prefetch_for, resources


def view(slug: str) -> TrendView:
    bundle = demo_bundles(date.today())[slug]
    record = record_from_bundle(bundle)
    return trend_view(assess(record, date.today()), record)


def cards(client: FlaskClient, slug: str) -> list[dict[str, Any]]:
    bundle = demo_bundles(date.today())[slug]
    body = call(resources(bundle)[0]["id"], prefetch=prefetch_for(bundle))
    found: list[dict[str, Any]] = client.post("/cds-services/ckd-patient-view", json=body).json["cards"]
    return found


@pytest.mark.parametrize("slug", sorted(EXPECTED))
def test_the_view_lists_the_recommendations_the_cards_show(slug: str) -> None:
    keys = [key if key != "tests_due" else "monitoring_due" for key, _, _ in view(slug).recommendations]
    assert keys == EXPECTED[slug]


def test_each_recommendation_reads_as_its_card(cards_client: FlaskClient) -> None:
    slug = "04-diabetic-ckd-no-sglt2i"
    shown = {summary for _, _, summary in view(slug).recommendations}
    summaries = [
        c["summary"] for c in cards(cards_client, slug) if c["extension"]["org.ckd-cds.rule"]["id"] != "overflow"
    ]
    assert summaries
    assert set(summaries) <= shown


def test_aki_values_are_marked_and_explained_as_the_aki_card_says(cards_client: FlaskClient) -> None:
    v = view("07-aki-spike")
    flagged = [m for m in v.egfr if m.flag == "aki"]
    assert [m.creatinine for m in flagged] == [2.1, 1.6]
    assert flagged[0].why.startswith("creatinine rose by 0.3 mg/dL or more within 2 days (from 1 mg/dL on ")
    assert flagged[1].why.startswith("creatinine rose to 1.5 times or more within 7 days (from 1 mg/dL on ")
    (card,) = cards(cards_client, "07-aki-spike")
    assert card["extension"]["org.ckd-cds.rule"]["id"] == "aki_caution"
    latest = flagged[-1]  # the card names the latest flagged value, its criterion and reference, and counts both
    assert f"Creatinine {latest.creatinine:.2f} mg/dL on {latest.date.isoformat()}: ≥ 1.5 × a value within 7 days" in \
        card["detail"]  # fmt: skip
    assert f"{len(flagged)} creatinine results excluded as possible acute kidney injury" in card["detail"]
    staging = [m for m in v.egfr if m.flag is None]
    assert len(staging) == 2
    assert all(m.value > 90 for m in staging)


def test_stage_trend_and_kfre_are_the_cards_numbers(cards_client: FlaskClient) -> None:
    v = view("04-diabetic-ckd-no-sglt2i")
    details = "\n".join(c["detail"] for c in cards(cards_client, "04-diabetic-ckd-no-sglt2i"))
    assert (v.g_stage, v.a_stage, v.risk) == ("G3b", "A3", "very high")
    latest = [m for m in v.egfr if m.flag is None][-1]
    assert f"eGFR {round(latest.value)} mL/min/1.73 m² on {latest.date.isoformat()}" in details
    assert v.kfre_5y is not None
    assert v.mortality_5y is not None
    assert f"kidney failure {v.kfre_5y * 100:.1f}% vs death {v.mortality_5y * 100:.1f}%" in details
    assert v.trend is not None
    assert f"Trend: {v.trend.slope_per_year:.1f} mL/min/1.73 m² per year" in details
    assert v.trend.rapid is True  # S18: below −5 per year with the interval below 0
    assert [(m.kind, m.category) for m in v.urine][-1] == ("acr", "A3")


def test_conflicting_specimen_is_marked() -> None:
    v = view("20-same-timestamp-conflict")
    (conflict,) = v.conflicts
    assert sorted(conflict.results) == [1.06, 3.42]
    from service.trend.page import render

    html = render(v)
    assert html.count('class="conflict-mark"') == 1  # on the chart, explained on hover and in the text below it
    assert f"on {conflict.date.isoformat()}: " in html


def test_window_is_ten_years_and_bands_are_kdigo() -> None:
    from service.trend.model import G_BANDS, G_LINES, WINDOW_DAYS

    assert WINDOW_DAYS >= 3650
    assert [b[2] for b in G_BANDS] == ["G1", "G2", "G3a", "G3b", "G4", "G5"]
    assert G_LINES == (60.0, 30.0, 15.0)
    v = view("12-progression-high-kfre")
    assert all((v.as_of - m.date).days <= WINDOW_DAYS for m in v.egfr)


def test_a_stage_resting_on_results_older_than_ten_years_is_said_not_hidden() -> None:
    from service.fhir import build
    from service.fhir.adapter import record_from_resources
    from service.trend.page import render

    today = date(2026, 12, 6)
    old = [date(2012, 1, 10), date(2012, 6, 10)]  # creatinine 1.6 mg/dL twice, 152 days apart: chronic, then nothing
    resources = [build.observation(f"c{i}", "p", "2160-0", d, 1.6, "mg/dL") for i, d in enumerate(old)]
    record = record_from_resources(build.patient("p", gender="female", birth_date="1950-01-01"), resources)
    v = trend_view(assess(record, today), record)
    assert v.egfr == []
    assert v.older_basis is not None
    assert v.older_basis.date == old[-1]
    assert f"the category rests on eGFR {shown_egfr(v.older_basis)} on {old[-1].isoformat()}" in render(v)


def test_a_deceased_patient_is_said_and_gets_no_recommendations() -> None:
    from service.fhir import build
    from service.fhir.adapter import record_from_resources
    from service.trend.page import render

    today = date(2026, 12, 6)
    patient = {**build.patient("p", gender="male", birth_date="1940-01-01"), "deceasedDateTime": "2025-03-01"}
    resources = [build.observation(f"c{i}", "p", "2160-0", d, 2.0, "mg/dL")
                 for i, d in enumerate([date(2024, 1, 10), date(2024, 9, 10)])]  # fmt: skip
    record = record_from_resources(patient, resources)
    v = trend_view(assess(record, today), record)
    assert v.deceased
    assert v.recommendations == []  # as the cards: none (spec S19)
    assert "The record says this patient has died" in render(v)
