"""The dashboard page's figures: worker.ops.dashboard's day rows turned into charts
(worker.console.charts) and, beneath each, a table of the same figures.

Per day, over the units chosen (every unit, or one): hard and soft bounces, complaints,
opt-outs by source, auto-replies; and the complaint rate of each unit against the
0.1 % and 0.3 % lines that Gmail and Yahoo hold bulk senders to. Read only.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from markupsafe import Markup

from config import Settings
from handlers.model import WILDCARD
from worker.store.database import Database

PERIODS = (7, 30, 90)
RATE_LINES = {"0.1 %": 0.1, "0.3 %": 0.3}


class BadFilter(ValueError):
    """The dashboard's filter cannot be read: the text key of the message, and its values."""

    def __init__(self, key: str, **values: Any) -> None:
        super().__init__(key)
        self.key, self.values = key, values


@dataclass
class Figure:
    """One chart and the table beneath it: a column per series, a row per day."""

    id: str
    title: str
    svg: Markup
    columns: list[str]
    rows: list[tuple[str, list[str]]]


def _number(value: float | int | None) -> str:
    return "" if value is None else str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def _rate(complaints: int, sent: int | None, lang: str) -> str:
    if not sent:
        return "–"
    text = f"{100 * complaints / sent:.2f} %"
    return text.replace(".", ",") if lang == "sv" else text


def read_filter(settings: Settings, query: Any) -> tuple[str | None, int]:
    unit = (query.get("unit") or "").strip() or None
    if unit is not None and unit not in settings.units and unit != WILDCARD:
        raise BadFilter("dashboard.bad_unit", unit=unit[:64])
    raw_days = (query.get("days") or "30").strip()
    if not raw_days.isdigit() or int(raw_days) not in PERIODS:
        raise BadFilter("dashboard.bad_days", periods=", ".join(map(str, PERIODS)))
    return unit, int(raw_days)


async def dashboard_context(db: Database, settings: Settings, request: web.Request, lang: str,
                            t: dict[str, str]) -> dict[str, Any]:
    from worker.console.charts import line_chart
    from worker.ops import dashboard

    unit, days = read_filter(settings, request.query)
    rows = await dashboard.daily(db, settings, days=days, unit=unit)
    live = await dashboard.live(db, settings)
    by_day: dict[Any, list[Any]] = defaultdict(list)
    for row in rows:
        by_day[row.day].append(row)
    day_list = sorted(by_day)
    labels = [d.isoformat() for d in day_list]

    def total(attr: str) -> list[float]:
        return [float(sum(getattr(r, attr) for r in by_day[d])) for d in day_list]

    def optouts(source: str) -> list[float]:
        return [float(sum(r.optouts.get(source, 0) for r in by_day[d])) for d in day_list]

    def figure(fid: str, title: str, series: dict[str, list[float]],
               lines: dict[str, float] | None = None, cells: dict[str, list[str]] | None = None) -> Figure:
        svg = line_chart(title, labels, series, lines=lines, lang=lang)
        shown = cells or {name: [_number(v) for v in values] for name, values in series.items()}
        columns = list(shown)
        return Figure(fid, title, svg, columns, [(labels[i], [shown[c][i] for c in columns])
                                                 for i in range(len(labels))])

    figures = [
        figure("bounces", t["dashboard.bounces"], {t["dashboard.hard"]: total("hard_bounces"),
                                                   t["dashboard.soft"]: total("soft_bounces")}),
        figure("complaints", t["dashboard.complaints"], {t["dashboard.complaints"]: total("complaints")}),
        figure("optouts", t["dashboard.optouts"], {t["dashboard.source." + s]: optouts(s)
                                                   for s in dashboard.OPTOUT_SOURCES}),
        figure("autoreplies", t["dashboard.autoreplies"], {t["dashboard.autoreplies"]: total("auto_replies")}),
    ]
    rate_units = [unit] if unit is not None and unit != WILDCARD else list(settings.units)
    if rate_units and unit != WILDCARD:
        rates: dict[str, list[float]] = {}
        cells: dict[str, list[str]] = {}
        for u in rate_units:
            configured = settings.units.get(u)
            name = getattr(configured.names, lang, u) if configured else u
            found = {r.day: r for r in rows if r.unit == u}
            rates[name] = [100 * found[d].complaint_rate if d in found and found[d].complaint_rate is not None
                           else None for d in day_list]                       # type: ignore[misc]
            cells[name] = [f"{_rate(found[d].complaints, found[d].sent, lang)} ({found[d].complaints} / "
                           f"{found[d].sent if found[d].sent is not None else '–'})" if d in found else ""
                           for d in day_list]
        figures.append(figure("rate", t["dashboard.rate"], rates, RATE_LINES, cells))
    return {"figures": figures, "live": live, "unit": unit, "days": days, "periods": PERIODS,
            "lag": f"{live['outbox_lag_seconds']:.0f}"}
