"""Bounce forms and reason rules added for issue 3, each on a small hand-written notice.

The texts are ours, written from what each MTA's notice looks like (the corpus sample
that shows the form is named in handlers/bounces/patterns.py next to its row). Each test
states the rule it checks: where the recipient is read from, and why the failure is
hard or soft.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

import config
from handlers.context import Context
from handlers import ActionType, Decision, Inbound, Kind, classify
from handlers.bounces.status import BounceReason
from handlers.bounces.reasons import explain, text_reason

NOW = datetime(2026, 2, 1, 12, 0, tzinfo=timezone.utc)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def settings() -> config.Settings:
    return config.load({}, ROOT / "config" / "example.toml")


def notice(body: str, *, subject: str = "Undelivered Mail Returned to Sender",
           sender: str = "Mail Delivery System <MAILER-DAEMON@mx.example.net>", head: str = "") -> bytes:
    return (f"Return-Path: <>\nFrom: {sender}\nTo: alumni@mail.example.org\nSubject: {subject}\n"
            f"Message-ID: <n1@mx.example.net>\n{head}MIME-Version: 1.0\n"
            f"Content-Type: text/plain; charset=utf-8\n\n{body}").encode("utf-8")


def run(raw: bytes, settings: config.Settings) -> Decision:
    return classify(Inbound.from_file(raw, "test", NOW), Context.from_settings(settings), NOW)


def rows(decision: Decision) -> dict[str, dict]:
    assert decision.kind is Kind.BOUNCE, decision.reason
    return {r["address"]: r for r in decision.evidence["recipients"] if r.get("address")}


# ------------------------------------------------------------------ new text forms


@pytest.mark.parametrize("body, form", [
    # Exim: a recipient it could not parse.
    ("A message that you sent contained one or more recipient addresses that were\n"
     "incorrectly constructed:\n\n  anna@example.se <bo@example.no>: malformed address: <bo@example.no> "
     "may not follow anna@example.se\n\nThis address has been ignored.\n", "exim-malformed"),
    # Postfix's SMTP session report: the client's RCPT TO line.
    ("Transcript of session follows.\n\n Out: 220 mx.example.net ESMTP\n In:  MAIL FROM:<news@example.org>\n"
     " Out: 250 2.1.0 Ok\n In:  RCPT TO:<bo@example.no>\n Out: 550 5.1.1 <bo@example.no>: User unknown\n",
     "postfix-transcript"),
    # Smail-style list.
    ("|------------------------- Failed addresses follow: ---------------------|\n"
     " bo@example.no ... unknown user\n|------------------------- Message text follows: -----|\n", "smail"),
    # A bulleted list under a DSN-like heading.
    ("This is an automatically generated Delivery Status Notification.\n"
     "Delivery to the following recipients failed permanently:\n\n   * bo@example.no\n\n"
     "Reason: user unknown\n", "bullets"),
    # Lotus Notes' failure box, the reason in the recipient's language.
    ("------- Failure Reasons  --------\n\nUser not listed in public Name & Address Book\nbo@example.no\n",
     "notes"),
])
def test_new_text_forms_name_the_recipient(body: str, form: str, settings: config.Settings) -> None:
    d = run(notice(body, subject="Undeliverable message"), settings)
    assert set(rows(d)) == {"bo@example.no"}, d.reason
    assert d.evidence["form"] == form


def test_a_bounce_of_a_bounce_is_read_from_the_inner_notice(settings: config.Settings) -> None:
    # The outer notice names nobody; the message it returns is itself a bounce that does.
    inner = ("From: Mail Delivery Subsystem <MAILER-DAEMON@relay.example.net>\nTo: news@example.org\n"
             "Subject: Returned mail: User unknown\n\n   ----- The following addresses had permanent "
             "fatal errors -----\n<bo@example.no>\n    (reason: 550 5.1.1 User unknown)\n")
    raw = ("Return-Path: <>\nFrom: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.net>\n"
           "To: news@example.org\nSubject: Returned mail: User unknown\nMIME-Version: 1.0\n"
           'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\n'
           "   ----- The following addresses had permanent delivery errors -----\n\n"
           f"--b\nContent-Type: message/rfc822\n\n{inner}\n--b--\n").encode()
    d = run(raw, settings)
    assert set(rows(d)) == {"bo@example.no"}
    assert "read from the bounce returned inside this one" in d.evidence["notes"]


def test_daemon_notice_with_a_reason_but_no_failure_phrase_is_read(settings: config.Settings) -> None:
    # Only "The user(s) account is disabled." says what happened.
    raw = notice("The user(s) account is disabled.\n\n<bo@example.no>\n",
                 subject="Mail System Error - Returned Mail", sender="Postmaster@example.no")
    row = rows(run(raw, settings))["bo@example.no"]
    assert row["reason"] == "suspended" and row["outcome"] == "soft_bounce"


def test_addresses_in_prose_are_not_recipients_of_a_notice_read_on_reason_words(settings: config.Settings) -> None:
    # No failure phrase, only reason words: the examples in the explanation are nobody's.
    raw = notice(" userx    No matches to nameserver query: unknown recipient.\n If\n"
                 " mike.fox@example.edu fails, try michael.fox@example.edu instead.\n",
                 subject="Returned mail - nameserver error report", sender="MAILER-DAEMON@mx.example.edu")
    assert text_reason(raw.decode()) is BounceReason.USER_UNKNOWN      # read on reason words
    d = run(raw, settings)
    assert d.kind is not Kind.BOUNCE or not rows(d), d.reason


def test_the_subject_gives_the_reason_when_the_notice_has_none(settings: config.Settings) -> None:
    raw = notice("The original message was received at Mon, 2 Mar 2026 10:00:00 +0100\n\n"
                 "   ----- The following addresses had permanent fatal errors -----\nbo@example.no\n",
                 subject="Returned mail: User unknown")
    row = rows(run(raw, settings))["bo@example.no"]
    assert (row["reason"], row["hard"]) == ("user_unknown", True)


def test_reason_in_the_paragraph_after_the_recipient(settings: config.Settings) -> None:
    # DragonFly: the address in one paragraph, the server's reply in the next.
    raw = notice("This is the DragonFly Mail Agent v0.13 at mx.example.net.\n\n"
                 "There was an error delivering your mail to <bo@example.no>.\n\n"
                 "mx.example.no [192.0.2.25] did not like our RCPT TO:\n"
                 "552 5.2.2 <bo@example.no>: Recipient address rejected: Mailbox full\n\n"
                 "Message headers follow.\n")
    row = rows(run(raw, settings))["bo@example.no"]
    assert (row["status"], row["reason"], row["hard"]) == ("5.2.2", "mailbox_full", False)


def test_a_2xx_number_in_the_text_is_not_a_failure_class(settings: config.Settings) -> None:
    raw = notice("Error: Invalid user address\n\nMessage details:\n  RCPT TO: bo@example.no\n"
                 "  Size (in bytes): 222\n", subject="Returned mail", sender="post_master@example.no")
    row = rows(run(raw, settings))["bo@example.no"]
    assert row["status"].startswith("5.")


# ------------------------------------------------------------------ reports


def report(groups: str, text: str = "This is the mail system at host mx.example.net.\n") -> bytes:
    return ("Return-Path: <>\nFrom: MAILER-DAEMON@mx.example.net (Mail Delivery System)\n"
            "To: news@example.org\nSubject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\n\n'
            f"--r\nContent-Type: text/plain\n\n{text}\n--r\nContent-Type: message/delivery-status\n\n"
            f"Reporting-MTA: dns; mx.example.net\n\n{groups}\n--r--\n").encode()


def test_a_generic_status_is_explained_by_the_recipients_line_in_the_notice(settings: config.Settings) -> None:
    # No Diagnostic-Code and Status 5.0.0: the notice's own line carries the reply.
    raw = report("Final-Recipient: rfc822; bo@example.no\nAction: failed\nStatus: 5.0.0\n",
                 text="An error has occurred while attempting to deliver a message for\n"
                      "the following list of recipients:\n\n"
                      "bo@example.no: 552 5.2.2 <bo@example.no>: Recipient address rejected: Mailbox full\n")
    row = rows(run(raw, settings))["bo@example.no"]
    assert (row["status"], row["reason"], row["outcome"]) == ("5.2.2", "mailbox_full", "soft_bounce")


def test_sendgrid_expired_action_is_a_failure(settings: config.Settings) -> None:
    raw = report("Final-Recipient: rfc822; bo@example.no\nAction: expired\nStatus: \n"
                 "Diagnostic-Code: Connection timed out\n")
    row = rows(run(raw, settings))["bo@example.no"]
    assert row["action"] == "failed" and row["outcome"] == "soft_bounce"


# ------------------------------------------------------------------ reason rules


@pytest.mark.parametrize("text, reason", [
    ("550-5.2.1 The email account that you tried to reach is disabled.", BounceReason.SUSPENDED),
    ("550 5.7.1 <bo@example.no>: Recipient address rejected: User bo@example.no temporary locked",
     BounceReason.SUSPENDED),
    ("550 5.4.1 [bo@example.no]: Recipient address rejected: Access denied", BounceReason.USER_UNKNOWN),
    ("550 5.1.1 RCP-P2 Refused due to recipient preferences", BounceReason.POLICY),
    ("553 sorry, your envelope recipient is in my badrcptto list (#5.7.1)", BounceReason.POLICY),
    ("550 : User unknown", BounceReason.POLICY),
    ("550 <bo@example.no>: User unknown", BounceReason.USER_UNKNOWN),
    ("Name service error for name=example.no type=MX: Malformed or unexpected name server reply",
     BounceReason.NETWORK_ERROR),
    ("<bo@example.no>: Name service error for domain example.no: Host not found, try again",
     BounceReason.NETWORK_ERROR),
    ("procmail: Couldn't create \"/var/spool/mail/bo\" id: No such user", BounceReason.SYSTEM_ERROR),
    ("DNS lookup failure: host cx.example.no not found", BounceReason.HOST_UNKNOWN),
    ("Your message wasn't delivered to bo@example.no because the address couldn't be found.",
     BounceReason.USER_UNKNOWN),
    ("User not listed in public Name & Address Book", BounceReason.USER_UNKNOWN),
    ("Invalid final delivery userid: bo@example.no", BounceReason.USER_UNKNOWN),
    ("550 5.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional "
     "messages from being delivered.", BounceReason.RATE_LIMITED),
    ("Recipient address rejected: see the list of reasons", None),
])
def test_reason_words(text: str, reason: BounceReason | None) -> None:
    assert text_reason(text) is reason


def test_user_unknown_answering_data_is_a_filter_unless_the_code_says_otherwise() -> None:
    # Sendmail's transcript: the refusal answers DATA, and the code is a generic one.
    context = "... while talking to mx.example.no.:\n>>> DATA\n<<< 550 Unknown user bo@example.no\n"
    assert explain(None, "550 Unknown user bo@example.no", default_class="5", context=context)[1:3] == (
        BounceReason.POLICY, False)
    # A code about the address itself stays a hard bounce (refused RCPTs are reported
    # after ">>> DATA" with pipelining).
    assert explain("5.1.1", "550 5.1.1 <bo@example.no>... User Unknown", context=context)[1:3] == (
        BounceReason.USER_UNKNOWN, True)


def test_user_account_disabled_code_is_hard() -> None:
    # Issue 21: a disabled account with a permanent failure is a permanent problem
    # with the address itself (IANA: X.7.13 "User Account Disabled").
    status, reason, hard, _source = explain("5.7.13", "Disabled recipient address")
    assert (status, reason, hard) == ("5.7.13", BounceReason.SUSPENDED, True)
    assert explain("4.7.13", "Disabled recipient address")[2] is False
    assert explain("5.2.1", "account temporarily disabled")[2] is False


def test_a_guessed_or_soft_reading_never_suppresses(settings: config.Settings) -> None:
    raw = notice("The user(s) account is disabled.\n\n<bo@example.no>\n",
                 subject="Mail System Error - Returned Mail", sender="Postmaster@example.no")
    assert all(a.type is not ActionType.SUPPRESS for a in run(raw, settings).actions)
