"""Charts for the console's dashboard, drawn on the server as SVG (no script, no I/O).

`line_chart` returns the SVG as markupsafe.Markup, ready for a Jinja2 template. What it
promises, for people and for screen readers (WCAG 2.1):

* `role="img"` with a `<title>` (the chart's title) and a `<desc>`: sentences that give
  each series' latest value and its highest, so the figures are there without the picture
  (the page also shows them as a table beneath);
* every series has its own colour AND its own dash pattern and point marker, so none is
  told apart by colour alone (1.4.1); the colours are the Okabe-Ito set, which stays
  distinct for the common colour-vision deficiencies, and all reach 3:1 on white (1.4.11);
* a legend naming each series with its line sample, horizontal reference lines with their
  labels (for instance the 0.1 % and 0.3 % complaint rates that Gmail and Yahoo hold bulk
  senders to), and y-axis ticks at round steps (1, 2, 2.5 or 5 times a power of ten);
* every piece of text escaped; every coordinate a finite number (values that are not
  finite count as missing and break the line; values beyond +-1e15 are drawn at that edge);
* no data at all draws the empty frame with a message, never an error.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from markupsafe import Markup
from markupsafe import escape as _escape

WIDTH, HEIGHT = 720, 340
LEFT, RIGHT, TOP, BOTTOM = 64, 96, 40, 70          # margins: y labels, reference labels, title, x labels + legend
LIMIT = 1e15
MAX_X_LABELS = 8
TARGET_TICKS = 5

# Okabe & Ito's colour-blind-safe set (the darker members, each at least 3:1 on white),
# each with its own dash pattern and marker shape.
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#B8860B", "#56B4E9", "#000000")
DASHES = ("", "8 4", "2 3", "10 3 2 3", "4 4", "12 4 4 4", "1 2")
MARKERS = ("circle", "square", "triangle", "diamond", "cross", "circle", "square")
REFERENCE_COLOUR = "#595959"                         # 7:1 on white

TEXT = {
    "en": {"empty": "No figures for this period.", "points": "{n} days from {first} to {last}.",
           "series": "{name}: latest {last}, highest {high} ({at}).", "none": "{name}: no figures.",
           "lines": "Reference lines: {lines}.", "legend": "Legend"},
    "sv": {"empty": "Inga siffror för perioden.", "points": "{n} dagar från {first} till {last}.",
           "series": "{name}: senast {last}, högst {high} ({at}).", "none": "{name}: inga siffror.",
           "lines": "Referenslinjer: {lines}.", "legend": "Förklaring"},
}


# Characters XML 1.0 does not allow (controls, lone surrogates, U+FFFE and U+FFFF): dropped from any text.
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def escape(text: object) -> Markup:
    """`text` for SVG: characters XML cannot hold dropped, the rest escaped."""
    return _escape(_NOT_XML.sub("", str(text)))


def _t(lang: str) -> dict[str, str]:
    return TEXT.get(lang, TEXT["en"])


@dataclass(frozen=True)
class Axis:
    """The y axis: its range and the values of its ticks."""

    low: float
    high: float
    ticks: tuple[float, ...]
    decimals: int


def nice_step(span: float, target: int = TARGET_TICKS) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) that cuts `span` into about `target` parts."""
    if not math.isfinite(span) or span <= 0:
        return 1.0
    raw = span / target
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * power * (1 + 1e-9):
            return factor * power
    return 10 * power


def axis_for(values: Sequence[float]) -> Axis:
    """The y axis for `values` (finite, clipped): from 0 (or below, for negatives) to a round
    value at or above the highest; an all-zero series gets 0 to 1."""
    low, high = min([0.0, *values]), max([0.0, *values])
    if high == low:
        high = low + 1.0
    step = nice_step(high - low)
    low = math.floor(low / step) * step
    high = math.ceil(high / step - 1e-9) * step
    count = int(round((high - low) / step))
    ticks = tuple(low + i * step for i in range(count + 1))
    exponent = math.floor(math.log10(step) + 1e-9)
    decimals = max(0, -exponent) + (1 if round(step / 10 ** exponent, 6) == 2.5 else 0)
    return Axis(low, high, ticks, min(decimals, 12))


def format_number(value: float, decimals: int, lang: str = "en") -> str:
    """`value` with `decimals` decimals; Swedish and Norwegian write a decimal comma."""
    text = f"{value:,.{decimals}f}"
    if abs(value) < 0.5 * 10 ** -decimals:
        text = f"{0:.{decimals}f}"
    if lang in ("sv", "nb"):
        text = text.replace(",", "\u00a0").replace(".", ",")
    return text


def _value_text(value: float, lang: str) -> str:
    """A figure for the <desc>: whole numbers as they are, others to three significant digits."""
    if value == int(value):
        return format_number(value, 0, lang)
    decimals = min(12, max(1, 2 - math.floor(math.log10(abs(value)))))
    text = f"{value:,.{decimals}f}".rstrip("0").rstrip(".")
    return text.replace(",", "\u00a0").replace(".", ",") if lang in ("sv", "nb") else text


def _clean(values: Sequence[float | None], n: int) -> list[float | None]:
    out: list[float | None] = []
    for v in list(values)[:n] + [None] * max(0, n - len(values)):
        if v is None or isinstance(v, bool):
            out.append(None)
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            out.append(None)
            continue
        out.append(max(-LIMIT, min(LIMIT, f)) if math.isfinite(f) else None)
    return out


def _c(v: float) -> str:
    return f"{v:.2f}"


def _marker(shape: str, x: float, y: float, colour: str, value: float) -> str:
    data = f' data-value="{escape(repr(value))}"'
    if shape == "square":
        return f'<rect x="{_c(x - 3)}" y="{_c(y - 3)}" width="6" height="6" fill="{colour}"{data}/>'
    if shape == "triangle":
        return f'<path d="M{_c(x)},{_c(y - 4)} L{_c(x + 4)},{_c(y + 3)} L{_c(x - 4)},{_c(y + 3)} Z" fill="{colour}"{data}/>'
    if shape == "diamond":
        return f'<path d="M{_c(x)},{_c(y - 4)} L{_c(x + 4)},{_c(y)} L{_c(x)},{_c(y + 4)} L{_c(x - 4)},{_c(y)} Z" fill="{colour}"{data}/>'
    if shape == "cross":
        return (f'<path d="M{_c(x - 3)},{_c(y - 3)} L{_c(x + 3)},{_c(y + 3)} M{_c(x - 3)},{_c(y + 3)} '
                f'L{_c(x + 3)},{_c(y - 3)}" stroke="{colour}" stroke-width="2"{data}/>')
    return f'<circle cx="{_c(x)}" cy="{_c(y)}" r="3.2" fill="{colour}"{data}/>'


def describe(title: str, labels: Sequence[str], series: Mapping[str, Sequence[float | None]],
             lines: Mapping[str, float], lang: str = "en") -> str:
    """The sentences of the chart's <desc> (plain text, not escaped)."""
    t = _t(lang)
    if not labels:
        return f"{title}. {t['empty']}"
    parts = [f"{title}.", t["points"].format(n=len(labels), first=labels[0], last=labels[-1])]
    for name, values in series.items():
        present = [(v, i) for i, v in enumerate(values) if v is not None]
        if not present:
            parts.append(t["none"].format(name=name))
            continue
        last = present[-1][0]
        high, at = max(present, key=lambda p: p[0])
        parts.append(t["series"].format(name=name, last=_value_text(last, lang), high=_value_text(high, lang),
                                        at=labels[at]))
    if lines:
        parts.append(t["lines"].format(lines=", ".join(lines)))
    return " ".join(parts)


def line_chart(title: str, labels: list[str], series: dict[str, list[float]], *,
               lines: dict[str, float] | None = None, lang: str = "en") -> Markup:
    """An SVG line chart of `series` (name -> one value per label) over `labels` (see the module)."""
    t = _t(lang)
    labels = [str(label) for label in labels]
    n = len(labels)
    clean = {str(name): _clean(values, n) for name, values in series.items()}
    refs = {str(k): max(-LIMIT, min(LIMIT, float(v))) for k, v in (lines or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
    present = [v for values in clean.values() for v in values if v is not None]
    uid = "c" + hashlib.sha256(repr((title, labels, sorted(clean.items()), sorted(refs.items()))).encode()
                                ).hexdigest()[:10]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
           f'width="100%" class="chart" aria-labelledby="{uid}-t {uid}-d" font-family="sans-serif" font-size="12">',
           f'<title id="{uid}-t">{escape(title)}</title>',
           f'<desc id="{uid}-d">{escape(describe(title, labels, {k: v for k, v in clean.items()}, refs, lang))}</desc>',
           '<rect x="0" y="0" width="100%" height="100%" fill="#ffffff"/>',
           f'<text x="{LEFT}" y="22" font-size="15" font-weight="bold" fill="#1a1a1a">{escape(title)}</text>',
           f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" '
           f'stroke="#767676" stroke-width="1"/>']
    if n == 0 or not present:
        out.append(f'<text class="empty" x="{_c(LEFT + plot_w / 2)}" y="{_c(TOP + plot_h / 2)}" '
                   f'text-anchor="middle" fill="#1a1a1a">{escape(t["empty"])}</text>')
        out.append("</svg>")
        return Markup("\n".join(out))
    axis = axis_for(present + list(refs.values()))

    def y_of(v: float) -> float:
        return TOP + plot_h - (v - axis.low) / (axis.high - axis.low) * plot_h

    def x_of(i: int) -> float:
        return LEFT + (plot_w / 2 if n == 1 else i * plot_w / (n - 1))

    for tick in axis.ticks:
        y = y_of(tick)
        out.append(f'<g class="tick-y" data-value="{escape(repr(tick))}">'
                   f'<line x1="{LEFT}" y1="{_c(y)}" x2="{LEFT + plot_w}" y2="{_c(y)}" stroke="#d9d9d9"/>'
                   f'<text x="{LEFT - 6}" y="{_c(y + 4)}" text-anchor="end" fill="#1a1a1a">'
                   f'{escape(format_number(tick, axis.decimals, lang))}</text></g>')
    every = max(1, math.ceil(n / MAX_X_LABELS))
    for i, label in enumerate(labels):
        if i % every and i != n - 1:
            continue
        x = x_of(i)
        out.append(f'<g class="tick-x"><line x1="{_c(x)}" y1="{TOP + plot_h}" x2="{_c(x)}" y2="{TOP + plot_h + 4}" '
                   f'stroke="#767676"/><text x="{_c(x)}" y="{TOP + plot_h + 17}" text-anchor="middle" '
                   f'fill="#1a1a1a">{escape(label)}</text></g>')
    for name, value in refs.items():
        y = y_of(value)
        out.append(f'<g class="reference" data-value="{escape(repr(value))}">'
                   f'<line x1="{LEFT}" y1="{_c(y)}" x2="{LEFT + plot_w}" y2="{_c(y)}" stroke="{REFERENCE_COLOUR}" '
                   f'stroke-width="1.5" stroke-dasharray="6 3"/>'
                   f'<text x="{LEFT + plot_w + 6}" y="{_c(y + 4)}" fill="{REFERENCE_COLOUR}">{escape(name)}</text></g>')
    legend_y = HEIGHT - 22
    legend_x = float(LEFT)
    legend = [f'<g class="legend" aria-label="{escape(t["legend"])}">']
    for k, (name, values) in enumerate(clean.items()):
        colour, dash, shape = COLOURS[k % len(COLOURS)], DASHES[k % len(DASHES)], MARKERS[k % len(MARKERS)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        segments, current = [], []
        for i, v in enumerate(values):
            if v is None:
                if current:
                    segments.append(current)
                current = []
            else:
                current.append((x_of(i), y_of(v), v))
        if current:
            segments.append(current)
        out.append(f'<g class="series" data-name="{escape(name)}">')
        for segment in segments:
            d = " ".join(("M" if j == 0 else "L") + f"{_c(x)},{_c(y)}" for j, (x, y, _) in enumerate(segment))
            out.append(f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="2"{dash_attr}/>')
            out.extend(_marker(shape, x, y, colour, v) for x, y, v in segment)
        out.append("</g>")
        legend.append(f'<line x1="{_c(legend_x)}" y1="{legend_y}" x2="{_c(legend_x + 28)}" y2="{legend_y}" '
                      f'stroke="{colour}" stroke-width="2"{dash_attr}/>'
                      + _marker(shape, legend_x + 14, legend_y, colour, 0.0)
                      + f'<text x="{_c(legend_x + 34)}" y="{legend_y + 4}" fill="#1a1a1a">{escape(name)}</text>')
        legend_x += 44 + 7 * min(len(name), 40)
    legend.append("</g>")
    out.extend(legend)
    out.append("</svg>")
    return Markup("\n".join(out))
