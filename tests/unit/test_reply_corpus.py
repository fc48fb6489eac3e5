"""The labelled mail corpus: no false opt-outs, recall and scope over the development set."""

from __future__ import annotations

import pytest

from handlers import ActionType, Kind
from tests.support import corpus
from tests.support.reply_samples import decide

LABELS = corpus.read_jsonl("mail/labels.jsonl")


@pytest.mark.parametrize("label", LABELS, ids=lambda x: x["file"])
def test_mail_label(label: dict) -> None:
    root = corpus.require("mail")
    decision = decide((root / label["file"]).read_bytes(), rcpt=(), mail_from=None)
    assert "classifier error" not in decision.reason
    if decision.kind is not Kind.BOUNCE:      # bounces are handlers/bounces/dsn.py's (m003 is a forged DSN)
        assert not any(a.address.endswith("victim.example") for a in decision.actions)
    unsubs = [a for a in decision.actions if a.type is ActionType.UNSUBSCRIBE]
    ok = label["kind"] == "optout" or "optout" in (label.get("also_ok") or [])
    if decision.kind is not Kind.COMPLAINT and not decision.review and unsubs:
        assert ok and all(a.address == label["address"] for a in unsubs), "false opt-out"
    if label["kind"] == "optout":
        assert decision.kind is Kind.OPTOUT, decision.reason
        (action,) = unsubs
        assert action.address == label["address"]
        units = {"alumni", "research-news", "student-comms", "events"} if action.units == "all" else set(action.units)
        want_units = label["scope"]["units"]
        assert want_units == "all" and action.units == "all" or set(want_units) <= units
        chans = label["scope"]["channels"]
        assert action.channels == "all" or (chans != "all" and set(chans) <= set(action.channels))
    if label["kind"] in ("reply", "autoreply"):
        assert decision.kind.value == label["kind"], decision.reason
