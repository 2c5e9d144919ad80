"""The trend view as one HTML page (issue #23): the charts drawn on the server as SVG, a table beside each, no script
(the page's CSP allows none), every FHIR-derived text escaped by Jinja's autoescape."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import jinja2

from cards.builder import DISPLAY_NAMES
from cards.views import percent, ratio_text
from service.clinical.categories import HEAT_MAP, AStage, GStage
from service.trend.chart import bp_chart, drug_chart, egfr_chart, urine_chart
from service.trend.model import TrendView, shown_egfr


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        auto_reload=False,
    )
    env.filters["ratio"] = ratio_text  # ACR and PCR as the cards show them (one decimal at most)
    env.filters["creatinine"] = lambda x: f"{x:.2f}"  # mg/dL, as the cards
    env.filters["floor"] = math.floor  # systolic as the blood-pressure card shows it
    env.filters["egfr"] = shown_egfr  # the cards' own rounding (floored)
    env.filters["percent"] = percent  # the cards' own: one decimal
    env.filters["per100"] = lambda x: "fewer than 1" if x * 100 < 0.5 else f"about {x * 100:.0f}"
    return env


def heat_map_rows() -> list[tuple[str, list[tuple[str, str]]]]:
    return [(g.value, [(a.value, HEAT_MAP[g][i].value) for i, a in enumerate(AStage)]) for g in GStage]


def render(v: TrendView, stylesheet: str = "trend.css", end_url: str | None = None, view_id: str = "",
           patient: str = "") -> str:  # fmt: skip
    return (
        environment()
        .get_template("trend.html")
        .render(
            v=v,
            c=egfr_chart(v),
            dc=drug_chart(v),
            uc=urine_chart(v),
            bc=bp_chart(v),
            heat_map=heat_map_rows(),
            names=DISPLAY_NAMES,
            stylesheet=stylesheet,
            end_url=end_url,
            view_id=view_id,
            patient=patient,
        )
    )


def render_message(title: str, message: str, stylesheet: str = "trend.css") -> str:
    """A refusal or an end, as a page in the view's style (no script; the message is escaped)."""
    return environment().get_template("message.html").render(title=title, message=message, stylesheet=stylesheet)
