"""Floors for the bounce development set (tests/data/bounces/dev, issue 21).

Runs the classifier over the development part only, scored as `bench/bounce_devset.py`
scores it, and asserts figures this tree reaches, so that a later change cannot quietly
undo them. The held-out part is never read here.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from bench import bounce_devset as bench
from handlers import Inbound, classify

# Reached when this test was written (dev, 119 files): recall 100.0, precision 98.0 (the two
# quiet files whose stranger is recorded, not acted on), hard/soft 100.0, complaints 8/8.
# Raised after the merge of the earlier holdout (dev, 156 files): recall, precision (rows of
# decisions that say they are not about mail we sent are recorded, not reported; see
# bench.bounce_devset), hard/soft, status all 100.0, no delay acted on.
# Raised after the merge of the second holdout (dev, 214 files, issue 21 second round):
# every figure 100.0 (a forged original's rows are recorded, not reported); on 157 failed
# lines and 141 labelled statuses a floor of 99.5 allows no miss.
FLOORS = {
    "recipient_recall": 99.5,
    "recipient_precision": 99.5,
    "failed_lines_acted_on": 99.5,
    "hard_soft_agreement": 99.5,
    "permanent_temporary_agreement": 99.5,
    "status_agreement": 99.5,
}


@pytest.fixture(scope="module")
def figures() -> dict[str, Any]:
    if not (bench.DATA / "dev" / "expected.jsonl").is_file():
        pytest.skip("no development set")
    ctx = bench.build_context()
    total = bench.Score()
    per_form: dict[str, bench.Score] = defaultdict(bench.Score)
    misses: list[dict[str, Any]] = []
    for file, lines in sorted(bench.load_part("dev").items()):
        raw = (bench.DATA / "dev" / file).read_bytes()
        decision = classify(Inbound.from_file(raw, f"devset/dev/{file}", bench.NOW), ctx, bench.NOW)
        bench.score_file(file, lines, bench.read_decision(decision), [total, per_form[lines[0].get("form") or "?"]],
                         misses)
    out = total.figures()
    out["misses"] = misses
    return out


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_dev_figure_floor(figures: dict[str, Any], name: str) -> None:
    assert figures[name] is not None and figures[name] >= FLOORS[name], (name, figures[name], figures["misses"][:10])


def test_dev_no_false_action_no_wrong_address_no_delay_acted_on(figures: dict[str, Any]) -> None:
    c = figures
    assert str(c["false_actions"]).startswith("0/"), c["false_actions"]
    assert c["false_suppressions"] == 0 and c["wrong_address_acted_on"] == 0
    assert str(c["delayed_acted_on"]).startswith("0/"), c["delayed_acted_on"]


def test_dev_complaints_found(figures: dict[str, Any]) -> None:
    found, _, total = str(figures["complaint_recipients_found"]).partition("/")
    assert int(found) == int(total) >= 8
