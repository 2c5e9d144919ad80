"""The trend view as one HTML page (issue #23): the charts drawn on the server as SVG, a table beside each, no script
(the page's CSP allows none), every FHIR-derived text escaped by Jinja's autoescape."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jinja2

from cards.builder import DISPLAY_NAMES
from service.clinical.categories import HEAT_MAP, AStage, GStage
from service.trend.chart import egfr_chart
from service.trend.model import TrendView


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        auto_reload=False,
    )
    env.filters["short"] = lambda x: f"{x:g}"  # 1200.0 -> 1200, 2.5 -> 2.5
    return env


def heat_map_rows() -> list[tuple[str, list[tuple[str, str]]]]:
    return [(g.value, [(a.value, HEAT_MAP[g][i].value) for i, a in enumerate(AStage)]) for g in GStage]


def render(v: TrendView, stylesheet: str = "trend.css") -> str:
    return (
        environment()
        .get_template("trend.html")
        .render(v=v, c=egfr_chart(v), heat_map=heat_map_rows(), names=DISPLAY_NAMES, stylesheet=stylesheet)
    )
