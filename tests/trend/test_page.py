"""The trend page (issue #23): one HTML page, no script, every value in a table beside its chart, the patient's
heat-map cell marked, and FHIR text escaped."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
from flask.testing import FlaskClient

from service.trend.page import render
from tests.trend.test_model import cards, view


def test_page_has_no_script_and_a_table_for_every_chart() -> None:
    html = render(view("12-progression-high-kfre"))
    assert "<script" not in html.lower()
    assert " style=" not in html  # no inline style (the page's CSP has no 'unsafe-inline')
    assert "http://" not in html.replace("http://www.w3.org", "")  # no third-party host
    rows = re.findall(r"<tr(?: class=\"flagged\")?><td>(\d{4}-\d\d-\d\d)</td><td>(\d+)</td>", html)
    v = view("12-progression-high-kfre")
    # floored as on the cards, so a shown value never crosses a category cut-off (34.9 is G3b: "34", not "35")
    assert [(d, v_) for d, v_ in rows] == [(m.date.isoformat(), str(math.floor(m.value))) for m in v.egfr]
    assert html.count('class="dot ') == len(v.egfr)  # one mark per value, each with its <title>
    assert html.count('class="urine ') == sum(u.category is not None for u in v.urine) > 0
    assert "very high (this patient)" in html
    assert "rapid progression" in html


def test_aki_values_are_marked_in_the_chart_and_the_table() -> None:
    html = render(view("07-aki-spike"))
    assert html.count('class="dot aki"') == 2
    assert html.count('<tr class="flagged">') == 2
    assert "possible AKI: creatinine rose by 0.3 mg/dL or more within 2 days" in html


def test_text_is_escaped() -> None:
    """The page shows values and the engine's own words today; autoescape guards whatever text comes next."""
    hostile = dataclasses.replace(view("03-g3a-a2-not-coded"), reason="<img src=x onerror=alert(1)>", ckd=False)
    html = render(hostile)
    assert "<img" not in html
    assert "&lt;img" in html


def test_blood_pressure_is_charted_against_the_cards_target(cards_client: FlaskClient) -> None:
    slug = "24-bp-above-target"
    v = view(slug)
    html = render(v)
    assert html.count('class="bp"') == len(v.systolic) == 3
    assert "target &lt; 120" in html  # KDIGO 2021 Rec 3.1.1, the configured default (spec 2.1 bp.systolic_target)
    (card,) = [c for c in cards(cards_client, slug) if c["extension"]["org.ckd-cds.rule"]["id"] == "bp_above_target"]
    for reading in re.findall(r"(\d+)/\d+ mm Hg on (\d{4}-\d\d-\d\d)", card["detail"]):
        assert f"<td>{reading[1]}</td><td>{reading[0]}</td>" in html  # the card's readings, the card's rounding


def test_renewals_of_one_medicine_share_a_row() -> None:
    from datetime import timedelta

    from service.fhir.timeline import DrugSpan
    from service.trend.chart import drug_chart

    base = view("04-diabetic-ckd-no-sglt2i")
    today = base.as_of
    renewals = [DrugSpan(name="simvastatin", classes=("statin",), status="stopped", start=today - timedelta(days=730),
                         end=None),
                DrugSpan(name="simvastatin", classes=("statin",), status="active", start=today - timedelta(days=365),
                         end=None),
                DrugSpan(name="naproxen", classes=("NSAID",), status="completed", start=today - timedelta(days=400),
                         end=today - timedelta(days=390))]  # fmt: skip
    chart = drug_chart(dataclasses.replace(base, drugs=tuple(sorted(renewals, key=lambda d: d.start or today))))
    rows = sorted({b.y for b in chart.bars})
    assert len(rows) == 2  # simvastatin, naproxen
    stopped, active = (b for b in chart.bars if b.title.startswith("simvastatin"))
    assert stopped.open_end  # no end recorded: drawn lighter...
    assert stopped.x2 == pytest.approx(active.x1)  # ...up to the renewal
    assert [b.label for b in chart.bars if b.y == stopped.y] == ["simvastatin", ""]
