"""read_bounce / decide_text_bounce on small hand-written notices of each MTA's text form.

Every sample here is our own text, written from what the MTAs' notices look like; the
corpus-driven checks are in tests/unit/test_bounce_corpus.py.
"""

from __future__ import annotations

import json
import pickle
from datetime import datetime, timezone
from pathlib import Path

import pytest

import config
from handlers.context import Context
from handlers import ActionType, Decision, Inbound, Kind
from handlers.bounces.text import decide_text_bounce, read_bounce
from handlers.bounces.envelope import verp_recipient
from handlers.bounces.status import BounceReason
from handlers.bounces.reasons import explain, text_reason
from handlers.mail.message import parse_message

NOW = datetime(2026, 2, 1, 12, 0, tzinfo=timezone.utc)
ROOT = Path(__file__).resolve().parents[2]
VERP_ANNA = "bounces+anna=example.se@mail.example.org"


@pytest.fixture(scope="module")
def settings() -> config.Settings:
    return config.load({}, ROOT / "config" / "example.toml")


def notice(body: str, *, subject: str = "Undelivered Mail Returned to Sender",
           sender: str = "Mail Delivery System <MAILER-DAEMON@mx.example.net>",
           extra: str = "", original: str | None = None) -> bytes:
    head = (f"Return-Path: <>\nFrom: {sender}\nTo: alumni@mail.example.org\nSubject: {subject}\n"
            f"Date: Mon, 02 Mar 2026 10:00:00 +0100\nMessage-ID: <n1@mx.example.net>\n{extra}")
    if original is None:
        text = head + "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n" + body
    else:
        text = (head + 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b1"\n\n'
                "--b1\nContent-Type: text/plain; charset=utf-8\n\n" + body +
                "\n--b1\nContent-Type: message/rfc822\n\n" + original + "\n--b1--\n")
    return text.encode("utf-8")


# No units, no keys, nothing of ours at mail.example.org: the notice alone decides.
BARE = Context(mail_domain="localhost", effective_bounce_domain="localhost")


def decide(raw: bytes, settings: config.Settings | None = None, rcpt: str = "bounces@mail.example.org",
           mail_from: str | None = "") -> Decision:
    report = read_bounce(parse_message(raw))
    assert report is not None, "not read as a bounce"
    item = Inbound.from_smtp(raw, mail_from, [rcpt], NOW)
    return decide_text_bounce(item, report, Context.from_settings(settings) if settings else BARE, NOW)


def only(decision: Decision):  # noqa: ANN201 - the one action
    assert len(decision.actions) == 1, decision.actions
    return decision.actions[0]


# ------------------------------------------------------------------ MTA forms

QMAIL = """Hi. This is the qmail-send program at mx.example.net.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<anna@example.se>:
192.0.2.7 does not like recipient.
Remote host said: 550 5.1.1 mailbox anna does not exist
Giving up on 192.0.2.7.

--- Below this line is a copy of the message.

Return-Path: <bounces+anna=example.se@mail.example.org>
From: alumni@mail.example.org
To: anna@example.se
"""

EXIM = """This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  anna@example.se
    host mx.example.se [192.0.2.8]
    SMTP error from remote mail server after RCPT TO:<anna@example.se>:
    550 No such user here

  bo@example.no
    Unrouteable address

------ This is a copy of the message, including all the headers. ------
From: alumni@mail.example.org
"""

POSTFIX = """This is the mail system at host mx.example.net.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

                   The mail system

<anna@example.se>: host mx.example.se[192.0.2.9] said: 552 5.2.2 <anna@example.se>:
    Mailbox full (in reply to RCPT TO command)
"""

SENDMAIL = """The original message was received at Mon, 2 Mar 2026 10:00:00 +0100
from localhost [127.0.0.1]

   ----- The following addresses had permanent fatal errors -----
<anna@example.se>
    (reason: 550 5.1.1 <anna@example.se>... User unknown)

   ----- Transcript of session follows -----
... while talking to mx.example.se.:
>>> RCPT To:<anna@example.se>
<<< 550 5.1.1 <anna@example.se>... User unknown
550 5.1.1 <anna@example.se>... User unknown
"""

EXCHANGE2003 = """Your message

  To:      Anna
  Subject: Alumni News
  Sent:    Mon, 2 Mar 2026 10:00:00 +0100

did not reach the following recipient(s):

anna@example.se on Mon, 2 Mar 2026 10:00:05 +0100
    The recipient name is not recognized
    MSEXCH:IMS:EXAMPLE:SE:MX1 0 (000C05A6) Unknown Recipient
"""

OFFICE365 = """Delivery has failed to these recipients or groups:

anna@example.se<mailto:anna@example.se>
The email address you entered couldn't be found. Please check the recipient's email address.

Diagnostic information for administrators:

Generating server: MX1.example.se

Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup'
"""

DOMINO = """Your message

  Subject: Alumni News

was not delivered to:

  anna@example.se

because:

  User anna (anna@example.se) not listed in Domino Directory
"""

GMAIL_DELAY = """Delivery to the following recipient has been delayed:

     anna@example.se

Message will be retried for 2 more day(s)

Technical details of temporary failure:
The recipient server did not accept our requests to connect. [example.se. 192.0.2.1: timed out]
"""

YAHOO = """Sorry, we were unable to deliver your message to the following address.

<anna@example.se>:
Remote host said: 554 delivery error: dd This user doesn't have a example.se account (anna@example.se) [0]

--- Below this line is a copy of the message.
"""

AMAZON = """An error occurred while trying to deliver the mail to the following recipients:
anna@example.se
"""

ZOHO = """This message was created automatically by mail delivery software.
A message that you sent could not be delivered to one or more of its recipients. This is a permanent error.

anna@example.se Invalid Address, ERROR_CODE :550, ERROR_CODE :5.1.1 <anna@example.se>... User unknown
"""

DRAGONFLY = """This is the DragonFly Mail Agent v0.13 at mx.example.net.

There was an error delivering your mail to <anna@example.se>.

mx.example.se [192.0.2.3] did not like our RCPT TO:
550 5.1.1 <anna@example.se>: Recipient address rejected: User unknown

Message headers follow.
"""

OPENSMTPD = """    Hi!

    This is the MAILER-DAEMON, please DO NOT REPLY to this e-mail.

    An error has occurred while attempting to deliver a message for
    the following list of recipients:

anna@example.se: 550 5.2.2 Mailbox full

    Below is a copy of the original message:
"""

IMAIL = "Unknown user: anna@example.se\n\nOriginal message follows.\n"

INTERSCAN = """****** Message from InterScan Messaging Security Suite ******

Unable to deliver message to <anna@example.se> (and other recipients in the same domain). Please check if address is correct.

*********************** End of message **********************
"""


@pytest.mark.parametrize("body, form, status, reason, hard", [
    (QMAIL, "qmail", "5.1.1", "user_unknown", True),
    (POSTFIX, "postfix", "5.2.2", "mailbox_full", False),
    (SENDMAIL, "sendmail", "5.1.1", "user_unknown", True),
    (EXCHANGE2003, "exchange2003", "5.1.1", "user_unknown", True),
    (OFFICE365, "exchange", "5.1.10", "user_unknown", True),
    (DOMINO, "domino", "5.1.1", "user_unknown", True),
    (YAHOO, "qmail", "5.1.1", "user_unknown", True),
    (ZOHO, "zoho", "5.1.1", "user_unknown", True),
    (DRAGONFLY, "dragonfly", "5.1.1", "user_unknown", True),
    (OPENSMTPD, "opensmtpd", "5.2.2", "mailbox_full", False),
    (IMAIL, "oneliner", "5.1.1", "user_unknown", True),
    (INTERSCAN, "interscan", "5.1.1", "user_unknown", True),
    (INTERSCAN.replace(" Please check if address is correct.", ""), "interscan", "5.0.0", "other", False),
    (DRAGONFLY.replace("mx.example.se [192.0.2.3] did not like our RCPT TO:\n550 5.1.1 <anna@example.se>: "
                       "Recipient address rejected: User unknown",
                       "Could not deliver for the last 432000 seconds. Giving up."),
     "dragonfly", "5.4.7", "expired", False),
])
def test_mta_forms(body: str, form: str, status: str, reason: str, hard: bool) -> None:
    d = decide(notice(body))
    assert d.kind is Kind.BOUNCE and d.evidence["form"] == form, d.reason
    action = only(d)
    assert action.address == "anna@example.se"
    assert (action.status, action.reason, action.hard) == (status, reason, hard)
    assert action.type is (ActionType.SUPPRESS if hard else ActionType.SOFT_BOUNCE)
    assert action.diagnostic and "anna@example.se" in action.diagnostic   # evidence kept


def test_exim_two_recipients_each_with_its_own_reason() -> None:
    d = decide(notice(EXIM, subject="Mail delivery failed: returning message to sender",
                      extra="X-Failed-Recipients: anna@example.se, bo@example.no\n"))
    by = {a.address: a for a in d.actions}
    assert set(by) == {"anna@example.se", "bo@example.no"}
    assert (by["anna@example.se"].reason, by["anna@example.se"].hard) == ("user_unknown", True)
    assert (by["bo@example.no"].reason, by["bo@example.no"].hard) == ("host_unknown", True)
    # "550" with no enhanced code: the class comes from the reply code, the detail from the words.
    assert by["anna@example.se"].status == "5.1.1"


def test_exim_auto_submitted_header_does_not_hide_a_bounce() -> None:
    # Exim writes Auto-Submitted: auto-replied on its own bounces (lhost-exim-01).
    d = decide(notice(EXIM, extra="Auto-Submitted: auto-replied\n"))
    assert {a.address for a in d.actions} == {"anna@example.se", "bo@example.no"}


def test_gmail_delay_is_recorded_but_never_acted_on() -> None:
    d = decide(notice(GMAIL_DELAY, subject="Delivery Status Notification (Delay)",
                      sender="Mail Delivery Subsystem <mailer-daemon@googlemail.com>"))
    assert d.actions == ()
    (row,) = d.evidence["recipients"]
    assert row["action"] == "delayed" and row["status"].startswith("4.") and row["outcome"] is None


def test_amazon_text_form_without_reason_is_soft() -> None:
    d = decide(notice(AMAZON, subject="Delivery Status Notification (Failure)"))
    action = only(d)
    assert action.address == "anna@example.se" and action.type is ActionType.SOFT_BOUNCE
    assert action.status is not None and action.status.startswith("5.")


# ------------------------------------------------------------------ local languages


@pytest.mark.parametrize("subject, body, reason, hard", [
    ("Olevererbart: Alumninytt", "Meddelandet kunde inte levereras till följande mottagare:\n\n"
     "    anna@example.se\n\nOrsak: 550 Mottagaren finns inte\n", "user_unknown", True),
    ("Ikke levert: Alumninytt", "Meldingen kunne ikke leveres til følgende mottaker:\n\n"
     "    anna@example.se\n\nÅrsak: postkassen er full\n", "mailbox_full", False),
    ("Kunne ikke afleveres: Alumninytt", "Meddelelsen kunne ikke afleveres til:\n\n"
     "    anna@example.se\n\nÅrsag: Modtageren findes ikke\n", "user_unknown", True),
    ("Unzustellbar: Alumni News", "Ihre Nachricht konnte nicht zugestellt werden an:\n\n"
     "    anna@example.se\n\nGrund: Empfänger unbekannt\n", "user_unknown", False),
    ("Non remis : Alumni News", "Votre message n'a pas pu être remis au destinataire suivant :\n\n"
     "    anna@example.se\n\nRaison : utilisateur inconnu\n", "user_unknown", False),
])
def test_local_language_notices(subject: str, body: str, reason: str, hard: bool) -> None:
    d = decide(notice(body, subject=subject, sender="postmaster@example.se"))
    action = only(d)
    assert action.address == "anna@example.se"
    assert action.reason == reason
    # No MTA form, no status code, no RCPT stage: "unknown" words may be a filter's, so
    # they are only counted; a notice that says the address does not exist ("finns
    # inte", "findes ikke") states a fact about the address and is believed (issue 21).
    assert action.hard is hard
    assert action.type is (ActionType.SUPPRESS if hard else ActionType.SOFT_BOUNCE)
    (row,) = d.evidence["recipients"]
    assert ("why_soft" in row) is (reason == "user_unknown" and not hard)


@pytest.mark.parametrize("evidence", ["Orsak: 550 5.1.1 Mottagaren finns inte",
                                      "Orsak: RCPT TO:<anna@example.se> 550 Mottagaren finns inte",
                                      "Orsak: 550 Mottagaren finns inte (in reply to RCPT TO command)"])
def test_unknown_form_with_a_code_or_the_rcpt_stage_is_hard(evidence: str) -> None:
    body = f"Meddelandet kunde inte levereras till följande mottagare:\n\n    anna@example.se\n\n{evidence}\n"
    d = decide(notice(body, subject="Olevererbart: Alumninytt", sender="postmaster@example.se"))
    action = only(d)
    assert (action.type, action.reason, action.hard) == (ActionType.SUPPRESS, "user_unknown", True)
    assert "why_soft" not in d.evidence["recipients"][0]


# ------------------------------------------------------------------ what is not a bounce


def test_vacation_reply_is_not_claimed() -> None:
    raw = notice("Jag är på semester till den 10 mars. Mejla anna@example.se vid brådskande ärenden.\n",
                 subject="Frånvaro: Alumninytt", sender="Bo <bo@example.se>",
                 extra="Auto-Submitted: auto-replied\n")
    assert read_bounce(parse_message(raw)) is None


def test_ordinary_mail_is_not_claimed() -> None:
    raw = notice("Hej! Kan ni skicka nyhetsbrevet till anna@example.se i stället?\n",
                 subject="Adressändring", sender="Bo <bo@example.se>")
    assert read_bounce(parse_message(raw)) is None


def test_notice_without_failure_words_is_not_claimed() -> None:
    raw = notice("Your message to anna@example.se was delivered.\n", subject="Delivery report")
    assert read_bounce(parse_message(raw)) is None


def test_help_address_and_sender_are_never_recipients() -> None:
    body = ("Your message could not be delivered to one or more recipients.\n\n"
            "For further assistance, please contact <support@mx.example.net>\n\n"
            "MAIL FROM:<alumni@mail.example.org> was accepted.\n\n"
            "anna@example.se: 550 5.1.1 user unknown\n")
    d = decide(notice(body))
    assert [a.address for a in d.actions] == ["anna@example.se"]


def test_returned_original_is_not_searched(settings: config.Settings) -> None:
    # The original's From is ours (example.toml's mail domain): the bounce is related to
    # mail we sent (issue 21), and its To is not taken as the failed recipient.
    original = ("From: alumni@mail.example.org\nTo: carl@example.dk\nMessage-ID: <r1@mail.example.org>\n"
                "Subject: x\n\nhi carl@example.dk\n")
    d = decide(notice(QMAIL.split("--- Below")[0], original=original), settings)
    assert [a.address for a in d.actions] == ["anna@example.se"]
    assert d.evidence["original"]["to"] == "carl@example.dk"


def test_dsn_is_left_to_the_dsn_reader() -> None:
    raw = (b"From: MAILER-DAEMON@mx.example.net\nSubject: Undelivered\nMIME-Version: 1.0\n"
           b"Content-Type: multipart/report; report-type=delivery-status; boundary=zz\n\n"
           b"--zz\nContent-Type: text/plain\n\n<anna@example.se>: user unknown\n"
           b"--zz\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx\n\n"
           b"Final-Recipient: rfc822; anna@example.se\nAction: failed\nStatus: 5.1.1\n\n--zz--\n")
    assert read_bounce(parse_message(raw)) is None


# ------------------------------------------------------------------ envelope: VERP and null sender


def test_verp_recipient_is_read(settings: config.Settings) -> None:
    item, ctx = Inbound.from_smtp(b"", "", [VERP_ANNA], NOW), Context.from_settings(settings)
    assert verp_recipient(item, ctx) == "anna@example.se"
    assert verp_recipient(Inbound.from_smtp(b"", "", ["bounces@mail.example.org"], NOW), ctx) is None
    assert verp_recipient(Inbound.from_smtp(b"", "", ["bounces+anna=example.se@elsewhere.example"], NOW),
                          ctx) is None
    assert verp_recipient(item, BARE) is None


def test_unsigned_verp_recipient_is_counted_but_never_suppresses_on_its_own(settings: config.Settings) -> None:
    # The classic bounces+local=domain@ form is a hint anyone can forge (issue 3 item 4).
    d = decide(notice(QMAIL), settings, rcpt=VERP_ANNA)
    action = only(d)
    assert action.type is ActionType.SOFT_BOUNCE and action.address == "anna@example.se" and action.hard is True
    assert d.evidence["recipients"][0]["hard"] is True and d.verified is False
    assert d.evidence["verp_recipient"] == "anna@example.se" and d.evidence["null_sender"] is True
    assert d.evidence["return_path"]["form"] == "unsigned"


def test_text_naming_another_address_never_suppresses_it(settings: config.Settings) -> None:
    # We sent to anna (VERP), the notice names carl: a forward or a forgery. Counted at most.
    d = decide(notice(QMAIL.replace("anna@example.se", "carl@example.dk")), settings, rcpt=VERP_ANNA)
    action = only(d)
    assert action.address == "carl@example.dk"
    # Counted, not suppressed; `hard` still says what the notice reads (user unknown).
    assert action.type is ActionType.SOFT_BOUNCE and action.hard is True
    assert d.evidence["recipients"][0]["why_not_suppressed"]


def test_dsn_naming_another_address_never_suppresses_it(settings: config.Settings) -> None:
    from handlers.bounces.dsn import decide_bounce, read_dsn
    raw = (b"From: MAILER-DAEMON@mx.example.net\nSubject: Undelivered\nMIME-Version: 1.0\n"
           b"Content-Type: multipart/report; report-type=delivery-status; boundary=zz\n\n"
           b"--zz\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx\n\n"
           b"Final-Recipient: rfc822; carl@example.dk\nAction: failed\nStatus: 5.1.1\n\n--zz--\n")
    report = read_dsn(parse_message(raw))
    assert report is not None
    d = decide_bounce(Inbound.from_smtp(raw, "", [VERP_ANNA], NOW), report, Context.from_settings(settings), NOW)
    assert only(d).type is ActionType.SOFT_BOUNCE
    d = decide_bounce(Inbound.from_smtp(raw, "", ["bounces@mail.example.org"], NOW), report, Context.from_settings(settings), NOW)
    assert only(d).type is ActionType.SUPPRESS


# ------------------------------------------------------------------ reasons and status


@pytest.mark.parametrize("text, reason", [
    ("550 5.1.1 <a@b.se>... User unknown", BounceReason.USER_UNKNOWN),
    ("552 5.2.2 Mailbox full", BounceReason.MAILBOX_FULL),
    ("552 Message size exceeds fixed maximum message size", BounceReason.MESSAGE_TOO_BIG),
    ("421 Too many connections from your IP, try again later", BounceReason.RATE_LIMITED),
    ("554 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org", BounceReason.BLOCKED),
    ("550 Message rejected as spam", BounceReason.SPAM),
    ("550 5.7.26 Unauthenticated email is not accepted due to domain's DMARC policy", BounceReason.POLICY),
    ("550 Your IP has a poor reputation", BounceReason.REPUTATION),
    ("550 5.2.1 Account disabled", BounceReason.SUSPENDED),
    ("Unrouteable address", BounceReason.HOST_UNKNOWN),
    ("retry timeout exceeded", BounceReason.EXPIRED),
    ("551 User has moved; please try <a@c.se>", BounceReason.HAS_MOVED),
    ("556 Domain does not accept mail", BounceReason.NOT_ACCEPTING),
    ("connection timed out", BounceReason.NETWORK_ERROR),
    ("Mottagaren finns inte", BounceReason.USER_UNKNOWN),
    ("Postfach voll", BounceReason.MAILBOX_FULL),
    ("boîte aux lettres pleine", BounceReason.MAILBOX_FULL),
    ("", None),
    # Words inside an address are its name, not a reason.
    ("There was an error delivering your mail to <filtered@example.se>.", None),
    ("expired.account@example.se: 552 mailbox full", BounceReason.MAILBOX_FULL),
    ("<blocked@example.se>: User unknown", BounceReason.USER_UNKNOWN),
])
def test_text_reasons(text: str, reason: BounceReason | None) -> None:
    assert text_reason(text) == reason


def test_explain_rules() -> None:
    # A given code is kept, the words name the reason.
    assert explain("5.1.1", "Mailbox full")[:3] == ("5.1.1", BounceReason.MAILBOX_FULL, False)
    # No code: the class from the words or the default, the detail from the reason.
    assert explain(None, "user unknown")[:3] == ("5.1.1", BounceReason.USER_UNKNOWN, True)
    assert explain(None, "user unknown", default_class="4")[:3] == ("4.1.1", BounceReason.USER_UNKNOWN, False)
    # A user unknown said after DATA with no code about the address is a filter's
    # answer: soft.
    assert explain("5.0.0", "SMTP error after end of data: 550 user unknown")[1:3] == (BounceReason.POLICY, False)
    assert explain(None, "SMTP error after end of data: 550 user unknown")[1:3] == (BounceReason.POLICY, False)
    # A server that checks recipients only at the end of DATA and says so with an
    # X.1.1 code means the mailbox (lhost-mfilter-02): hard.
    assert explain("5.1.1", "SMTP error after end of data: 550 5.1.1 user unknown")[1:3] == (
        BounceReason.USER_UNKNOWN, True)
    assert explain("5.7.1", "SMTP error after end of data: 550 5.7.1 user unknown")[2] is False
    # An answer to MAIL FROM is about our sender.
    assert explain("5.1.8", "after MAIL FROM: 501 5.1.8 Sender address rejected")[2] is False
    assert explain(None, None) == (None, BounceReason.OTHER, False, "given")


# ------------------------------------------------------------------ hostile input


def _hostile() -> dict[str, bytes]:
    many = "".join(f"  user{i}@example.se\n" for i in range(5000))
    return {
        "empty": b"",
        "only-headers": b"From: MAILER-DAEMON@x\nSubject: Undelivered\n\n",
        "binary": bytes(range(256)) * 50,
        "huge-notice": notice("could not be delivered\n" + "x" * 2_000_000 + "\nanna@example.se: user unknown\n"),
        "5000-recipients": notice("This message was created automatically by mail delivery software.\n"
                                  "The following address(es) failed:\n\n" + many),
        "bad-charset": notice("could not be delivered\n<anna@example.se>: user unknown\n").replace(
            b"charset=utf-8", b"charset=klingon"),
        "latin1-bytes": notice("could not be delivered to anna@example.se: okänd mottagare\n").replace(
            "ä".encode(), b"\xe4"),
        "long-address": notice("could not be delivered\n<" + "a" * 5000 + "@example.se>: user unknown\n"),
        "nested-html": (b"From: MAILER-DAEMON@x\nSubject: Undeliverable\nMIME-Version: 1.0\n"
                        b"Content-Type: text/html\n\n" + b"<div>" * 20000 + b"undeliverable anna@example.se"),
    }


HOSTILE = _hostile()


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_input_never_raises(name: str, settings: config.Settings) -> None:
    raw = HOSTILE[name]
    report = read_bounce(parse_message(raw))
    if report is None:
        return
    d = decide_text_bounce(Inbound.from_smtp(raw, "", [VERP_ANNA], NOW), report, Context.from_settings(settings), NOW)
    json.dumps(dict(d.evidence))
    pickle.dumps(d)
    assert len(d.actions) <= 100
    if name == "5000-recipients":
        assert any("only the first" in n for n in d.evidence["notes"])
    if name == "long-address":
        assert d.actions == ()
