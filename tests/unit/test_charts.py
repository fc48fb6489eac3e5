"""The dashboard's SVG charts (worker.console.charts): valid XML, escaped text, points where
their values say, an empty chart for no data, and no NaN or infinite coordinate for any input."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from worker.console.charts import COLOURS, axis_for, format_number, line_chart, nice_step

SVG = "{http://www.w3.org/2000/svg}"
LABELS = ["2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"]


def parse(svg: Markup) -> ET.Element:
    assert isinstance(svg, Markup)
    return ET.fromstring(str(svg))


def ticks(root: ET.Element) -> list[tuple[float, float]]:
    """(value, y) of each y-axis tick, as the chart drew it."""
    out = []
    for g in root.iter(f"{SVG}g"):
        if g.get("class") == "tick-y":
            out.append((float(g.get("data-value")), float(g.find(f"{SVG}line").get("y1"))))
    return out


def points(root: ET.Element, name: str) -> list[tuple[float, float]]:
    """(x, y) of the vertices of the series `name`'s lines, in order."""
    for g in root.iter(f"{SVG}g"):
        if g.get("class") == "series" and g.get("data-name") == name:
            found = []
            for path in g.findall(f"{SVG}path"):
                if path.get("fill") == "none":
                    found += [(float(x), float(y)) for x, y in re.findall(r"[ML]([-\d.]+),([-\d.]+)", path.get("d"))]
            return found
    raise AssertionError(f"no series {name!r}")


def test_a_chart_is_an_accessible_svg_with_title_desc_legend_and_reference_lines():
    root = parse(line_chart("Complaint rate", LABELS, {"alumni": [0.0005, 0.002, 0.001, 0.0011],
                                                       "events": [0, 0.001, 0.0035, 0.002]},
                            lines={"0.1 %": 0.001, "0.3 %": 0.003}))
    assert root.tag == f"{SVG}svg" and root.get("role") == "img"
    assert root.find(f"{SVG}title").text == "Complaint rate"
    desc = root.find(f"{SVG}desc").text
    assert "alumni: latest 0.0011, highest 0.002 (2026-12-02)" in desc
    assert "events: latest 2, highest" not in desc and "events: latest 0.002, highest 0.0035 (2026-12-03)" in desc
    assert set(root.get("aria-labelledby").split()) == {root.find(f"{SVG}title").get("id"),
                                                        root.find(f"{SVG}desc").get("id")}
    series = [g for g in root.iter(f"{SVG}g") if g.get("class") == "series"]
    styles = {(g.find(f"{SVG}path").get("stroke"), g.find(f"{SVG}path").get("stroke-dasharray")) for g in series}
    colours = {c for c, _ in styles}
    dashes = {d for _, d in styles}
    assert len(colours) == 2 and len(dashes) == 2 and colours <= set(COLOURS)    # colour AND dash differ
    legend = "".join(next(g for g in root.iter(f"{SVG}g") if g.get("class") == "legend").itertext())
    assert "alumni" in legend and "events" in legend
    refs = {g.find(f"{SVG}text").text: float(g.get("data-value")) for g in root.iter(f"{SVG}g")
            if g.get("class") == "reference"}
    assert refs == {"0.1 %": 0.001, "0.3 %": 0.003}


def test_a_points_y_position_matches_its_value():
    values = [12.0, 340.0, 77.5, 0.0]
    root = parse(line_chart("Hard bounces", LABELS, {"alumni": values}))
    (v0, y0), (v1, y1) = ticks(root)[0], ticks(root)[-1]
    assert v0 == 0 and v1 >= 340 and y1 < y0                            # up is more
    for value, (_, y) in zip(values, points(root, "alumni")):
        expected = y0 + (value - v0) / (v1 - v0) * (y1 - y0)          # read off the drawn axis
        assert abs(y - expected) < 0.02, (value, y, expected)
    xs = [x for x, _ in points(root, "alumni")]
    assert xs == sorted(xs) and len(set(xs)) == 4


def test_a_gap_breaks_the_line_and_a_reference_line_widens_the_axis():
    root = parse(line_chart("Rate", LABELS, {"a": [0.0001, None, float("nan"), 0.0002]}, lines={"0.3 %": 0.003}))
    series = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "series")
    assert len([p for p in series.findall(f"{SVG}path") if p.get("fill") == "none"]) == 2
    assert ticks(root)[-1][0] >= 0.003


def test_hostile_text_is_escaped():
    evil = '<script>alert(1)</script>&"\'><g onload="x">'
    svg = line_chart(evil, [evil, "b"], {evil: [1, 2]}, lines={evil: 1.5})
    root = parse(svg)
    assert "<script>" not in str(svg) and 'onload="x"' not in str(svg)
    assert root.find(f"{SVG}title").text == evil
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert texts.count(evil) >= 3                       # the x label, the reference label, the legend
    assert not any(el.tag.endswith("script") for el in root.iter())


def test_no_data_draws_an_empty_chart_with_a_message():
    for labels, series in (([], {}), (LABELS, {}), (LABELS, {"a": [None] * 4}), ([], {"a": [1, 2]})):
        root = parse(line_chart("Nothing", labels, series, lang="sv"))
        message = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "empty"]
        assert message == ["Inga siffror för perioden."]
        assert not [g for g in root.iter(f"{SVG}g") if g.get("class") == "series"]


def test_ticks_are_round_and_numbers_follow_the_language():
    assert [nice_step(s) for s in (1, 7, 23, 0.0035, 1e6)] == [0.2, 2, 5, 0.001, 200000]
    axis = axis_for([0.0035])
    assert axis.ticks[0] == 0 and axis.ticks[-1] >= 0.0035 and len(axis.ticks) <= 8
    assert format_number(1234.5, 1, "sv") == "1\u00a0234,5" and format_number(1234.5, 1, "en") == "1,234.5"
    assert format_number(-0.0001, 2) == "0.00"


floats = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**20, 10**20))


@settings(max_examples=150, deadline=None)
@given(labels=st.lists(st.text(max_size=12), max_size=40),
       series=st.dictionaries(st.text(max_size=12), st.lists(floats, max_size=45), max_size=8),
       lines=st.dictionaries(st.text(max_size=8), st.floats(allow_nan=True, allow_infinity=True), max_size=3),
       lang=st.sampled_from(["en", "sv", "nb", "xx"]))
def test_any_series_gives_valid_svg_with_finite_coordinates(labels, series, lines, lang):
    svg = str(line_chart("Random", labels, series, lines=lines, lang=lang))
    root = ET.fromstring(svg)
    for el in root.iter():
        for attr in ("x", "y", "x1", "x2", "y1", "y2", "cx", "cy", "width", "height"):
            value = el.get(attr)
            if value is not None and not value.endswith("%"):
                assert math.isfinite(float(value)), (attr, value)
        if el.get("d"):
            for number in re.findall(r"[-\d.eE+]+|nan|inf", el.get("d")):
                assert math.isfinite(float(number)), el.get("d")
