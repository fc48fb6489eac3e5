"""A bounce of a message that claims to be ours but was not sent by us never acts."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from handlers.context import Context
from handlers.bounces.envelope import forged_original
from handlers.classify import classify
from handlers.model import ActionType, Inbound, Kind
from tests.support import corpus
from tests.conftest import make_settings
from tests.support.messages import dsn

NOW = datetime(2026, 3, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def settings():
    return make_settings()


@pytest.mark.parametrize("original, forged", [
    (None, False),
    ({"from": "Nordvik <alumni@mail.example.org>", "message_id": "<1.abc@mail.example.org>"}, False),
    ({"from": "alumni@mail.example.org", "message_id": "<1.abc@out1.mail.example.org>"}, False),   # subdomain
    ({"from": "Nordvik <nyhetsbrev@mail.example.org>", "message_id": "<88.fake@evil.example>"}, True),
    ({"from": "Nordvik <alumni@mail.example.org>", "message_id": None}, True),
    ({"from": "Nordvik <alumni@MAIL.example.org>", "message_id": "<x@mail.example.org.evil.example>"}, True),
    ({"from": "Someone <someone@elsewhere.example>", "message_id": "<1@elsewhere.example>"}, False),  # not ours at all
    ({"from": "not an address", "message_id": "<1@evil.example>"}, False),
])
def test_forged_original_rule(settings, original, forged):
    assert (forged_original(original, Context.from_settings(settings)) is not None) is forged


def test_the_forged_dsn_of_the_mail_corpus_suppresses_nobody(settings):
    raw = (corpus.require("mail") / "m003.eml").read_bytes()
    d = classify(Inbound.from_file(raw, "m003", NOW), Context.from_settings(settings), NOW)
    assert d.kind is Kind.BOUNCE and d.actions == () and d.review
    assert "not sent by us" in d.reason and "ceo@victim.example" in str(d.evidence["recipients"])


def test_genuine_bounces_of_our_mail_still_act(settings):
    raw = (corpus.require("mail") / "m062.eml").read_bytes()
    d = classify(Inbound.from_file(raw, "m062", NOW), Context.from_settings(settings), NOW)
    assert [a.type for a in d.actions] == [ActionType.SUPPRESS] and not d.review


def test_a_dsn_returning_our_own_headers_acts(settings):
    # tests.support.messages.dsn returns our From and a Message-ID under out1.mail.example.org
    d = classify(Inbound.from_file(dsn("x@kommun-vast.example"), "t", NOW), Context.from_settings(settings), NOW)
    assert [a.type for a in d.actions] == [ActionType.SUPPRESS]
