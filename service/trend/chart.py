"""Server-drawn charts of the trend view (issue #23): SVG geometry from the view's data, no script.

Each point carries its own text (value, unit, date, source) for the SVG `<title>` the browser shows on hover; the
page puts a table beside every chart for screen readers and printing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from service.trend.model import G_BANDS, G_LINES, TrendView

WIDTH, HEIGHT = 720.0, 300.0
LEFT, RIGHT, TOP, BOTTOM = 48.0, 12.0, 12.0, 28.0
BAND_FILL = {"G1": "#e8f3e8", "G2": "#f1f6e4", "G3a": "#fbf3d9", "G3b": "#fae6cf", "G4": "#f7d6cf", "G5": "#f0c4c4"}


@dataclass(frozen=True, slots=True)
class Band:
    y: float
    height: float
    fill: str
    label: str


@dataclass(frozen=True, slots=True)
class Line:
    y: float
    label: str


@dataclass(frozen=True, slots=True)
class Dot:
    x: float
    y: float
    kind: str  # "value", "reported", "aki"
    title: str


@dataclass(frozen=True, slots=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True, slots=True)
class EgfrChart:
    width: float
    height: float
    bands: list[Band]
    lines: list[Line]
    dots: list[Dot]
    trend: tuple[float, float, float, float] | None  # x1, y1, x2, y2
    ticks: list[Tick]


def number(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def egfr_chart(v: TrendView) -> EgfrChart:
    """The eGFR over time against the G bands, with the 60/30/15 lines, AKI-flagged values marked and the trend."""
    start = min((m.date for m in v.egfr), default=v.as_of) - timedelta(days=30)  # a margin before the first value
    end = v.as_of
    span = max((end - start).days, 30)
    top_value = max([120.0, *(m.value + 10 for m in v.egfr)])

    def x(d: date) -> float:
        return LEFT + (d - start).days / span * (WIDTH - LEFT - RIGHT)

    def y(value: float) -> float:
        return TOP + (1 - min(value, top_value) / top_value) * (HEIGHT - TOP - BOTTOM)

    bands = []
    for low, high, label in G_BANDS:
        upper = top_value if high is None else high
        bands.append(Band(y=y(upper), height=y(low) - y(upper), fill=BAND_FILL[label], label=label))
    lines = [Line(y=y(value), label=f"{value:.0f}") for value in G_LINES]
    dots = []
    for m in v.egfr:
        kind = "aki" if m.flag == "aki" else ("reported" if m.source == "reported" else "value")
        source = (
            "laboratory-reported eGFR" if m.source == "reported" else f"{m.equation}, creatinine {m.creatinine} mg/dL"
        )
        note = f"; possible AKI: {m.why}" if m.flag == "aki" else ""
        title = f"eGFR {number(m.value)} mL/min/1.73 m² on {m.date.isoformat()} ({source}){note}"
        dots.append(Dot(x=x(m.date), y=y(m.value), kind=kind, title=title))
    trend = None
    if v.trend is not None:
        t = v.trend
        trend = (x(t.first), y(t.intercept), x(t.last), y(t.intercept + t.slope_per_year * t.x_last))
    ticks = [Tick(x=x(date(year, 1, 1)), label=str(year)) for year in range(start.year + 1, end.year + 1)]
    return EgfrChart(width=WIDTH, height=HEIGHT, bands=bands, lines=lines, dots=dots, trend=trend, ticks=ticks)
