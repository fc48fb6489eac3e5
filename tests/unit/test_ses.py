"""Amazon SES bounce and delivery notifications by mail (handlers.bounces.ses), bare and in SNS envelopes."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from handlers.context import Context
from handlers.classify import classify
from handlers.mail.message import parse_message
from handlers.model import ActionType, Inbound, Kind
from handlers.bounces.ses import read_ses
from tests.conftest import make_settings

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
SETTINGS = make_settings()


def bounce(bounce_type: str = "Permanent", subtype: str = "General", status: str | None = "5.1.1",
           diagnostic: str | None = "smtp; 550 5.1.1 no mailbox here", address: str = "Ida@Example.se",
           headers: list[dict] | None = None) -> dict:
    entry = {"emailAddress": address, "action": "failed"}
    if status:
        entry["status"] = status
    if diagnostic:
        entry["diagnosticCode"] = diagnostic
    return {"notificationType": "Bounce",
            "bounce": {"bounceType": bounce_type, "bounceSubType": subtype, "bouncedRecipients": [entry],
                       "timestamp": "2026-03-02T11:00:00.000Z", "feedbackId": "f-1"},
            "mail": {"messageId": "0102-abc", "source": "alumni@mail.example.org",
                     "headers": headers or [{"name": "From", "value": "Alumninytt <alumni@mail.example.org>"}]}}


def mail(body: str, trailer: str = "\n--\nTo stop these notifications, unsubscribe from the topic.\n") -> bytes:
    return ("From: SES Notifications <no-reply@sns.example.com>\nTo: bounces@mail.example.org\n"
            "Subject: AWS Notification Message\nMIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\n\n"
            + body + trailer).encode()


def sns(inner: dict) -> str:
    return json.dumps({"Type": "Notification", "MessageId": "m-1", "Message": json.dumps(inner)}, indent=2)


def decide(raw: bytes, rcpt: str = "bounces@mail.example.org"):
    return classify(Inbound.from_smtp(raw, "", [rcpt], NOW), Context.from_settings(SETTINGS), NOW)


@pytest.mark.parametrize("wrap", [json.dumps, sns])
def test_a_permanent_bounce_suppresses_bare_or_in_an_sns_envelope(wrap):
    d = decide(mail(wrap(bounce())))
    (a,) = d.actions
    assert (d.kind, a.type, a.address, a.status, a.reason) == (
        Kind.BOUNCE, ActionType.SUPPRESS, "ida@example.se", "5.1.1", "user_unknown")
    assert a.ref == "ses:0102-abc" and d.evidence["report_type"] == "ses-bounce"
    assert (d.evidence["unit"], d.evidence["unit_source"]) == ("alumni", "From of the original")


@pytest.mark.parametrize("kwargs,expected", [
    ({"bounce_type": "Transient", "subtype": "MailboxFull", "status": "5.2.2", "diagnostic": "mailbox full"},
     ActionType.SOFT_BOUNCE),
    ({"bounce_type": "Transient", "subtype": "General", "status": "5.1.1"}, ActionType.SOFT_BOUNCE),
    ({"bounce_type": "Undetermined", "subtype": "Undetermined", "status": None, "diagnostic": None},
     ActionType.SOFT_BOUNCE),
    ({"bounce_type": "Permanent", "subtype": "NoEmail", "status": None, "diagnostic": None}, ActionType.SUPPRESS),
    ({"bounce_type": "Permanent", "subtype": "General", "status": "5.7.1", "diagnostic": "blocked as spam"},
     ActionType.SOFT_BOUNCE),
])
def test_bounce_type_and_status_decide_hard_or_soft(kwargs, expected):
    (a,) = decide(mail(json.dumps(bounce(**kwargs)))).actions
    assert a.type is expected


def test_a_delivery_notification_is_a_sign_of_life():
    body = {"notificationType": "Delivery", "mail": {"messageId": "0102-def"},
            "delivery": {"recipients": ["ida@example.se"], "smtpResponse": "250 2.6.0 ok"}}
    (a,) = decide(mail(json.dumps(body))).actions
    assert a.type is ActionType.DELIVERED and a.address == "ida@example.se"


def test_lines_broken_by_a_relay_are_joined_again():
    text = json.dumps(bounce())
    broken = text[:120] + "!\n " + text[120:]          # Sendmail's mark for a line it had to break
    assert read_ses(parse_message(mail(broken))) is not None


def test_a_forged_return_path_is_only_recorded():
    # Evidence of forgery (issue 22): recorded, never counted toward the soft-bounce threshold.
    d = decide(mail(json.dumps(bounce())), rcpt="bounces+" + "z" * 34 + "@mail.example.org")
    assert d.actions == () and d.evidence["recipients"][0]["proposed"] == "suppress"


@pytest.mark.parametrize("body", [
    '{"notificationType": "Bounce", "bounce": {"bouncedRecipients": "nobody"}}',
    '{"notificationType": "Bounce", "bounce": {"bounceType": "Permanent", "bouncedRecipients": [{"emailAddress": 5}]}}',
    '{"notificationType": "Bounce", "bounce": {"bounceType": "Perm',
    '{"notificationType": "Teleport"}',
    '{"Type": "Notification", "Message": "not json"}',
    '{"Type": "Notification", "Message": "' + "[" * 5000 + '"}',
    "[1, 2, 3]",
])
def test_malformed_notifications_are_not_read_and_never_raise(body):
    assert read_ses(parse_message(mail(body))) is None
    d = decide(mail(body))
    assert "classifier error" not in d.reason
    assert all(a.type is not ActionType.SUPPRESS for a in d.actions)


@pytest.mark.parametrize("lead", ["", "\n\n", " \t\x1c", "\u00a0", "\u2003\n"])
def test_a_notification_after_any_white_space_is_read(lead):
    # The reader skips bodies whose first non-blank byte is not "{" without decoding
    # them; white space that is not ASCII (a no-break space in UTF-8) must not hide one.
    d = decide(mail(lead + json.dumps(bounce())))
    assert d.kind is Kind.BOUNCE and d.evidence["report_type"] == "ses-bounce"


def test_a_body_that_does_not_open_with_a_brace_is_no_notification():
    assert read_ses(parse_message(mail("x " + json.dumps(bounce())))) is None
