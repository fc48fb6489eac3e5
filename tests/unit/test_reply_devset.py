"""Floors on the reply development set (tests/data/replies), to stop regressions (issue 21).

The figures are those bench/reply_accuracy.py prints for the development part (its
`run_devset`); the floors are figures the reader reaches today, a little below where
a single message would move them, never the issue's targets where those are not yet
reached. The held-aside part (tests/data/replies/holdout) is never read here.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.reply_accuracy import run_devset


@pytest.fixture(scope="module")
def figures() -> dict[str, Any]:
    return run_devset(holdout=False)


def test_no_request_is_silently_dropped(figures: dict[str, Any]) -> None:
    # Every opt-out, erasure or opt-in request, in any language, is acted on or in review.
    silent = [m["id"] for m in figures["misses"] if m["problem"].startswith("SILENT")]
    assert figures["requests_silent"] == 0, silent
    assert figures["other_requests_silent"] == 0, silent


def test_no_false_optout_and_no_action_on_a_victim(figures: dict[str, Any]) -> None:
    assert figures["false_optouts"] == 0, [m for m in figures["misses"] if m["problem"] == "false opt-out"]
    assert figures["victim_actions"] == 0
    assert figures["exceptions"] == 0


def test_optouts_acted_on_with_covering_scope(figures: dict[str, Any]) -> None:
    assert figures["optouts"] >= 300
    # The set grew by the 171 unseen entries of the second held-aside part (merged
    # 2026-12-07): on the smaller set this floor was 0.90; on the enlarged one the reader
    # reaches 285 of 327 (0.872), every other request in review. Not a regression.
    assert figures["optouts_acted_covering"] >= 0.87
    assert figures["optouts_wrong_scope"] == 0
    # 5 on the enlarged set before the safety net, 3 now (nn-302, en-306, en-312).
    assert figures["over_scoped"] <= 3


def test_every_erasure_request_is_marked(figures: dict[str, Any]) -> None:
    marked, total = (int(x) for x in figures["erasure_marked"].split("/"))
    assert total and marked == total


def test_ordinary_replies_rarely_go_to_review_and_auto_replies_are_recognised(figures: dict[str, Any]) -> None:
    # 23 of 202 on the enlarged set, before and after the safety net: 20 of them are
    # access requests and address changes, which a person must handle (GDPR art. 15, a
    # changed address); the target (<= 0.10) counts them too.
    assert figures["replies_to_review"] <= 0.115
    assert figures["autoreply_recall"] >= 0.97


def test_ordinary_replies_go_to_review_only_for_a_reason(figures: dict[str, Any]) -> None:
    # Thanks, RSVPs, questions, spam: the safety net and the other review reasons send at
    # most 2 % of them to a person (3 of 202 today: a question how to unsubscribe, a
    # question about a relative's opt-out, and a French reply with a request word).
    rights = ("request for access to personal data", "address change")
    other = [m for m in figures["misses"] if m["problem"] == "reply to review" and m["why"] not in rights]
    assert len(other) / figures["replies"] <= 0.02, other
