"""read_dsn / decide_bounce on small hand-written delivery status notifications."""

from __future__ import annotations

import base64
import json
import pickle
from datetime import datetime, timezone
from pathlib import Path

import pytest

import config
from handlers.context import Context
from handlers import ALL, ActionType, Decision, Inbound, Kind, classify
from handlers.bounces.dsn import (
    BounceReason,
    DsnReport,
    decide_bounce,
    effective_status,
    read_dsn,
    recipient_address,
)
from handlers.bounces.reasons import status_meaning
from handlers.mail.message import describe_defects, header_text, parse_message

NOW = datetime(2026, 2, 1, 12, 0, tzinfo=timezone.utc)
ROOT = Path(__file__).resolve().parents[2]
BOUNDARY = "b0undary.4711/mx.example.net"


@pytest.fixture(scope="module")
def settings() -> config.Settings:
    return config.load({}, ROOT / "config" / "example.toml")


def make_dsn(*groups: str, per_message: str = "Reporting-MTA: dns; mx.example.net",
             nl: str = "\r\n", original: str | None = None, original_type: str = "message/rfc822",
             status_type: str = "message/delivery-status", status_headers: str = "",
             container: str = "multipart/report; report-type=delivery-status") -> bytes:
    """A DSN in the usual three-part layout; groups are blank-line separated blocks."""
    body = "\n\n".join([per_message, *groups]) if per_message else "\n\n".join(groups)
    text = f"""Return-Path: <>
From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
To: bounces+anna=example.se@mail.example.org
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: {container}; boundary="{BOUNDARY}"

--{BOUNDARY}
Content-Type: text/plain; charset=us-ascii

Your message could not be delivered.

--{BOUNDARY}
Content-Type: {status_type}
{status_headers}
{body}
"""
    if original is not None:
        text += f"""
--{BOUNDARY}
Content-Type: {original_type}

{original}
"""
    text += f"--{BOUNDARY}--\n"
    return text.replace("\n", nl).encode("utf-8")


# No units, no keys, nothing of ours at mail.example.org: the report alone decides.
BARE = Context(mail_domain="localhost", effective_bounce_domain="localhost")


def decide(raw: bytes, settings: config.Settings | None = None) -> Decision:
    msg = parse_message(raw)
    report = read_dsn(msg)
    assert report is not None, "not read as a DSN"
    item = Inbound.from_smtp(raw, "", ["bounces@mail.example.org"], NOW)
    return decide_bounce(item, report, Context.from_settings(settings) if settings else BARE, NOW)


def group(final: str | None, action: str | None, status: str | None, diag: str | None = None,
          original: str | None = None) -> str:
    lines = []
    if original is not None:
        lines.append(f"Original-Recipient: {original}")
    if final is not None:
        lines.append(f"Final-Recipient: {final}")
    if action is not None:
        lines.append(f"Action: {action}")
    if status is not None:
        lines.append(f"Status: {status}")
    if diag is not None:
        lines.append(f"Diagnostic-Code: {diag}")
    return "\n".join(lines)


def test_hard_5_1_1_suppresses(settings: config.Settings) -> None:
    d = decide(make_dsn(group("rfc822; Anna@Example.SE", "failed", "5.1.1",
                              "smtp; 550 5.1.1 <anna@example.se>: Recipient address rejected: User unknown")),
               settings)
    assert d.kind is Kind.BOUNCE and not d.review and not d.verified
    (action,) = d.actions
    assert action.type is ActionType.SUPPRESS and action.hard is True
    assert action.address == "anna@example.se"
    assert (action.status, action.reason) == ("5.1.1", "user_unknown")
    assert action.units == ALL and action.channels == ("email",)
    assert action.diagnostic and action.diagnostic.startswith("550 5.1.1")
    assert d.reason == "dsn: 1 failed (5.1.1 user_unknown)"
    assert d.evidence["reporting_mta"] == "dns; mx.example.net"


def test_mailbox_full_5_2_2_is_soft() -> None:
    d = decide(make_dsn(group("rfc822; anna@example.se", "failed", "5.2.2", "smtp; 552 5.2.2 Over quota")))
    (action,) = d.actions
    assert action.type is ActionType.SOFT_BOUNCE and action.hard is False
    assert action.reason == "mailbox_full"


def test_delayed_4xx_gives_no_action_but_is_recorded() -> None:
    d = decide(make_dsn(group("rfc822; anna@example.se", "delayed", "4.4.1", "smtp; 421 try later")))
    assert d.actions == ()
    assert d.evidence["recipients"][0]["action"] == "delayed"
    assert d.evidence["recipients"][0]["address"] == "anna@example.se"
    assert d.reason == "dsn: 1 delayed"


@pytest.mark.parametrize("action", ["relayed", "expanded"])
def test_non_failure_actions_give_nothing(action: str) -> None:
    assert decide(make_dsn(group("rfc822; anna@example.se", action, "2.0.0"))).actions == ()


def test_a_delivery_report_is_a_sign_of_life_only() -> None:
    (action,) = decide(make_dsn(group("rfc822; anna@example.se", "delivered", "2.0.0"))).actions
    assert action.type is ActionType.DELIVERED and action.hard is False
    # Failed and delivered for one address in one report: the failure stands.
    (both,) = decide(make_dsn(group("rfc822; anna@example.se", "delivered", "2.0.0"),
                              group("rfc822; anna@example.se", "failed", "4.2.2"))).actions
    assert both.type is ActionType.SOFT_BOUNCE


def test_multiple_recipients() -> None:
    d = decide(make_dsn(
        group("rfc822; a@example.se", "failed", "5.1.1"),
        group("rfc822; b@example.se", "failed", "5.2.2"),
        group("rfc822; c@example.se", "delayed", "4.2.2"),
        group("rfc822; d@example.se", "failed", "5.2.1"),
    ))
    got = {(a.address, a.type, a.hard) for a in d.actions}
    assert got == {
        ("a@example.se", ActionType.SUPPRESS, True),
        ("b@example.se", ActionType.SOFT_BOUNCE, False),
        ("d@example.se", ActionType.SUPPRESS, True),
    }
    assert d.reason.startswith("dsn: 3 failed (") and d.reason.endswith(", 1 delayed")
    assert len(d.evidence["recipients"]) == 4


@pytest.mark.parametrize("diag, expected, hard, reason", [
    ("smtp; 550 5.1.1 <anna@example.se>: User unknown", "5.1.1", True, "user_unknown"),
    ("smtp; 550-5.1.1 The email account that you tried to reach does not exist", "5.1.1", True, "user_unknown"),
    ("smtp; 550 #5.1.0 Address rejected", "5.1.0", True, "user_unknown"),
    ("smtp; 550 host 192.0.2.55 said: no", "5.0.0", False, "other"),   # an IP address is not a status code
    ("smtp; 550 4.2.2 mailbox full", "5.0.0", False, "mailbox_full"),   # class differs from Status: not used
    # The generic 5.0.0 is kept as written, but the words name the reason: no mail host.
    ("X-Exim; Unrouteable address", "5.0.0", True, "host_unknown"),
])
def test_generic_status_refined_from_diagnostic(diag: str, expected: str, hard: bool, reason: str) -> None:
    d = decide(make_dsn(group("rfc822; anna@example.se", "failed", "5.0.0", diag)))
    assert d.actions[0].status == expected
    assert d.actions[0].hard is hard
    assert d.actions[0].reason == reason


@pytest.mark.parametrize("nl", ["\r\n", "\n"], ids=["crlf", "lf"])
def test_line_endings_do_not_matter(nl: str) -> None:
    raw = make_dsn(group("rfc822; a@example.se", "failed", "5.1.1",
                         "smtp; 550 5.1.1 user\n    unknown here"),
                   group("rfc822; b@example.se", "delayed", "4.4.7"), nl=nl)
    d = decide(raw)
    assert [(a.address, a.type) for a in d.actions] == [("a@example.se", ActionType.SUPPRESS)]
    assert d.actions[0].diagnostic == "550 5.1.1 user unknown here"   # folded line unfolded


def test_missing_action_with_permanent_status_is_failed() -> None:
    d = decide(make_dsn(group("rfc822; anna@example.se", None, "5.1.1")))
    assert d.actions[0].type is ActionType.SUPPRESS


def test_missing_action_with_transient_status_gives_nothing() -> None:
    d = decide(make_dsn(group("rfc822; anna@example.se", None, "4.4.1")))
    assert d.actions == ()


def test_unknown_action_word_with_permanent_status_is_failed() -> None:
    d = decide(make_dsn(group("rfc822; anna@example.se", "error", "5.0.0")))
    assert d.actions[0].type is ActionType.SOFT_BOUNCE


@pytest.mark.parametrize("final", [
    "rfc822; not an address",
    "rfc822; alice@victim.example@evil.example",
    "rfc822; <>",
    "rfc822;",
    "rfc822; \"quoted local\"@example.se",
    "x400; /S=anna/O=example/C=SE/",
])
def test_unusable_final_recipient_falls_back_to_original_recipient(final: str) -> None:
    # Issue 21: a Final-Recipient that is not an address (or not one anybody sends to)
    # gives way to the Original-Recipient, the address as the sender gave it
    # (RFC 3464 section 2.3.1). Both are kept in evidence.
    d = decide(make_dsn(group(final, "failed", "5.1.1", original="rfc822; alice@victim.example")))
    assert [a.address for a in d.actions] == ["alice@victim.example"]
    (row,) = d.evidence["recipients"]
    assert row["address"] == "alice@victim.example" and row["final_recipient"] == final.strip()
    assert row["address_source"] == "original-recipient"
    assert row["original_address"] == "alice@victim.example"


def test_unusable_final_recipient_without_original_gives_no_action() -> None:
    d = decide(make_dsn(group("rfc822; not an address", "failed", "5.1.1")))
    assert d.actions == ()
    (row,) = d.evidence["recipients"]
    assert row["address"] is None
    assert "without a usable address" in d.reason


def test_original_recipient_used_when_final_is_absent() -> None:
    d = decide(make_dsn(group(None, "failed", "5.1.1", original="rfc822;anna@example.se")))
    assert d.actions[0].address == "anna@example.se"


def test_stray_angle_bracket_is_tolerated() -> None:
    d = decide(make_dsn(group("RFC822; anna@example.se>", "failed", "5.1.1")))
    assert d.actions[0].address == "anna@example.se"


def test_no_status_uses_reply_code_class() -> None:
    d = decide(make_dsn(group("rfc822; anna@example.se", "failed", None, "smtp; 550 Requested action not taken")))
    assert (d.actions[0].status, d.actions[0].type) == ("5.0.0", ActionType.SOFT_BOUNCE)
    assert d.evidence["recipients"][0]["status_source"] == "reply_code"


def test_no_status_uses_enhanced_code_in_diagnostic() -> None:
    d = decide(make_dsn(group("rfc822; anna@example.se", "failed", None, "smtp; 550 5.1.1 No such user")))
    assert (d.actions[0].status, d.actions[0].type) == ("5.1.1", ActionType.SUPPRESS)


def test_no_status_at_all_is_soft() -> None:
    d = decide(make_dsn(group("rfc822; anna@example.se", "failed", None)))
    assert (d.actions[0].status, d.actions[0].type, d.actions[0].reason) == (None, ActionType.SOFT_BOUNCE, "other")


def test_missing_blank_lines_between_blocks() -> None:
    body = ("Reporting-MTA: dns; mx.example.net\n"
            "Final-Recipient: rfc822; a@example.se\nAction: failed\nStatus: 5.1.1\n"
            "Final-Recipient: rfc822; b@example.se\nAction: delayed\nStatus: 4.4.1\n"
            "Original-Recipient: rfc822; c@example.se\n"
            "Final-Recipient: rfc822; c@example.se\nAction: failed\nStatus: 5.2.2")
    d = decide(make_dsn(body, per_message=""))
    rows = d.evidence["recipients"]
    assert [(r["address"], r["action"], r["status"]) for r in rows] == [
        ("a@example.se", "failed", "5.1.1"), ("b@example.se", "delayed", "4.4.1"), ("c@example.se", "failed", "5.2.2"),
    ]
    assert rows[2]["original_address"] == "c@example.se" and rows[1]["original_address"] is None
    assert d.evidence["reporting_mta"] == "dns; mx.example.net"
    assert any("blank line" in n for n in d.evidence["notes"])


def test_junk_lines_are_ignored() -> None:
    body = ("Final-Recipient: rfc822; a@example.se\n"
            "this line is not a field\n"
            "Action: failed\nStatus: 5.1.1 (user unknown)\n")
    d = decide(make_dsn(body))
    assert d.actions[0].address == "a@example.se" and d.actions[0].type is ActionType.SUPPRESS
    assert any("not fields" in n for n in d.evidence["notes"])


def test_same_address_twice_hard_wins() -> None:
    d = decide(make_dsn(group("rfc822; a@example.se", "failed", "5.2.2"),
                        group("rfc822; A@example.se", "failed", "5.1.1")))
    (action,) = d.actions
    assert action.hard is True


def test_returned_original_headers_in_evidence() -> None:
    original = ("From: Alumninytt <alumni@mail.example.org>\nTo: anna@example.se\n"
                "Message-ID: <1@mail.example.org>\nList-Id: Alumninytt <alumni.mail.example.org>\n"
                "X-NV-Recipient-Id: 79e3b0d0\nSubject: =?utf-8?q?Hej_d=C3=A5?=\n\nHello\n")
    for kind in ("message/rfc822", "text/rfc822-headers"):
        d = decide(make_dsn(group("rfc822; anna@example.se", "failed", "5.1.1"), original=original,
                            original_type=kind))
        assert d.evidence["original"] == {
            "message_id": "<1@mail.example.org>", "from": "Alumninytt <alumni@mail.example.org>",
            "to": "anna@example.se", "x_original_to": None, "list_id": "Alumninytt <alumni.mail.example.org>",
            "recipient_id": "79e3b0d0", "return_path": None, "list_unsubscribe": None,
        }, kind


def test_global_delivery_status_utf8() -> None:
    body = group("utf-8; anna@bücher.example", "failed", "5.1.1")
    d = decide(make_dsn(body, status_type="message/global-delivery-status"))
    assert d.actions[0].address == "anna@bücher.example"
    assert d.evidence["report_type"] == "global-delivery-status"


def test_base64_status_part() -> None:
    payload = "Reporting-MTA: dns; mx.example.net\n\n" + group("rfc822; anna@example.se", "failed", "5.1.1")
    encoded = base64.encodebytes(payload.encode()).decode()
    d = decide(make_dsn(encoded, per_message="", status_headers="Content-Transfer-Encoding: base64\n"))
    assert d.actions[0].address == "anna@example.se"


def test_status_part_inside_multipart_mixed_is_accepted() -> None:
    d = decide(make_dsn(group("rfc822; anna@example.se", "failed", "5.1.1"), container="multipart/mixed"))
    assert d.actions[0].address == "anna@example.se"


def test_not_a_dsn() -> None:
    assert read_dsn(parse_message(b"From: a@example.se\r\nSubject: hi\r\n\r\nhello\r\n")) is None


def test_report_fields_in_a_text_part_of_a_bounce_are_read() -> None:
    # The report part mislabelled text/plain: its fields are still the report.
    mislabelled = make_dsn(group("rfc822; a@example.se", "failed", "5.1.1"), status_type="text/plain")
    report = read_dsn(parse_message(mislabelled))
    assert report is not None and "report fields read from the message text" in report.notes[0]
    assert [recipient_address(r)[0] for r in report.recipients] == ["a@example.se"]


def test_report_fields_quoted_by_a_person_are_not_a_report() -> None:
    raw = (b"From: Anna <anna@example.se>\r\nTo: support@example.org\r\nSubject: why?\r\n\r\n"
           b"I got this, what does it mean?\r\n\r\nFinal-Recipient: rfc822; bo@example.se\r\n"
           b"Action: failed\r\nStatus: 5.1.1\r\n")
    assert read_dsn(parse_message(raw)) is None


def test_multipart_report_without_boundary_is_read_from_its_text() -> None:
    raw = (b"From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.net>\r\nTo: news@example.org\r\n"
           b"Subject: Returned mail: Service unavailable\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/report; report-type=delivery-status;\r\n\r\n"
           b"The original message was received at Mon, 2 Feb 2026 10:00:00 +0100\r\n\r\n"
           b"Reporting-MTA: dns; mx.example.net\r\n\r\n"
           b"Final-Recipient: RFC822; bo@example.se\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
           b"Return-Path: <news@example.org>\r\nFrom: news@example.org\r\nTo: bo@example.se\r\n")
    report = read_dsn(parse_message(raw))
    assert report is not None
    assert [(recipient_address(r)[0], r.status) for r in report.recipients] == [("bo@example.se", "5.1.1")]


def test_dsn_inside_attached_message_is_not_read() -> None:
    inner = make_dsn(group("rfc822; ceo@victim.example", "failed", "5.1.1")).decode()
    outer = ("From: someone@example.se\r\nMIME-Version: 1.0\r\n"
             "Content-Type: multipart/mixed; boundary=outer\r\n\r\n--outer\r\n"
             "Content-Type: text/plain\r\n\r\nFYI\r\n--outer\r\nContent-Type: message/rfc822\r\n\r\n"
             + inner + "\r\n--outer--\r\n")
    assert read_dsn(parse_message(outer.encode())) is None


def test_report_and_decision_are_frozen_picklable_and_json() -> None:
    raw = make_dsn(group("rfc822; a@example.se", "failed", "5.1.1"), original="From: x@mail.example.org\n\nx")
    report = read_dsn(parse_message(raw))
    assert isinstance(report, DsnReport)
    assert pickle.loads(pickle.dumps(report)) == report
    with pytest.raises(AttributeError):
        report.reporting_mta = "x"  # type: ignore[misc]
    d = decide(raw)
    assert pickle.loads(pickle.dumps(d)) == d
    json.dumps(d.evidence)
    json.dumps(d.to_json())


def test_classify_sets_source(settings: config.Settings) -> None:
    raw = make_dsn(group("rfc822; a@example.se", "failed", "5.1.1"))
    item = Inbound.from_file(raw, "x.eml", NOW)
    d = classify(item, Context.from_settings(settings), NOW)
    assert d.kind is Kind.BOUNCE and d.source == "file" and d.item_id == item.id


@pytest.mark.parametrize("status, reason, hard", [
    ("5.1.1", BounceReason.USER_UNKNOWN, True),
    ("5.1.2", BounceReason.HOST_UNKNOWN, True),
    ("5.1.10", BounceReason.HOST_UNKNOWN, True),
    ("5.1.6", BounceReason.HAS_MOVED, True),
    ("5.1.7", BounceReason.SENDER_ADDRESS, False),   # about our sender address, not the recipient
    ("5.2.1", BounceReason.NOT_ACCEPTING, True),
    ("4.2.1", BounceReason.NOT_ACCEPTING, False),
    ("5.2.2", BounceReason.MAILBOX_FULL, False),
    ("5.2.3", BounceReason.MESSAGE_TOO_BIG, False),
    ("5.3.4", BounceReason.MESSAGE_TOO_BIG, False),
    ("5.3.0", BounceReason.SYSTEM_ERROR, False),
    ("5.4.4", BounceReason.HOST_UNKNOWN, True),
    ("4.4.1", BounceReason.NETWORK_ERROR, False),
    ("4.4.7", BounceReason.EXPIRED, False),
    ("5.7.1", BounceReason.POLICY, False),
    ("5.7.26", BounceReason.POLICY, False),
    ("5.0.0", BounceReason.OTHER, False),
    (None, BounceReason.OTHER, False),
])
def test_status_table(status: str | None, reason: BounceReason, hard: bool) -> None:
    assert status_meaning(status) == (reason, hard)


@pytest.mark.parametrize("raw_status, diag, expected", [
    ("5.1.1", None, ("5.1.1", "status")),
    ("5.1.1 (user unknown)", "smtp; 550 5.1.2 x", ("5.1.1", "status")),
    ("5.0.0", "smtp; 550 5.1.1 x", ("5.1.1", "diagnostic")),
    ("4.0.0", "smtp; 450 4.2.2 full", ("4.2.2", "diagnostic")),
    (None, "smtp; 550-5.1.1 x", ("5.1.1", "diagnostic")),
    (None, "smtp; 452 too many", ("4.0.0", "reply_code")),
    ("553 Exceeded maximum inbound message size", None, ("5.0.0", "reply_code")),
    (None, "X-Exim; Unrouteable address", (None, "none")),
    (None, "smtp; Exim 4.97.1 said 192.0.2.1", (None, "none")),
    ("5.7.1.", None, ("5.7.1", "status")),
    ("5.4.312", None, ("5.4.312", "status")),
])
def test_effective_status(raw_status: str | None, diag: str | None, expected: tuple[str | None, str]) -> None:
    assert effective_status(raw_status, diag) == expected


def test_header_text_never_raises() -> None:
    msg = parse_message(b"From: =?utf-8?q?broken=ZZ?= <\xff@x>\r\nSubject: =?x-unknown?b?!!!?=\r\n\r\n")
    assert isinstance(header_text(msg, "From"), str)
    assert isinstance(header_text(msg, "Subject"), str)
    assert header_text(msg, "X-Missing") is None


def test_describe_defects() -> None:
    assert "no header fields" in describe_defects(parse_message(b"just some text\r\n"))
    assert describe_defects(parse_message(b"Subject: ok\r\n\r\nbody")) == "no defects noticed"


# ------------------------------------------------------------------ relay wrappers, charsets


def test_relay_wrapped_reply_is_read_for_the_receiving_servers_words() -> None:
    # Amazon SES puts its own class code and wording ("Unknown address error") around
    # what the receiving server said; the quoted reply is the fact.
    refused = "smtp; 5.1.0 - Unknown address error 550-'5.7.1 <x@example.net>... Access denied' (delivery attempts: 0)"
    full = "smtp; 5.1.0 - Unknown address error 550-'5.2.2 <anna@example.se>... Mailbox Full' (delivery attempts: 0)"
    unknown = ("smtp; 5.1.0 - Unknown address error 550-'5.1.1 <bo@example.se>: Recipient address rejected: "
               "User unknown in virtual alias table' (delivery attempts: 0)")
    bare = "smtp; 5.3.0 - Other mail system problem 550-'Mailbox is frozen' (delivery attempts: 0)"
    d = decide(make_dsn(group("rfc822; anna@example.se", "failed", "5.0.0", refused),
                        group("rfc822; cia@example.se", "failed", "5.0.0", full),
                        group("rfc822; bo@example.se", "failed", "5.0.0", unknown),
                        group("rfc822; dan@example.se", "failed", "5.0.0", bare)))
    rows = {r["address"]: r for r in d.evidence["recipients"]}
    assert (rows["anna@example.se"]["status"], rows["anna@example.se"]["reason"]) == ("5.7.1", "blocked")
    assert (rows["cia@example.se"]["status"], rows["cia@example.se"]["reason"]) == ("5.2.2", "mailbox_full")
    assert (rows["bo@example.se"]["status"], rows["bo@example.se"]["reason"]) == ("5.1.1", "user_unknown")
    # No code inside the quotes: the relay's own code stands, SES's words do not count.
    assert rows["dan@example.se"]["status"] == "5.3.0" and rows["dan@example.se"]["reason"] != "user_unknown"
    kinds = {a.address: a.type for a in d.actions}
    assert kinds == {"anna@example.se": ActionType.SOFT_BOUNCE, "cia@example.se": ActionType.SOFT_BOUNCE,
                     "bo@example.se": ActionType.SUPPRESS, "dan@example.se": ActionType.SOFT_BOUNCE}


def test_iso_2022_jp_in_a_diagnostic_and_in_the_notice() -> None:
    # Lotus Domino writes its Japanese "not found in the directory" raw into the
    # Diagnostic-Code; a notice part may be ISO-2022-JP, which is 7-bit and would pass as
    # ASCII if read as UTF-8.
    words = "ユーザー Anna (anna@example.se) は Domino ディレクトリには見つかりません。"
    raw_diag = words.encode("iso-2022-jp").decode("ascii")
    d = decide(make_dsn(group("rfc822; anna@example.se", "failed", "5.0.0", f"X-Notes; {raw_diag}")))
    (row,) = d.evidence["recipients"]
    assert row["reason"] == "user_unknown" and "ディレクトリ" in row["diagnostic"]
    assert [a.type for a in d.actions] == [ActionType.SUPPRESS]
    # Half-written or non-7-bit escapes are left alone, never an error.
    broken = decide(make_dsn(group("rfc822; bo@example.se", "failed", "5.0.0", "X-Notes; \x1b$B%f!<\x1b$")))
    assert broken.evidence["recipients"][0]["address"] == "bo@example.se"


def test_part_text_charsets() -> None:
    from handlers.mail.message import part_text
    japanese = "ディレクトリのリストにありません"
    msg = parse_message(b"Content-Type: text/plain; charset=ISO-2022-JP\n\n" + japanese.encode("iso-2022-jp"))
    assert part_text(msg) == japanese
    # A declared Latin-1 that is really UTF-8 reads as UTF-8; real Latin-1 as Latin-1;
    # an unknown charset falls back without raising.
    assert part_text(parse_message("Content-Type: text/plain; charset=iso-8859-1\n\nGrüße".encode())) == "Grüße"
    assert part_text(parse_message("Content-Type: text/plain; charset=iso-8859-1\n\nGrüße".encode("latin-1"))) == "Grüße"
    assert part_text(parse_message(b"Content-Type: text/plain; charset=x-nonsense\n\nok")) == "ok"


@pytest.mark.parametrize("header, param, expected", [
    ('multipart/report; report-type=delivery-status; boundary="a;b=c"', "boundary", "a;b=c"),
    ('multipart/report; REPORT-TYPE="Feedback-Report"', "report-type", "feedback-report"),
    ("text/plain;\n\tcharset=ISO-2022-JP", "charset", "iso-2022-jp"),
    ("text/plain; charset=utf-8; charset=latin-1", "charset", "utf-8"),         # the first one
    ("text/plain charset=utf-8", "charset", None),                               # no ";": not a parameter
    ("text/plain", "charset", None),
    # These go to the standard reader: RFC 2231, a comment, an unbalanced quote.
    ("text/plain; name*=utf-8''%C3%A5.txt", "name", "standard"),
    ('text/plain; charset="us-ascii" (plain text)', "charset", "standard"),
    ('text/plain; name="unbalanced', "name", "standard"),
])
def test_content_param_fast_and_standard_readers_agree(header: str, param: str, expected: str | None) -> None:
    from handlers.mail.message import content_param
    msg = parse_message(f"Content-Type: {header}\n\nbody\n".encode())
    reference = msg.get_param(param)
    reference = reference[2] if isinstance(reference, tuple) else reference
    reference = None if reference is None else str(reference).strip().lower()
    assert content_param(msg, param) == reference
    if expected != "standard":
        assert reference == expected
    assert content_param(parse_message(b"Subject: no type\n\nbody\n"), "charset") is None


def test_parameter_stuffing_without_a_comment_never_reaches_the_quadratic_reader(monkeypatch) -> None:
    # ";;;;" stuffing (CPython gh-87075) costs email.message.get_param time that grows with
    # the square of its length; a plain value is read by one regex instead. (With a
    # comment it still goes to get_param: tests/support/hostile.py, stopped by the sandbox.)
    from email.message import Message

    from handlers.mail.message import content_param
    stuffed = "text/plain; charset=utf-8" + ";" * 50_000
    msg = parse_message(f"Content-Type: {stuffed}\n\nbody\n".encode())

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the standard reader was used")

    monkeypatch.setattr(Message, "get_param", refuse)
    assert content_param(msg, "charset") == "utf-8"
    assert content_param(msg, "boundary") is None
