"""Signed return paths (issue 3 item 4, 5): the token, the envelope rules, unit attribution.

Only a bounce to a return path whose signature verifies and that names the address
we sent to suppresses on its own; everything else is recorded and counted.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import assume, given, settings as hyp_settings, strategies as st

from handlers.context import Context
from handlers.complaints.arf import decide_complaint, read_arf
from handlers.bounces.envelope import read_envelope
from handlers.classify import classify
from handlers.mail.message import parse_message
from handlers.model import WILDCARD, ActionType, Inbound, Kind
from handlers.tokens import (
    Keyring,
    link_headers,
    return_path,
    sign,
    sign_return_path,
    verify,
    verify_return_path,
)
from tests.conftest import make_settings

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
SECRET_1, SECRET_2 = "r" * 40, "s" * 40
SETTINGS = make_settings(UNSUBD_TOKENS__KEYS=f'{{"k1": "{SECRET_1}"}}')
ROTATED_SETTINGS = make_settings(UNSUBD_TOKENS__KEYS=f'{{"k1": "{SECRET_1}", "k2": "{SECRET_2}"}}',
                                 UNSUBD_TOKENS__ACTIVE="k2")
STRICT = make_settings(UNSUBD_TOKENS__KEYS=f'{{"k1": "{SECRET_1}"}}',
                       UNSUBD_BOUNCES__REQUIRE_SIGNED_RETURN_PATH="true")
K1 = Keyring({"k1": SECRET_1.encode()}, "k1")
K2 = Keyring({"k2": SECRET_2.encode()}, "k2")
ROTATED = Keyring({"k1": SECRET_1.encode(), "k2": SECRET_2.encode()}, "k2")
UNITS = ("alumni", "research-news", "student-comms", "events")
B32 = "abcdefghijklmnopqrstuvwxyz234567"


def verp(contact_id: int, address: str, unit: str = "alumni", keyring: Keyring = K1) -> str:
    return return_path(sign_return_path(contact_id, address, unit, keyring), "bounces", "mail.example.org")


# --------------------------------------------------------------------------- the token


def test_round_trip_in_either_case_and_within_64_octets():
    token = sign_return_path(12345, "anna@example.se", "research-news", K1)
    assert set(token) <= set(B32)
    assert len("bounces+" + token) <= 64
    for text in (token, token.upper()):
        claims = verify_return_path(text, K1, UNITS)
        assert claims is not None and claims.contact_id == 12345 and claims.unit == "research-news"
        assert claims.names("anna@example.se") and not claims.names("anna@example.no")
    assert verify_return_path(sign_return_path(7, "a@b.se", WILDCARD, K1), K1, UNITS).unit == WILDCARD


def test_the_secret_never_shows_in_repr():
    claims = verify_return_path(sign_return_path(1, "a@b.se", "alumni", K1), K1, UNITS)
    assert SECRET_1 not in repr(claims) and "secret" not in repr(claims)


def test_a_renamed_unit_verifies_without_a_unit():
    claims = verify_return_path(sign_return_path(3, "a@b.se", "old-unit", K1), K1, UNITS)
    assert claims is not None and claims.unit is None


@hyp_settings(max_examples=200)
@given(st.integers(1, 2**40), st.sampled_from(UNITS + (WILDCARD,)), st.integers(0, 200), st.sampled_from(B32))
def test_no_modified_token_is_accepted(contact_id, unit, position, char):
    token = sign_return_path(contact_id, "anna@example.se", unit, K1)
    i = position % len(token)
    assume(token[i] != char)
    changed = token[:i] + char + token[i + 1:]
    assert verify_return_path(changed, K1, UNITS) is None
    assert verify_return_path(token[:i] + token[i + 1:], K1, UNITS) is None
    assert verify_return_path(token + char, K1, UNITS) is None


@given(st.text(max_size=80))
def test_garbage_never_verifies_and_never_raises(text):
    assert verify_return_path(text, K1, UNITS) is None


def test_rotation_keeps_old_return_paths_working_and_drops_retired_keys():
    old = sign_return_path(5, "a@b.se", "alumni", K1)
    assert verify_return_path(old, ROTATED, UNITS).key_id == "k1"
    assert verify_return_path(sign_return_path(5, "a@b.se", "alumni", ROTATED), ROTATED, UNITS).key_id == "k2"
    assert verify_return_path(old, K2, UNITS) is None


def test_link_tokens_and_return_path_tokens_do_not_pass_for_each_other():
    link = sign(5, "alumni", "email", K1)
    rp = sign_return_path(5, "a@b.se", "alumni", K1)
    assert verify_return_path(link.lower(), K1, UNITS) is None
    assert verify(rp, K1) is None


# --------------------------------------------------------------------------- bounces


def dsn(recipient: str, status: str = "5.1.1", original_headers: str = "") -> bytes:
    original = original_headers or ("From: Alumninytt <alumni@mail.example.org>\nTo: x\n"
                                    "Message-ID: <m1@mail.example.org>\nSubject: Hej\n")
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\nTo: bounces@mail.example.org\n"
        "Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n"
        "--b\nContent-Type: text/plain\n\nDelivery failed.\n"
        "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
        f"Final-Recipient: rfc822; {recipient}\nAction: failed\nStatus: {status}\n\n"
        f"--b\nContent-Type: text/rfc822-headers\n\n{original}\n--b--\n"
    ).encode()


def bounce_to(rcpt: str, raw: bytes, settings=SETTINGS):
    return classify(Inbound.from_smtp(raw, "", [rcpt], NOW), Context.from_settings(settings), NOW)


def test_a_signed_return_path_naming_the_address_suppresses_with_certainty():
    d = bounce_to(verp(42, "anna@example.se", "research-news"), dsn("Anna@Example.se"))
    (action,) = d.actions
    assert action.type is ActionType.SUPPRESS and action.address == "anna@example.se"
    assert d.verified is True
    assert d.evidence["return_path"] == {"form": "signed", "contact_id": 42, "unit": "research-news", "key_id": "k1"}
    assert d.evidence["recipients"][0]["sent_to"] is True
    assert (d.evidence["unit"], d.evidence["unit_source"]) == ("research-news", "signed return path")


def test_uppercased_return_path_still_verifies():
    rcpt = verp(42, "anna@example.se").upper()
    d = bounce_to(rcpt, dsn("anna@example.se"))
    assert d.actions[0].type is ActionType.SUPPRESS and d.verified


def test_a_signed_return_path_for_another_address_never_suppresses_the_named_one():
    # We sent to anna; the bounce names carl (a forward, or someone using anna's return path).
    d = bounce_to(verp(42, "anna@example.se"), dsn("carl@example.dk"))
    (action,) = d.actions
    assert action.type is ActionType.SOFT_BOUNCE and action.address == "carl@example.dk"
    assert d.verified is False
    assert "signed return path was issued for" in d.evidence["recipients"][0]["why_not_suppressed"]


@pytest.mark.parametrize("tag", [
    "aebgwmnzmccir3v5veoiudkaclpg7sgjti",           # well-formed base32, wrong MAC
    "x" * 30,
    "not-a-token",
])
def test_a_return_path_whose_signature_does_not_verify_is_recorded_only(tag):
    d = bounce_to(f"bounces+{tag}@mail.example.org", dsn("anna@example.se"))
    # Evidence of forgery (issue 22): recorded, never suppressed and never counted as a
    # soft bounce; `hard` still reports what the bounce says.
    assert d.actions == () and not d.review
    row = d.evidence["recipients"][0]
    assert row["hard"] is True and row["outcome"] is None and row["proposed"] == "suppress"
    assert d.evidence["return_path"]["form"] == "forged" and d.verified is False
    assert "forgery" in row["why_none"] and d.evidence["suspect"] == ["bounce_forged_return_path"]


def test_a_return_path_signed_with_a_key_we_no_longer_have_is_recorded_only():
    # A retired key is indistinguishable from a forgery: keep old keys in tokens.keys
    # while mail signed with them may still bounce.
    d = bounce_to(verp(42, "anna@example.se", keyring=K2), dsn("anna@example.se"))
    assert d.actions == () and d.evidence["return_path"]["form"] == "forged"


def test_rotated_keys_keep_attributing_old_bounces():
    d = bounce_to(verp(42, "anna@example.se", keyring=K1), dsn("anna@example.se"), ROTATED_SETTINGS)
    assert d.actions[0].type is ActionType.SUPPRESS and d.evidence["return_path"]["key_id"] == "k1"


def test_the_plain_bounce_address_suppresses_unless_signatures_are_required():
    assert bounce_to("bounces@mail.example.org", dsn("anna@example.se")).actions[0].type is ActionType.SUPPRESS
    strict = bounce_to("bounces@mail.example.org", dsn("anna@example.se"), STRICT)
    assert strict.actions[0].type is ActionType.SOFT_BOUNCE
    assert "require_signed_return_path" in strict.evidence["recipients"][0]["why_not_suppressed"]
    signed = bounce_to(verp(42, "anna@example.se"), dsn("anna@example.se"), STRICT)
    assert signed.actions[0].type is ActionType.SUPPRESS


def test_delays_never_count_even_when_signed():
    raw = dsn("anna@example.se", status="4.2.2").replace(b"Action: failed", b"Action: delayed")
    d = bounce_to(verp(42, "anna@example.se"), raw)
    assert d.kind is Kind.BOUNCE and d.actions == ()


def test_a_signed_return_path_outweighs_an_original_that_looks_forged():
    # From claims our unit, Message-ID is foreign: normally held for review; a valid
    # signature for exactly this address proves we sent the message.
    forged_look = "From: alumni@mail.example.org\nMessage-ID: <x@evil.example>\nSubject: Hej\n"
    unsigned = bounce_to("bounces@mail.example.org", dsn("anna@example.se", original_headers=forged_look))
    assert unsigned.actions == () and unsigned.review
    signed = bounce_to(verp(42, "anna@example.se"), dsn("anna@example.se", original_headers=forged_look))
    assert signed.actions[0].type is ActionType.SUPPRESS and not signed.review


def test_text_bounces_follow_the_same_rules():
    qmail = (b"From: MAILER-DAEMON@mx.example.net\nTo: bounces@mail.example.org\n"
             b"Subject: failure notice\n\nHi. This is the qmail-send program at mx.example.net.\n"
             b"I'm afraid I wasn't able to deliver your message to the following addresses.\n"
             b"This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
             b"<anna@example.se>:\n550 5.1.1 mailbox anna does not exist\n")
    signed = bounce_to(verp(42, "anna@example.se"), qmail)
    assert signed.actions[0].type is ActionType.SUPPRESS and signed.verified
    forged = bounce_to("bounces+" + "a" * 34 + "@mail.example.org", qmail)
    assert forged.actions == () and forged.evidence["recipients"][0]["proposed"] == "suppress"


def test_envelope_forms():
    def form(rcpt: str) -> str:
        return read_envelope(Inbound.from_smtp(b"", "", [rcpt], NOW), Context.from_settings(SETTINGS)).form
    assert form(verp(1, "a@b.se")) == "signed"
    assert form("bounces+anna=example.se@mail.example.org") == "unsigned"
    assert form("bounces+zzzz@mail.example.org") == "forged"
    assert form("bounces@mail.example.org") == "plain"
    assert form("alumni@mail.example.org") == "none"
    assert read_envelope(Inbound.from_file(b"", "x.eml", NOW), Context.from_settings(SETTINGS)).form == "none"


# --------------------------------------------------------------------------- unit attribution


@pytest.mark.parametrize("headers,unit,how", [
    ("List-Id: Forskningsnytt <forskningsnytt.mail.example.org>\nFrom: x@example.net\n", "research-news",
     "List-Id of the original"),
    ("From: Studentinfo <studentinfo@mail.example.org>\n", "student-comms", "From of the original"),
    ("From: news@sender.example\nList-Unsubscribe: <https://u.example.org/u/{link}>\n", "events",
     "List-Unsubscribe token of the original"),
    ("From: news@sender.example\nReturn-Path: <{rp}>\n", "alumni", "signed Return-Path of the original"),
])
def test_unit_from_the_returned_original(headers, unit, how):
    headers = headers.format(link=sign(9, "events", "email", K1), rp=verp(9, "anna@example.se", "alumni"))
    raw = dsn("anna@example.se", original_headers=headers + "Message-ID: <m@mail.example.org>\n")
    d = bounce_to("bounces@mail.example.org", raw)
    assert (d.evidence["unit"], d.evidence["unit_source"]) == (unit, how)


def test_unit_from_the_envelope_recipient_when_the_original_says_nothing():
    raw = dsn("anna@example.se", original_headers="Subject: hej\nMessage-ID: <m@mail.example.org>\n")
    d = bounce_to("events@mail.example.org", raw)
    assert (d.evidence["unit"], d.evidence["unit_source"]) == ("events", "envelope recipient")
    assert bounce_to("bounces@mail.example.org", raw).evidence["unit"] is None


# --------------------------------------------------------------------------- complaints


def arf(original_headers: str, rcpt: str = "") -> bytes:
    rcpt_line = f"Original-Rcpt-To: {rcpt}\n" if rcpt else ""
    return (
        "From: fbl@isp.example\nTo: fbl@mail.example.org\nSubject: complaint\nMIME-Version: 1.0\n"
        "Content-Type: multipart/report; report-type=feedback-report; boundary=f\n\n"
        "--f\nContent-Type: text/plain\n\nA complaint.\n"
        "--f\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\nUser-Agent: isp/1\nVersion: 1\n"
        f"{rcpt_line}\n"
        f"--f\nContent-Type: text/rfc822-headers\n\n{original_headers}\n--f--\n"
    ).encode()


def complaint(raw: bytes):
    report = read_arf(parse_message(raw))
    assert report is not None
    return decide_complaint(Inbound.from_smtp(raw, "fbl@isp.example", ["fbl@mail.example.org"], NOW), report,
                            Context.from_settings(SETTINGS), NOW)


def test_a_redacted_complaint_is_attributed_by_the_signed_return_path():
    d = complaint(arf(f"Return-Path: <{verp(77, 'anna@example.se', 'events')}>\nTo: redacted@isp.example\n"
                      "Subject: hej\n"))
    assert not d.review and d.verified
    assert {a.type for a in d.actions} == {ActionType.SUPPRESS, ActionType.UNSUBSCRIBE}
    assert all(a.contact_id == 77 and a.address == "" for a in d.actions)
    unsubscribe = next(a for a in d.actions if a.type is ActionType.UNSUBSCRIBE)
    assert unsubscribe.units == ("events",) and unsubscribe.channels == ("email",)
    assert d.evidence["token_contact_id"] == 77


def test_a_complaint_takes_the_original_to_only_when_the_signed_token_names_it():
    named = complaint(arf(f"Return-Path: <{verp(77, 'anna@example.se')}>\nTo: anna@example.se\n"))
    assert {a.address for a in named.actions} == {"anna@example.se"} and named.verified
    other = complaint(arf(f"Return-Path: <{verp(77, 'anna@example.se')}>\nTo: victim@example.org\n"))
    assert all(a.address == "" and a.contact_id == 77 for a in other.actions)


def test_a_complaint_with_our_list_unsubscribe_token_finds_contact_and_unit():
    link = link_headers(sign(31, "research-news", "email", K1), "https://u.example.org", "unsubscribe",
                        "mail.example.org")["List-Unsubscribe"]
    d = complaint(arf(f"List-Unsubscribe: {link}\nSubject: hej\n"))
    assert d.verified and all(a.contact_id == 31 for a in d.actions)
    assert d.evidence["unit"] == "research-news"


def test_a_complaint_with_a_forged_return_path_token_goes_to_review():
    d = complaint(arf("Return-Path: <bounces+" + "b" * 34 + "@mail.example.org>\nSubject: hej\n"))
    assert d.review and d.actions == ()


# --------------------------------------------------------------------------- end to end


async def test_over_smtp_a_signed_bounce_suppresses_and_a_forged_one_is_only_recorded(sqlite_url):
    """`unsubd token`'s return path, a real SMTP session, the embedded database."""
    import asyncio

    from sqlalchemy import select

    from worker.app import Worker
    from worker.ops.contacts import import_rows, parse_csv
    from worker.store.keys import keyring_for
    from worker.ingress.links import issue
    from worker.store.models import Event, SoftBounce, Suppression
    from tests.integration.test_smtp import send, wait_for

    w = Worker(make_settings(sqlite_url))          # embedded: the key file beside the database
    await w.start()
    try:
        await import_rows(w.db, parse_csv("address\nanna@example.se\nbo@example.se\n", w.settings), NOW, "t.csv")
        issued = await issue(w.db.sessions, w.settings, keyring_for(w.settings), "anna@example.se", "alumni")
        assert issued is not None
        port = w.smtp_address[1]
        assert await asyncio.to_thread(send, port, dsn("anna@example.se"), [issued.return_path], "") == {}
        # Someone who knows bo's address but holds no key forges a bounce about him.
        forged = "bounces+" + "q" * 34 + "@mail.example.org"
        assert await asyncio.to_thread(send, port, dsn("bo@example.se"), [forged], "") == {}

        async def settled():
            async with w.db.sessions() as s:
                events = (await s.scalars(select(Event).where(Event.kind == "bounce"))).all()
                return events if len(events) == 2 else None

        events = await wait_for(settled)
        async with w.db.sessions() as s:
            suppressed = {(x.address, x.reason) for x in (await s.scalars(select(Suppression))).all()}
            soft = [x.address for x in (await s.scalars(select(SoftBounce))).all()]
        assert suppressed == {("anna@example.se", "hard_bounce")}
        assert soft == []                                   # a forged tag never counts (issue 22)
        verified = {e.evidence["return_path"]["form"]: e.verified for e in events}
        assert verified == {"signed": True, "forged": False}
    finally:
        await w.stop()


async def test_a_redacted_complaint_reaches_the_token_contact_in_the_database(database):
    from sqlalchemy import select

    from handlers.state.apply import apply
    from worker.ops.contacts import import_rows, parse_csv
    from worker.store.models import Address, Preference, Suppression

    await import_rows(database, parse_csv("address\ncecilia@example.se\n", SETTINGS), NOW, "t.csv")
    async with database.sessions() as s:
        contact_id = (await s.scalars(select(Address.contact_id))).one()
    raw = arf(f"Return-Path: <{verp(contact_id, 'cecilia@example.se', 'events')}>\nTo: x@isp.example\n")
    # From a proven feedback loop (issue 22): our MTA stamps isp.example's verified signature.
    raw = b"Authentication-Results: mx.mail.example.org; dkim=pass header.d=isp.example\n" + raw
    fbl = make_settings(UNSUBD_TOKENS__KEYS=f'{{"k1": "{SECRET_1}"}}',
                        UNSUBD_TRUSTED_AUTHSERV_IDS='["mx.mail.example.org"]',
                        UNSUBD_COMPLAINTS__FBL_SOURCES='["isp.example"]')
    d = classify(Inbound.from_smtp(raw, "fbl@isp.example", ["fbl@mail.example.org"], NOW), Context.from_settings(fbl),
                 NOW)
    assert d.kind is Kind.COMPLAINT and d.verified
    await apply(d, database.unit_of_work(), NOW)
    async with database.sessions() as s:
        prefs = {(p.unit, p.channel): p.state for p in (await s.scalars(select(Preference))).all()}
        suppressions = [(x.address, x.reason) for x in (await s.scalars(select(Suppression))).all()]
    assert prefs == {("events", "email"): "unsubscribed"}            # that unit only
    assert suppressions == [("cecilia@example.se", "complaint")]


def test_reply_addresses_carry_the_token_within_64_octets():
    from handlers.tokens import reply_address

    token = sign(5, "alumni", "email", K1)
    assert reply_address(token, "alumni@mail.example.org") == f"alumni+{token}@mail.example.org"
    assert reply_address(token, "a-very-long-reply-local-part-for-a-unit@mail.example.org") is None
    assert reply_address(token, "not-an-address") is None
