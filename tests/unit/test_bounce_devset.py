"""The bounce development set (tests/data/bounces): the data only, never the classifier.

Every labelled file exists and parses as a message, every sample has a label line,
the fields are valid, and the dev and holdout parts share no file. How the classifier
does on the set is a figure, printed by `python -m bench.bounce_devset`, not a test.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "bounces"
PARTS = ("dev", "holdout")
KINDS = {"bounce", "feedback", "vacation", "delivered", "none"}
ACTIONS = {"failed", "delayed", "delivered", "relayed", None}
FORMS = {"final-unusable", "local-part-only", "smtputf8", "auto-submitted", "blank-lines", "multipart-mixed",
         "reserved-names", "hard-soft", "text-mta", "text-language", "not-bounce", "complaint"}
REQUIRED = ("file", "recipient", "kind", "status", "reason", "hard", "permanent", "note")
STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}\Z")
# Every recipient is fictional: a reserved name (RFC 2606, RFC 6761) or example.se / example.no.
FICTIONAL = re.compile(r"(?:\.example|\.test|\.invalid|\.local|(?:^|\.)example\.(?:se|no))\Z")


def _lines(part: str) -> list[dict[str, Any]]:
    path = DATA / part / "expected.jsonl"
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


LINES = {part: _lines(part) for part in PARTS}
ALL = [(part, row) for part in PARTS for row in LINES[part]]


def _parse(raw: bytes) -> email.message.Message:
    # A few samples start with blank lines on purpose (a form the reader must handle);
    # the stdlib parser is only asked whether a header follows them.
    return email.message_from_bytes(raw.lstrip(b" \t\r\n"), policy=email.policy.default)


@pytest.mark.parametrize("part", PARTS)
def test_every_labelled_file_exists_and_parses(part: str) -> None:
    for name in sorted({row["file"] for row in LINES[part]}):
        path = DATA / part / name
        assert path.is_file(), f"{part}/{name} is labelled but missing"
        raw = path.read_bytes()
        assert raw.strip(), f"{part}/{name} is empty"
        msg = _parse(raw)
        assert msg.get("From") is not None, f"{part}/{name}: no From header"
        assert msg.get("Subject") is not None, f"{part}/{name}: no Subject header"
        for sub in msg.walk():                 # every part's payload can be read
            if not sub.is_multipart():
                sub.get_payload(decode=True)


@pytest.mark.parametrize("part", PARTS)
def test_every_file_has_a_label_line(part: str) -> None:
    on_disk = {p.name for p in (DATA / part).iterdir() if p.is_file() and p.name != "expected.jsonl"}
    labelled = {row["file"] for row in LINES[part]}
    assert on_disk - labelled == set(), f"{part}: files without a label line"
    assert labelled - on_disk == set(), f"{part}: label lines without a file"


@pytest.mark.parametrize(("part", "row"), ALL, ids=[f"{p}/{r['file']}:{r['recipient']}" for p, r in ALL])
def test_fields_are_valid(part: str, row: dict[str, Any]) -> None:
    for key in REQUIRED:
        assert key in row, f"missing field {key}"
    assert "/" not in row["file"] and row["file"].endswith(".eml")
    kind, recipient = row["kind"], row["recipient"]
    assert kind in KINDS
    assert (recipient is None) == (kind == "none"), "recipient null exactly when kind is none"
    if recipient is not None:
        assert recipient == recipient.strip().lower() and recipient.count("@") == 1, recipient
        assert FICTIONAL.search(recipient.rsplit("@", 1)[1]), f"not a fictional domain: {recipient}"
    assert row["status"] is None or STATUS.match(row["status"]), row["status"]
    assert row["reason"] is None or re.fullmatch(r"[a-z]+", row["reason"]), row["reason"]
    assert row["hard"] in (True, False, None) and row["permanent"] in (True, False, None)
    assert row.get("action") in ACTIONS
    assert row.get("form") in FORMS
    assert row["note"] is None or isinstance(row["note"], str)
    if kind == "bounce":
        assert row["action"] in ("failed", "delayed")
        assert row["hard"] is not None and row["permanent"] is not None
        if row["action"] == "delayed":
            assert row["hard"] is False and row["permanent"] is False, "a delay is never hard"
        if row["status"]:
            assert row["permanent"] == row["status"].startswith("5."), "permanent is the class of status"
        if row["hard"]:
            assert row["permanent"], "hard needs a permanent failure"
    else:
        assert row["hard"] is None, "hard is only for bounce lines"
    if kind == "delivered":
        assert row["action"] in ("delivered", "relayed") and (row["status"] or "2").startswith("2")
    if kind == "feedback":
        assert row.get("feedback_type") in ("abuse", "opt-out", "not-spam", "fraud", "virus", "other")


@pytest.mark.parametrize("part", PARTS)
def test_one_line_per_file_and_recipient(part: str) -> None:
    keys = [(row["file"], row["recipient"]) for row in LINES[part]]
    assert len(keys) == len(set(keys))
    for name in {row["file"] for row in LINES[part]}:
        rows = [row for row in LINES[part] if row["file"] == name]
        if any(row["recipient"] is None for row in rows):
            assert len(rows) == 1, f"{name}: a file with nothing to find has exactly one line"


def test_dev_and_holdout_are_disjoint() -> None:
    names = {part: {row["file"] for row in LINES[part]} for part in PARTS}
    assert names["dev"] & names["holdout"] == set()
    digests = {part: {hashlib.sha256((DATA / part / n).read_bytes()).hexdigest() for n in names[part]}
               for part in PARTS}
    assert digests["dev"] & digests["holdout"] == set(), "the same bytes in dev and holdout"


def test_size_and_share() -> None:
    dev = {row["file"] for row in LINES["dev"]}
    hold = {row["file"] for row in LINES["holdout"]}
    assert len(dev) + len(hold) >= 120
    assert 0.2 <= len(hold) / (len(dev) + len(hold)) <= 0.3
    for part in PARTS:                          # every form is represented on both sides
        forms = {row["form"] for row in LINES[part]}
        assert forms == FORMS, f"{part} lacks forms {sorted(FORMS - forms)}"
