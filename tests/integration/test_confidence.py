"""Confidence on every decision (issue 4): shown by `classify --json`, kept with the event,
and an emailed opt-out that is not confidently decided goes to review with its doubts."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from handlers.context import Context
from handlers.state.apply import apply
from handlers.classify import classify
from handlers.model import (REVIEW_BELOW, Decision, Inbound, Kind, confidence_level, confidence_of)
from worker.store.models import Event, Preference, ReviewItem
from tests.support.messages import dsn
from tests.support.reply_samples import NOW, SETTINGS, decide, mail
from tests.e2e.test_cli import unsubd
from tests.unit.test_reply_languages import OPTOUTS, QUOTE_EN, QUOTE_SV

LATE = ("Thank you for many good years of news. I read every issue on the train. The last one on the new "
        "library was especially nice. I have now retired and moved to Spain. My days are spent in the garden. "
        "The weather here is lovely. ")


@pytest.mark.parametrize("lang,body,units,channels", OPTOUTS, ids=[f"{o[0]}-{i}" for i, o in enumerate(OPTOUTS)])
def test_clear_opt_outs_in_each_language_are_high(lang, body, units, channels):
    d = decide(mail(body))
    assert d.kind is Kind.OPTOUT and not d.review
    assert confidence_level(confidence_of(d)) == "high", (d.confidence, d.evidence.get("confidence_doubts"))


@pytest.mark.parametrize("subject", ["Avregistrera", "Avmeld", "Afmeld", "Unsubscribe", "Abmelden"])
def test_an_opt_out_in_the_own_subject_is_high(subject):
    d = decide(mail("", subject=subject))
    assert d.kind is Kind.OPTOUT and d.confidence >= 0.85


def test_a_weak_phrase_alone_is_medium_and_still_acted_on():
    d = decide(mail("Please remove me." + QUOTE_EN))
    assert d.kind is Kind.OPTOUT and not d.review and d.actions
    assert confidence_level(d.confidence) == "medium"
    assert any("weak phrase" in doubt for doubt in d.evidence["confidence_doubts"])


def test_naming_the_list_makes_the_same_phrase_high():
    d = decide(mail("Please remove me from your mailing list." + QUOTE_EN))
    assert d.confidence >= 0.85 and not d.evidence["confidence_doubts"]


def test_a_request_only_late_in_a_long_text_is_lower():
    early = decide(mail("Please unsubscribe me from your newsletter. " + LATE + QUOTE_EN))
    late = decide(mail(LATE + "Please unsubscribe me from your newsletter." + QUOTE_EN))
    assert early.confidence > late.confidence >= REVIEW_BELOW and not late.review
    assert "request only late in a long text" in late.evidence["confidence_doubts"]


def test_phrases_in_two_languages_are_medium():
    d = decide(mail("Avregistrera mig. Unsubscribe me please." + QUOTE_SV))
    assert not d.review and confidence_level(d.confidence) == "medium"


@pytest.mark.parametrize("body", [
    "Remove me. I do not want to unsubscribe from anything though." + QUOTE_EN,   # weak + contradicted
    LATE + "Please remove me." + QUOTE_EN,                                          # weak + late
])
def test_low_confidence_opt_outs_go_to_review_with_the_reason_and_a_proposal(body):
    d = decide(mail(body))
    assert d.kind is Kind.OPTOUT and d.review and d.confidence < REVIEW_BELOW
    assert d.reason.startswith("opt-out needs review: low confidence")
    assert [a.address for a in d.actions] == ["anna.berg@example.se"]      # kept for the reviewer


async def test_a_low_confidence_opt_out_becomes_a_review_item_and_changes_nothing(database):
    d = decide(mail(LATE + "Please remove me." + QUOTE_EN))
    await apply(d, database.unit_of_work(), NOW)
    async with database.sessions() as s:
        items = (await s.scalars(select(ReviewItem))).all()
        prefs = await s.scalar(select(func.count()).select_from(Preference))
        event = (await s.scalars(select(Event))).one()
    assert prefs == 0 and len(items) == 1
    assert "low confidence" in items[0].reason and "weak phrase" in items[0].reason
    assert items[0].address == "anna.berg@example.se"
    assert event.evidence["confidence"] == d.confidence


def test_structured_reports_are_surer_than_bounces_read_from_text():
    qmail = (b"From: MAILER-DAEMON@mx.example.se\r\nTo: bounces@mail.example.org\r\nSubject: failure notice\r\n\r\n"
             b"Hi. This is the qmail-send program at mx.example.se.\r\n"
             b"I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
             b"This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n"
             b"<olle@example.se>:\r\nSorry, no mailbox here by that name. (#5.1.1)\r\n")
    text = classify(Inbound.from_smtp(qmail, "", ["bounces@mail.example.org"], NOW), Context.from_settings(SETTINGS), NOW)
    report = classify(Inbound.from_smtp(dsn("olle@example.se"), "", ["bounces@mail.example.org"], NOW), Context.from_settings(SETTINGS), NOW)
    assert text.kind is report.kind is Kind.BOUNCE and text.actions and report.actions
    assert confidence_level(report.confidence) == "high" and confidence_level(text.confidence) == "medium"


def test_auto_replies_marked_in_the_header_are_surer_than_by_text():
    header = decide(mail("I am away until Monday.", subject="Away", extra="Auto-Submitted: auto-replied\n"))
    text = decide(mail("I am out of the office until 12 March with limited access to email.", subject="Re: Hi"))
    assert header.kind is text.kind is Kind.AUTOREPLY
    assert header.confidence > text.confidence >= REVIEW_BELOW


def test_ordinary_replies_are_high_and_near_misses_lower():
    plain = decide(mail("Tack, jag kommer gärna på minglet!" + QUOTE_SV))
    near = decide(mail("I do NOT want to unsubscribe, I love this newsletter." + QUOTE_EN))
    assert plain.kind is near.kind is Kind.REPLY
    assert confidence_level(plain.confidence) == "high" and confidence_level(near.confidence) == "medium"


def test_every_kind_has_a_default_in_0_1():
    for kind in Kind:
        value = confidence_of(Decision(item_id="x", kind=kind))
        assert 0 <= value <= 1 and confidence_level(value) in ("high", "medium", "low")
    assert confidence_of(Decision.unreadable("x", reason="empty")) < REVIEW_BELOW


def test_classify_json_shows_confidence_for_every_decision(tmp_path):
    (tmp_path / "a.eml").write_bytes(mail("Avregistrera mig från era utskick, tack." + QUOTE_SV))
    (tmp_path / "b.eml").write_bytes(mail(LATE + "Please remove me." + QUOTE_EN))
    (tmp_path / "c.eml").write_bytes(dsn("olle@example.se"))
    result = unsubd("classify", "--json", str(tmp_path))
    assert result.returncode == 0, result.stderr
    rows = {json.loads(line)["file"].rsplit("/", 1)[-1]: json.loads(line) for line in result.stdout.splitlines()}
    for row in rows.values():
        assert {"kind", "actions", "verified", "review", "confidence", "confidence_level", "why"} <= set(row)
        assert 0 <= row["confidence"] <= 1
    assert (rows["a.eml"]["confidence_level"], rows["a.eml"]["review"]) == ("high", False)
    assert (rows["b.eml"]["confidence_level"], rows["b.eml"]["review"]) == ("low", True)
    assert rows["c.eml"]["confidence_level"] == "high"
