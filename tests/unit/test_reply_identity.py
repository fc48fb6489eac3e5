"""Whose address: strict From parsing and hostile input."""

from __future__ import annotations

import pytest

from handlers import Kind
from handlers.mail.from_header import parse_mailbox
from tests.support.reply_samples import decide, mail


@pytest.mark.parametrize("raw,address", [
    ("anna.berg@example.se", "anna.berg@example.se"),
    ("Anna Berg <Anna.Berg@Example.SE>", "anna.berg@example.se"),
    ('"Berg, Anna" <anna.berg@example.se>', "anna.berg@example.se"),
    ("=?utf-8?q?Bj=C3=B8rn?= <bjorn@example.no>", "bjorn@example.no"),
    ("anna.berg@example.se (Anna Berg)", "anna.berg@example.se"),
])
def test_strict_from_accepts(raw: str, address: str) -> None:
    assert parse_mailbox(raw).address == address


@pytest.mark.parametrize("raw", [
    "alice@victim.example<bob@evil.example>",             # CVE-2023-27043
    "alice@victim.example@evil.example",
    '"alice@victim.example" <attacker@evil.example>',
    "=?utf-8?q?alice=40victim=2Eexample?= <attacker@evil.example>",
    "=?utf-8?q?x_=3Calice=40victim=2Eexample=3E?= <attacker@evil.example>",
    "a@example.se, b@example.se",
    "Group: a@example.se;",
    "<a@example.se> <b@example.se>",
    "=?utf-8?q?alice?=@victim.example",
    '"unterminated <a@example.se>',
    "",
])
def test_strict_from_refuses(raw: str) -> None:
    assert parse_mailbox(raw).address is None


def test_forged_from_never_acts_on_victim() -> None:
    for sender in ("alice@victim.example<bob@evil.example>", '"alice@victim.example" <bob@evil.example>',
                   "alice@victim.example@evil.example"):
        decision = decide(mail("Unsubscribe me from everything.", subject="Unsubscribe", sender=sender))
        assert decision.review and not any("victim" in a.address for a in decision.actions)


def test_duplicate_from_goes_to_review() -> None:
    raw = mail("Avregistrera mig", subject="Avregistrera", extra="From: other@example.se\n")
    decision = decide(raw)
    assert decision.review and decision.actions == ()


def test_third_party_named_address_is_review_not_action() -> None:
    decision = decide(mail("I am writing on behalf of ceo@victim.example: please unsubscribe him.",
                           subject="Unsubscribe", sender="pa@evil.example"))
    assert decision.review and decision.actions == ()
    assert "ceo@victim.example" in decision.evidence["named_addresses"]


def test_old_address_named_is_proposed_for_review_only() -> None:
    decision = decide(mail("Please remove my old address anna.old@example.se from your list."))
    assert decision.review and decision.kind is Kind.OPTOUT


def test_list_unsubscribe_mailto_is_an_optout_even_if_automatic() -> None:
    raw = mail("This message was automatically generated.", subject="unsubscribe",
               to="unsubscribe+TOKEN1@mail.example.org", extra="Auto-Submitted: auto-replied\n")
    decision = decide(raw, rcpt=("unsubscribe+TOKEN1@mail.example.org",))
    assert decision.kind is Kind.OPTOUT and decision.actions[0].address == "anna.berg@example.se"
    assert decision.evidence["token"] == "TOKEN1"


@pytest.mark.parametrize("raw", [
    b"From: a@example.se\nSubject: Unsubscribe\nContent-Type: multipart/mixed; boundary=x\n\n--x\nbroken",
    b"From: a@example.se\nSubject: " + b"A" * 1_000_000 + b"\n\nunsubscribe",
    b"From: a@example.se\x00\nSubject: \x00\xff\xfe\n\n\x00unsubscribe",
    b"From: =?x-unknown?q?=FF?= <a@example.se>\nSubject: =?utf-8?b?!!!?=\n\nAvregistrera",
    b"From: a@example.se\nContent-Type: text/plain; charset=nonsense\n\n\xe5\xe4\xf6 avregistrera",
    b"From: a@example.se\nContent-Type: text/html\n\n<p>Avregistrera</p><blockquote>unsubscribe</blockquote>",
    b"\n\n\n",
    b"From: a@example.se\nContent-Type: message/rfc822\n\n" + b"Content-Type: message/rfc822\n\n" * 300 + b"unsubscribe",
])
def test_hostile_input_never_raises(raw: bytes) -> None:
    decision = decide(raw)
    assert "classifier error" not in decision.reason
    assert not any("victim" in a.address for a in decision.actions)
