"""Server-drawn charts of the trend view (issue #23): SVG geometry from the view's data, no script.

Each point carries its own text (value, unit, date, source) for the SVG `<title>` the browser shows on hover; the
page puts a table beside every chart for screen readers and printing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta

from cards.views import ratio_text
from service.clinical.categories import RATIO_CUTOFFS
from service.clinical.record import UrineKind, UrineUnit
from service.fhir.timeline import DrugSpan
from service.trend.model import G_BANDS, G_LINES, WINDOW_DAYS, TrendView, shown_egfr

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
    conflicts: list[Tick]  # a dashed line on each date whose specimen gave conflicting results (S4), its text


@dataclass(frozen=True, slots=True)
class Axis:
    """The time axis every chart shares: first and last day, days between, and where a date falls."""

    start: date
    end: date
    span: int

    def x(self, d: date) -> float:
        return LEFT + max(0, (d - self.start).days) / self.span * (WIDTH - LEFT - RIGHT)

    def ticks(self) -> list[Tick]:
        """1 January of each year, every second or more when there are many, so the labels never overlap."""
        years = list(range(self.start.year + 1, self.end.year + 1))
        step = max(1, math.ceil(len(years) / 8))
        return [Tick(x=self.x(date(year, 1, 1)), label=str(year)) for year in years[::-1][::step][::-1]]


def time_axis(v: TrendView) -> Axis:
    """From a month before the first result (eGFR, urine, blood pressure) to today, at most the ten-year window; a
    year when there is no result. A drug started earlier is drawn from the first day (its table gives the start): a
    metformin start in 1998 must not squeeze ten years of eGFR into a corner."""
    firsts = [m.date for m in v.egfr] + [u.date for u in v.urine] + [d for d, _ in v.systolic]
    start = min(firsts) - timedelta(days=30) if firsts else v.as_of - timedelta(days=365)
    start = max(start, v.as_of - timedelta(days=WINDOW_DAYS))
    return Axis(start=start, end=v.as_of, span=max((v.as_of - start).days, 30))


def egfr_chart(v: TrendView) -> EgfrChart:
    """The eGFR over time against the G bands, with the 60/30/15 lines, AKI-flagged values marked and the trend."""
    axis = time_axis(v)
    x = axis.x
    top_value = max([120.0, *(m.value + 10 for m in v.egfr)])

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
            "laboratory-reported eGFR"
            if m.source == "reported"
            else f"{m.equation}, creatinine {m.creatinine:.2f} mg/dL"
        )
        note = f"; possible AKI: {m.why}" if m.flag == "aki" else ""
        title = f"eGFR {shown_egfr(m)} mL/min/1.73 m² on {m.date.isoformat()} ({source}){note}"
        dots.append(Dot(x=x(m.date), y=y(m.value), kind=kind, title=title))
    trend = None
    if v.trend is not None:
        t = v.trend
        trend = (x(t.first), y(t.intercept), x(t.last), y(t.intercept + t.slope_per_year * t.x_last))
    ticks = axis.ticks()
    conflicts = [Tick(x=x(c.date), label=f"Conflicting creatinine results of one specimen on {c.date.isoformat()}: "
                      f"{', '.join(f'{r:.2f}' for r in c.results)} mg/dL (not used)") for c in v.conflicts]  # fmt: skip
    return EgfrChart(width=WIDTH, height=HEIGHT, bands=bands, lines=lines, dots=dots, trend=trend, ticks=ticks,
                     conflicts=conflicts)  # fmt: skip


@dataclass(frozen=True, slots=True)
class DrugBar:
    y: float
    x1: float
    x2: float
    label: str
    title: str
    open_end: bool  # ended on a date the record does not give
    open_start: bool  # started on a date the record does not give: drawn from the chart's first day, lighter


@dataclass(frozen=True, slots=True)
class DrugChart:
    width: float
    height: float
    bars: list[DrugBar]
    ticks: list[Tick]


ROW = 22.0


def drug_chart(v: TrendView) -> DrugChart:
    """One row per medicine on the eGFR chart's time axis, one bar per prescription: from its start to its end; to
    today while active; a prescription stopped with no end date runs, lighter, to the next prescription of the same
    medicine (a renewal), or is a mark at its start. The table beside the chart gives every prescription as recorded."""
    axis = time_axis(v)
    x = axis.x
    rows: dict[str, list[DrugSpan]] = {}
    for d in v.drugs:  # by start: a row's place is its medicine's first prescription
        rows.setdefault(d.name, []).append(d)
    bars = []
    for row, spans in enumerate(rows.values()):
        for i, d in enumerate(spans):
            first = max(d.start, axis.start) if d.start else axis.start
            following = spans[i + 1].start if i + 1 < len(spans) else None
            last = d.end or (axis.end if not d.ended else (following or first))
            when = f"from {d.start.isoformat() if d.start else 'an unknown date'}"
            until = f" to {d.end.isoformat()}" if d.end else (" (end date not recorded)" if d.ended else ", active")
            title = f"{d.name} ({', '.join(d.classes)}), {d.status}, {when}{until}"
            bars.append(DrugBar(y=TOP + row * ROW, x1=x(first), x2=max(x(last), x(first) + 4),
                                label=d.name if i == 0 else "", title=title, open_end=d.ended and d.end is None,
                                open_start=d.start is None or d.start < axis.start))  # fmt: skip
    height = TOP + len(rows) * ROW + BOTTOM
    return DrugChart(width=WIDTH, height=height, bars=bars, ticks=axis.ticks())


A_FILL = {"A1": "#e8f3e8", "A2": "#fbf3d9", "A3": "#f7d6cf"}
URINE_HEIGHT = 180.0
SHAPE = {"acr": "circle", "pcr": "square", "dipstick": "diamond"}


@dataclass(frozen=True, slots=True)
class UrineChart:
    width: float
    height: float
    bands: list[Band]
    marks: list[Dot]  # kind: acr, pcr or dipstick (drawn as circle, square, diamond)
    ticks: list[Tick]


def place_in_band(kind: str, unit: str | None, value: float | None, category: str) -> float:
    """Where a result sits inside its A band, 0 (bottom) to 1 (top): a ratio on a log scale between its own test's
    cut-offs (spec §3.3: ACR and PCR, mg/g or mg/mmol, have different ones), so ACR and PCR share the A bands; a
    dipstick grade, which has no value, sits in the middle of its band."""
    if kind == UrineKind.DIPSTICK.value or value is None or unit is None:
        return 0.5
    a2, a3 = RATIO_CUTOFFS[(UrineKind(kind), UrineUnit(unit))]
    low, high = {"A1": (a2 / 10, a2), "A2": (a2, a3), "A3": (a3, a3 * 10)}[category]
    position = (math.log10(max(value, 1e-6)) - math.log10(low)) / (math.log10(high) - math.log10(low))
    return min(max(position, 0.05), 0.95)


def urine_chart(v: TrendView) -> UrineChart:
    """Urine albumin and protein over time against the A1–A3 bands, on the eGFR chart's time axis."""
    axis = time_axis(v)
    x = axis.x
    band_height = (URINE_HEIGHT - TOP - BOTTOM) / 3

    bands = [Band(y=TOP + i * band_height, height=band_height, fill=A_FILL[a], label=a)
             for i, a in enumerate(("A3", "A2", "A1"))]  # fmt: skip
    marks = []
    for u in v.urine:
        if u.category is None:
            continue
        row = ("A3", "A2", "A1").index(u.category)
        y = TOP + (row + 1 - place_in_band(u.kind, u.unit, u.value, u.category)) * band_height
        result = f"{ratio_text(u.value)} {u.unit}" if u.value is not None else f"dipstick {u.grade}"
        title = f"Urine {u.kind.upper()} {result} on {u.date.isoformat()} ({u.category})"
        marks.append(Dot(x=x(u.date), y=y, kind=u.kind, title=title))
    ticks = axis.ticks()
    return UrineChart(width=WIDTH, height=URINE_HEIGHT, bands=bands, marks=marks, ticks=ticks)


BP_HEIGHT = 200.0


@dataclass(frozen=True, slots=True)
class BpChart:
    width: float
    height: float
    target: Line
    levels: list[Line]  # the y axis: every 20 mm Hg
    dots: list[Dot]
    ticks: list[Tick]


def bp_chart(v: TrendView) -> BpChart:
    """Systolic readings on the shared time axis, with the target line the blood-pressure card uses."""
    axis = time_axis(v)
    x = axis.x
    low = 60.0
    high = max([180.0, *(value + 10 for _, value in v.systolic)])

    def y(value: float) -> float:
        return TOP + (1 - (min(max(value, low), high) - low) / (high - low)) * (BP_HEIGHT - TOP - BOTTOM)

    dots = [Dot(x=x(d), y=y(value), kind="bp", title=f"Systolic {math.floor(value)} mm Hg on {d.isoformat()}")
            for d, value in v.systolic]  # fmt: skip
    ticks = axis.ticks()
    levels = [Line(y=y(level), label=str(level)) for level in range(80, int(high) + 1, 20)]
    return BpChart(width=WIDTH, height=BP_HEIGHT, target=Line(y=y(v.bp_target), label=f"target < {v.bp_target}"),
                   levels=levels, dots=dots, ticks=ticks)  # fmt: skip
