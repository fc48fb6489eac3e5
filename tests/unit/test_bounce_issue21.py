"""Issue 21: bounces and complaints read by the rules of their formats.

Each test is one rule, with small hand-written messages (not the development set's
files): the recipient we sent to when a report's Final-Recipient is unusable (RFC 3464
section 2.3, RFC 3461 section 4, RFC 6533 section 3), reserved names, notices that name
only a local part, SMTPUTF8 addresses in text (RFC 6531), blank lines before the header,
hard or soft by the words of RFC 3463's classes, bounces about mail we did not send,
delay warnings in other languages, forwarded and redacted complaints, and the
`recipients` of `classify --json`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

import config
from handlers.bounces.dsn import DsnRecipient, resolve_address
from handlers.bounces.reasons import explain
from handlers.bounces.status import BounceReason
from handlers.classify import classify
from handlers.context import Context
from handlers.mail.addresses import normalise
from handlers.mail.message import parse_message
from handlers.model import ActionType, Decision, Inbound, Kind
from worker.cli.main import classify_record

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
ROOT = Path(__file__).resolve().parents[2]
CTX = Context.from_settings(config.load({}, ROOT / "config" / "example.toml"))
OUR_ORIGINAL = ("Return-Path: <bounces@mail.example.org>\n"
                "From: Alumninytt <alumni@mail.example.org>\n"
                "To: {to}\n"
                "Subject: Alumninytt\n"
                "Message-ID: <n1.{n}@mail.example.org>\n"
                "\nHej!\n")


def run(raw: bytes | str) -> Decision:
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    return classify(Inbound.from_file(data, "t", NOW), CTX, NOW)


def dsn(*groups: str, to: str = "bounces@mail.example.org", original: str | None = None,
        notice: str = "Delivery failed.", headers: str = "", nl: str = "\n") -> str:
    parts = [
        "Return-Path: <>\n"
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\n"
        f"To: {to}\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        f"{headers}"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        f"--b\nContent-Type: text/plain\n\n{notice}\n\n"
        "--b\nContent-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mx.example.net\n\n" + "\n\n".join(groups) + "\n\n"
    ]
    if original is not None:
        parts.append(f"--b\nContent-Type: message/rfc822\n\n{original}\n")
    parts.append("--b--\n")
    return "".join(parts).replace("\n", nl)


def group(final: str | None, original: str | None = None, status: str = "5.1.1", action: str = "failed",
          diag: str | None = None) -> str:
    lines = []
    if original is not None:
        lines.append(f"Original-Recipient: {original}")
    if final is not None:
        lines.append(f"Final-Recipient: {final}")
    lines += [f"Action: {action}", f"Status: {status}"]
    if diag:
        lines.append(f"Diagnostic-Code: {diag}")
    return "\n".join(lines)


def acted(d: Decision) -> dict[str, ActionType]:
    return {a.address: a.type for a in d.actions}


# ------------------------------------------------------------------ 1. the address we sent to


@pytest.mark.parametrize("final", [
    "rfc822; @relay1.kund.example,@mbx.kund.example:lisa@store3.kund.example",   # RFC 5321 source route
    "rfc822; <>",
    "system; <>",
    "rfc822; lisa",                                                                # a bare local part
    "rfc822; lisa.k@mailstore7.internal",                                         # an internal host
    "rfc822; lisa@localhost.localdomain",
    "rfc822; IMCEAEX-_O=KUND_OU=EXCHANGE_CN=RECIPIENTS_CN=LISA@kund.example",     # Exchange encapsulation
    "rfc822; lisa@mbx-02.prod.kund.example",                                      # a host inside her domain
    "rfc822; lisa@[192.0.2.9]",
    "x400; /G=Lisa/S=Kvist/O=KUND/C=SE/",
])
def test_unusable_final_recipient_gives_way_to_original_recipient(final: str) -> None:
    d = run(dsn(group(final, original="rfc822;lisa@kund.example"),
                original=OUR_ORIGINAL.format(to="<lisa@kund.example>", n=1)))
    assert acted(d) == {"lisa@kund.example": ActionType.SUPPRESS}
    (row,) = d.evidence["recipients"]
    assert row["address_source"] == "original-recipient"


def test_usable_final_recipient_is_kept() -> None:
    # A public address is the one the report is about, even after a forward.
    d = run(dsn(group("rfc822; lisa@nytt-jobb.example", original="rfc822;lisa@kund.example"),
                original=OUR_ORIGINAL.format(to="<lisa@kund.example>", n=2)))
    assert acted(d) == {"lisa@nytt-jobb.example": ActionType.SUPPRESS}


def test_original_recipient_xtext_and_utf8_escapes_are_undone() -> None:
    # RFC 3461 section 4: "+2B" is "+"; RFC 6533 section 3: \x{HHHH}.
    d = run(dsn(group("rfc822; jonas@mx9.internal", original="rfc822;jonas+2Bnyheter@kund.example")))
    assert list(acted(d)) == ["jonas+nyheter@kund.example"]
    d = run(dsn(group("rfc822; ostein@mbx4.kund.example", original="utf-8;\\x{F8}ystein@kund.example")))
    assert list(acted(d)) == ["øystein@kund.example"]


@pytest.mark.parametrize("header", ["X-Original-To: per@kund.example\nTo: Alumninytt:;", "To: <per@kund.example>"])
def test_returned_original_names_the_recipient(header: str) -> None:
    original = ("From: Alumninytt <alumni@mail.example.org>\n" + header +
                "\nMessage-ID: <n3@mail.example.org>\nSubject: x\n\nHej\n")
    d = run(dsn(group("rfc822;"), original=original))
    assert list(acted(d)) == ["per@kund.example"]
    assert d.evidence["recipients"][0]["address_source"] == "returned original"


def test_verp_address_in_the_bounce_to_names_the_recipient() -> None:
    d = run(dsn(group("rfc822; p.k@localhost.localdomain"), to="bounces+per.karlsson=kund.example@mail.example.org"))
    assert list(acted(d)) == ["per.karlsson@kund.example"]


def test_original_to_does_not_replace_another_local_part() -> None:
    # Another mailbox than the original's To, at an unusable host: only our VERP address
    # would be proof enough; the To alone is not.
    original = OUR_ORIGINAL.format(to="<per@kund.example>", n=4)
    d = run(dsn(group("rfc822; helpdesk@mailhub"), original=original))
    assert "per@kund.example" not in acted(d)


@given(final=st.text(max_size=80), orig=st.one_of(st.none(), st.text(max_size=80)))
@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_resolved_address_is_one_the_report_or_the_original_names(final: str, orig: str | None) -> None:
    sent_to = ("per@kund.example",)
    address, _type, source = resolve_address(
        DsnRecipient(final_recipient=final, original_recipient=orig), sent_to, sole=True)
    assert source in ("final-recipient", "original-recipient", "returned original", "none")
    if address is not None:
        assert normalise(address) == address
        if source == "returned original":
            assert address in sent_to


# ------------------------------------------------------------------ 2. reserved names


@pytest.mark.parametrize("address", ["erik@kontor.local", "nina@qa.test", "x@y.invalid", "sv@bücher.local"])
def test_reserved_names_are_addresses(address: str) -> None:
    assert normalise(address.upper() if address.isascii() else address) == address
    d = run(dsn(group(f"rfc822; {address}"), original=OUR_ORIGINAL.format(to=address, n=5)))
    assert list(acted(d)) == [address]


def test_single_label_and_empty_labels_are_still_refused() -> None:
    assert normalise("a@localhost") is None and normalise("a@.local") is None and normalise("a@@b.test") is None


# ------------------------------------------------------------------ 3. notices naming a local part

LOCAL_NOTICE = """Return-Path: <>
From: Mail Delivery Subsystem <MAILER-DAEMON@mx.kund.example>
To: bounces@mail.example.org
Subject: Returned mail: see transcript for details
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="m"

--m
Content-Type: text/plain

   ----- The following addresses had permanent fatal errors -----
<{local}>

   ----- Transcript of session follows -----
550 5.1.1 <{local}>... User unknown

--m
Content-Type: message/rfc822

{original}
--m--
"""


def test_local_part_is_completed_from_the_original() -> None:
    d = run(LOCAL_NOTICE.format(local="britt", original=OUR_ORIGINAL.format(to="<britt@kund.example>", n=6)))
    assert d.kind is Kind.BOUNCE and acted(d) == {"britt@kund.example": ActionType.SUPPRESS}


def test_other_local_part_is_not_completed() -> None:
    d = run(LOCAL_NOTICE.format(local="someone", original=OUR_ORIGINAL.format(to="<britt@kund.example>", n=7)))
    assert "britt@kund.example" not in acted(d)


# ------------------------------------------------------------------ 4. blank lines before the header


@pytest.mark.parametrize("lead", [b"\r\n", b"\n\n", b" \r\n\t\r\n"])
def test_blank_lines_before_the_header(lead: bytes) -> None:
    raw = dsn(group("rfc822; anna@kund.example"), original=OUR_ORIGINAL.format(to="anna@kund.example", n=8),
              nl="\r\n").encode()
    d = run(lead + raw)
    assert acted(d) == {"anna@kund.example": ActionType.SUPPRESS}
    assert parse_message(lead + b"Subject: x\r\n\r\nbody")["Subject"] == "x"


# ------------------------------------------------------------------ 5. SMTPUTF8 addresses in text

UTF8_EXIM = """Return-Path: <>
From: Mail Delivery System <Mailer-Daemon@mx.kund.example>
To: bounces@mail.example.org
Subject: Mail delivery failed: returning message to sender
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  åsa.nyström@kund.example
    550 5.1.1 No such user

------ This is a copy of the message, including all the headers. ------

""" + OUR_ORIGINAL.format(to="åsa.nyström@kund.example", n=9)


def test_utf8_address_in_a_text_notice_is_read_whole() -> None:
    d = run(UTF8_EXIM)
    assert acted(d) == {"åsa.nyström@kund.example": ActionType.SUPPRESS}


# ------------------------------------------------------------------ 6. hard or soft


@pytest.mark.parametrize("status, text, hard", [
    ("5.2.1", "The email account that you tried to reach is disabled.", True),
    ("5.7.13", "User account disabled", True),
    ("5.0.0", "Recipient account has been deactivated", True),
    ("5.0.0", "This address has been discontinued", True),
    ("5.0.0", "mailbox closed by its owner", True),
    ("5.0.0", "jan@kund.example is not an active address at this site", True),
    ("5.0.0", "This address no longer accepts mail.", True),
    ("5.0.0", "The email account does not exist", True),
    ("5.0.0", "Sorry, no mailbox here by that name.", True),
    ("5.0.0", 'Unrouteable mail domain "kund.example"', True),
    ("5.0.0", "all relevant MX records point to non-existent hosts", True),
    ("5.2.1", "account temporarily disabled", False),
    ("4.2.1", "account disabled", False),
    ("5.1.8", "sender account disabled", False),
    ("5.2.2", "mailbox full", False),
    ("5.7.1", "blocked by spamcop", False),
])
def test_hard_is_a_permanent_problem_with_the_address(status: str, text: str, hard: bool) -> None:
    assert explain(status, text)[2] is hard


def test_generic_status_takes_the_specific_code_of_the_diagnostic() -> None:
    d = run(dsn(group("rfc822; anna@kund.example", status="5.0.0", diag="smtp; 550 5.1.2 bad destination system"),
                original=OUR_ORIGINAL.format(to="anna@kund.example", n=10)))
    (action,) = d.actions
    assert (action.status, action.type) == ("5.1.2", ActionType.SUPPRESS)


# ------------------------------------------------------------------ 7. mail we did not send


def test_backscatter_is_recorded_not_acted_on() -> None:
    stranger = ("Return-Path: <bounces@mail.example.org>\nFrom: Cheap <sales@spam.example>\n"
                "To: victim@victim.example\nMessage-ID: <x1@spam.example>\nSubject: offer\n\nBuy\n")
    d = run(dsn(group("rfc822; victim@victim.example"), original=stranger))
    assert d.actions == ()
    (row,) = d.evidence["recipients"]
    assert row["address"] == "victim@victim.example" and row["outcome"] is None
    assert row["proposed"] == "suppress" and "backscatter" in row["why_none"]
    assert d.evidence["related"] is False


def test_fake_notice_from_a_mailbox_is_recorded_not_acted_on() -> None:
    raw = ("Return-Path: <info@invoices.example>\nFrom: \"Delivery Status Notification\" <info@invoices.example>\n"
           "To: bounces@mail.example.org\nSubject: Delivery Status Notification (Failure)\n\n"
           "Delivery to the following recipient failed permanently:\n\n     payee@victim.example\n\n"
           "Open the attached invoice viewer.\n")
    d = run(raw)
    assert d.actions == ()


def test_plain_bounce_without_original_from_the_null_sender_still_acts() -> None:
    d = run(dsn(group("rfc822; anna@kund.example")))
    assert acted(d) == {"anna@kund.example": ActionType.SUPPRESS}


def test_our_message_id_ties_a_bounce_to_us() -> None:
    d = run(dsn(group("rfc822; anna@kund.example"), original=OUR_ORIGINAL.format(to="anna@kund.example", n=11)))
    assert d.evidence["related"] is True and d.actions


# ------------------------------------------------------------------ 8. delay warnings


@pytest.mark.parametrize("warning", ["Detta är endast en varning, du behöver inte skicka om meddelandet.",
                                     "Dette er kun en advarsel.", "Dies ist nur eine Warnung.",
                                     "Tämä on vain varoitus."])
def test_delay_warning_in_other_languages_is_not_a_failure(warning: str) -> None:
    raw = ("Return-Path: <>\nFrom: MAILER-DAEMON@mx.kund.example\nTo: bounces@mail.example.org\n"
           "Subject: Leverans fördröjd\n\n"
           f"Meddelandet har ännu inte levererats till:\n\n    anna@kund.example\n\n{warning}\n")
    d = run(raw)
    assert all(a.type not in (ActionType.SUPPRESS, ActionType.SOFT_BOUNCE) for a in d.actions)


# ------------------------------------------------------------------ 9. complaints, challenges, auto-replies

JMRP_ORIGINAL = ("Return-Path: <bounces+sten=outlook.example@mail.example.org>\n"
                 "From: Evenemang <events@mail.example.org>\nTo: <redacted>\n"
                 "Message-ID: <j1@mail.example.org>\nSubject: Inbjudan\n\nHej\n")


def jmrp(original: str = JMRP_ORIGINAL) -> str:
    return ("From: staff@hotmail.com\nTo: fbl@mail.example.org\n"
            "Subject: complaint about message from 198.51.100.25\nMIME-Version: 1.0\n"
            'Content-Type: multipart/mixed; boundary="j"\n\n'
            "--j\nContent-Type: text/plain\n\nThis is an email abuse report.\n\n"
            f"--j\nContent-Type: message/rfc822\n\n{original}\n--j--\n")


def test_jmrp_without_original_recipient_header_is_a_complaint() -> None:
    d = run(jmrp())
    assert d.kind is Kind.COMPLAINT
    assert "sten@outlook.example" in (d.evidence.get("recipients") or [])


def test_jmrp_forwarded_as_an_attachment_is_a_complaint() -> None:
    fwd = ("From: IT <drift@isp.example>\nTo: fbl@mail.example.org\nSubject: Fwd: complaint about message from x\n"
           'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="f"\n\n'
           "--f\nContent-Type: text/plain\n\nSee below.\n\n"
           f"--f\nContent-Type: message/rfc822\n\n{jmrp()}\n--f--\n")
    d = run(fwd)
    assert d.kind is Kind.COMPLAINT and "sten@outlook.example" in (d.evidence.get("recipients") or [])


def test_jmrp_forwarded_inline_is_a_complaint() -> None:
    raw = ("From: Admin <admin@isp.example>\nTo: fbl@mail.example.org\nSubject: FW: complaint about message from x\n\n"
           "Forwarding the complaint.\n\n-----Original Message-----\nFrom: staff@hotmail.com\n"
           "Subject: complaint about message from 198.51.100.25\n\nThis is an email abuse report.\n\n"
           "X-HmXmrOriginalRecipient: <oddvar@outlook.example>\n"
           + JMRP_ORIGINAL.replace("bounces+sten=outlook.example@", "bounces@"))
    d = run(raw)
    assert d.kind is Kind.COMPLAINT and "oddvar@outlook.example" in (d.evidence.get("recipients") or [])


def test_arf_forwarded_by_a_postmaster_is_a_complaint() -> None:
    arf = ("From: fbl@isp.example\nTo: fbl@mail.example.org\nSubject: Abuse report\nMIME-Version: 1.0\n"
           'Content-Type: multipart/report; report-type=feedback-report; boundary="a"\n\n'
           "--a\nContent-Type: text/plain\n\nA complaint.\n\n"
           "--a\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\nUser-Agent: x/1\nVersion: 1\n"
           "Original-Rcpt-To: <tone@isp.example>\n\n"
           f"--a\nContent-Type: message/rfc822\n\n{JMRP_ORIGINAL}\n--a--\n")
    fwd = ("From: Postmaster <postmaster@isp.example>\nTo: fbl@mail.example.org\nSubject: Fwd: Abuse report\n"
           'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="f"\n\n'
           "--f\nContent-Type: text/plain\n\nFYI\n\n"
           f"--f\nContent-Type: message/rfc822\n\n{arf}\n--f--\n")
    d = run(fwd)
    assert d.kind is Kind.COMPLAINT and "tone@isp.example" in (d.evidence.get("recipients") or [])


def test_challenge_response_is_not_a_bounce() -> None:
    raw = ("From: Spam Guard <guard@kund.example>\nTo: bounces@mail.example.org\n"
           "Subject: Please confirm you are human\nAuto-Submitted: auto-replied\n\n"
           "Your message to anna@kund.example is held. Please confirm you are human by visiting\n"
           "https://guard.kund.example/confirm/abc\n")
    d = run(raw)
    assert d.kind is not Kind.BOUNCE and not d.actions


def test_dsn_marked_auto_replied_is_still_a_bounce() -> None:
    d = run(dsn(group("rfc822; anna@kund.example"), original=OUR_ORIGINAL.format(to="anna@kund.example", n=12),
                headers="Auto-Submitted: auto-replied\nX-Autoreply: yes\n"))
    assert d.kind is Kind.BOUNCE and acted(d) == {"anna@kund.example": ActionType.SUPPRESS}


# ------------------------------------------------------------------ classify --json recipients


def test_classify_json_lists_every_recipient_with_its_effect() -> None:
    original = OUR_ORIGINAL.format(to="a@kund.example", n=13)
    d = run(dsn(group("rfc822; a@kund.example"), group("rfc822; b@kund.example", status="4.4.1", action="delayed"),
                original=original))
    record = classify_record("x.eml", d)
    assert {"file", "kind", "actions", "review", "verified", "why"} <= set(record)
    by = {r["address"]: r for r in record["recipients"]}
    assert by["a@kund.example"] == {"address": "a@kund.example", "action": "failed", "status": "5.1.1",
                                    "reason": "user_unknown", "hard": True, "effect": "suppress"}
    assert by["b@kund.example"]["effect"] == "none" and by["b@kund.example"]["action"] == "delayed"
    assert by["b@kund.example"]["why"]


def test_classify_json_says_why_a_backscatter_recipient_is_not_acted_on() -> None:
    stranger = ("Return-Path: <bounces@mail.example.org>\nFrom: <s@spam.example>\nTo: v@victim.example\n"
                "Message-ID: <x2@spam.example>\n\nBuy\n")
    (entry,) = classify_record("x.eml", run(dsn(group("rfc822; v@victim.example"), original=stranger)))["recipients"]
    assert entry["effect"] == "none" and "backscatter" in entry["why"] and entry["hard"] is True


# ------------------------------------------------------------------ 10. text notices: the copy, languages, delays, forms


def text_notice(body: str, *, subject: str = "failure notice", sender: str = "MAILER-DAEMON@mx.kund.example",
                to: str = "bounces@mail.example.org") -> str:
    return (f"Return-Path: <>\nFrom: {sender}\nTo: {to}\nSubject: {subject}\n"
            "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n" + body)


QMAIL_HEAD = ("Hi. This is the qmail-send program at mx.kund.example.\n"
              "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
              "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
              "<{rcpt}>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"
              "--- Below this line is a copy of the message.\n\n")


def test_backscatter_in_a_text_notice_is_read_from_its_pasted_copy() -> None:
    # qmail pastes the returned message after its marker line; that copy used our bounce
    # address as its return path but is someone else's spam: recorded, never acted on.
    copy = ("Return-Path: <bounces@mail.example.org>\nFrom: Prize <win@prize.example>\n"
            "To: nils@kund.example\nSubject: You won\nMessage-ID: <77.x@prize.example>\n\nClaim now\n")
    d = run(text_notice(QMAIL_HEAD.format(rcpt="nils@kund.example") + copy))
    assert d.kind is Kind.BOUNCE and d.actions == ()
    assert d.evidence["related"] is False and "backscatter" in d.evidence["relation"]
    assert d.evidence["original"]["message_id"] == "<77.x@prize.example>"
    (row,) = d.evidence["recipients"]
    assert row["address"] == "nils@kund.example" and row["proposed"] == "suppress"


def test_a_pasted_copy_of_our_own_message_ties_the_notice_to_us() -> None:
    d = run(text_notice(QMAIL_HEAD.format(rcpt="nils@kund.example") + OUR_ORIGINAL.format(to="nils@kund.example", n=21)))
    assert d.evidence["related"] is True
    assert acted(d) == {"nils@kund.example": ActionType.SUPPRESS}


@pytest.mark.parametrize("marker", ["------ This is a copy of the message, including all the headers. ------\n\n",
                                    "Original message follows.\n", ""])
def test_inline_original_reads_the_header_block_after_the_marker(marker: str) -> None:
    from handlers.bounces.original import inline_original

    found = inline_original(marker + "Return-Path: <r@a.example>\nMessage-ID:\n <m1@a.example>\n"
                            "To: x@b.example\n\nBody: not a header\n")
    assert found is not None and found.message_id == "<m1@a.example>" and found.to == "x@b.example"
    assert inline_original("Original message follows.\n\nJust some text, no header.\n") is None
    assert inline_original("") is None


@pytest.mark.parametrize("subject, body", [
    ("Toimitus epäonnistui: Uutiskirje",
     "Viestiäsi ei voitu toimittaa vastaanottajalle:\n\n    {rcpt}\n\nSyy: tuntematon vastaanottaja.\n"),
    ("Onbestelbaar: Nieuwsbrief",
     "Uw bericht kon niet worden afgeleverd bij:\n\n    {rcpt}\n\nReden: onbekende ontvanger.\n"),
    ("No se puede entregar: Boletín",
     "No se pudo entregar su mensaje a:\n\n    {rcpt}\n\nMotivo: usuario desconocido.\n"),
    ("Non recapitabile: Notiziario",
     "Impossibile recapitare il messaggio a:\n\n    {rcpt}\n\nMotivo: utente sconosciuto.\n"),
    ("Não é possível entregar: Boletim",
     "Não foi possível entregar a mensagem para:\n\n    {rcpt}\n\nMotivo: o destinatário não existe.\n"),
    ("Nie można dostarczyć: Biuletyn",
     "Wiadomość nie została dostarczona do:\n\n    {rcpt}\n\nPowód: adres nie istnieje.\n"),
])
def test_failure_notices_in_more_languages_name_the_recipient(subject: str, body: str) -> None:
    # A custom notice with no MTA form and no status code, from a postmaster: read by the
    # language's own "could not be delivered", and believed hard when it says the address
    # does not exist or is unknown.
    d = run(text_notice(body.format(rcpt="kari@kund.example"), subject=subject, sender="postmaster@kund.example"))
    assert d.kind is Kind.BOUNCE
    (row,) = d.evidence["recipients"]
    assert row["address"] == "kari@kund.example" and row["action"] == "failed"
    assert row["reason"] == "user_unknown"


def test_finnish_notice_with_a_code_is_a_hard_bounce() -> None:
    d = run(text_notice("Viestiäsi ei voitu toimittaa seuraavalle vastaanottajalle:\n\n    aino@kund.example\n\n"
                        "Syy: postilaatikkoa ei ole olemassa (550 5.1.1).\n", subject="Ei voitu toimittaa: Uutiset",
                        sender="postmaster@kund.example"))
    assert acted(d) == {"aino@kund.example": ActionType.SUPPRESS}
    assert d.actions[0].status == "5.1.1"


@pytest.mark.parametrize("tail", [
    "Delivery of this message has been delayed for 4 hours; it will be retried.\nYou do not need to send it again.",
    "THIS IS A WARNING MESSAGE ONLY. YOU DO NOT NEED TO RESEND YOUR MESSAGE.",
    "The message will be retried for 5 days.",
])
def test_english_delay_wording_is_not_a_failure(tail: str) -> None:
    # OpenSMTPD-like notice: its recipient line is the same in a failure and a warning;
    # only the closing words say delivery is still being tried.
    d = run(text_notice("Hi!\n\nThis is the MAILER-DAEMON, please DO NOT REPLY to this email.\n\n"
                        "An error has occurred while attempting to deliver a message for\n"
                        "the following list of recipients:\n\nnora@kund.example: Network error on destination MXs\n\n"
                        + tail + "\n", subject="Delivery status notification: warning"))
    (row,) = d.evidence["recipients"]
    assert row["action"] == "delayed" and row["outcome"] is None
    assert all(a.type not in (ActionType.SUPPRESS, ActionType.SOFT_BOUNCE) for a in d.actions)


def test_same_notice_without_delay_wording_is_a_failure() -> None:
    d = run(text_notice("Hi!\n\nThis is the MAILER-DAEMON, please DO NOT REPLY to this email.\n\n"
                        "An error has occurred while attempting to deliver a message for\n"
                        "the following list of recipients:\n\nnora@kund.example: 550 5.2.2 Mailbox full\n"))
    assert acted(d) == {"nora@kund.example": ActionType.SOFT_BOUNCE}


@pytest.mark.parametrize("reason, outcome, hard", [
    ("user not found", ActionType.SUPPRESS, True),
    ("mailbox full", ActionType.SOFT_BOUNCE, False),
])
def test_groupwise_list_with_reasons_in_parentheses(reason: str, outcome: ActionType, hard: bool) -> None:
    # GroupWise's agent names each recipient with its reason in parentheses and no code;
    # a known form, so "user not found" is the address's own problem, not a filter's guess.
    d = run(text_notice("The message that you sent was undeliverable to the following:\n"
                        f"\tmarit@kund.example ({reason})\n\tother@kund.example\n\nPossible causes:\n"
                        "\tThe e-mail address was typed incorrectly\n", subject="Undeliverable: Nyheter",
                        sender="Mail Delivery System <postmaster@gw.kund.example>"))
    assert acted(d) == {"marit@kund.example": outcome}
    assert d.evidence["form"] == "groupwise" and d.actions[0].hard is hard


# ------------------------------------------------------------------ 11. more rules of the formats (shared corpus gaps)


def test_x400_address_gives_its_internet_address_attribute() -> None:
    # RFC 2156: an O/R address carries the RFC 822 address as a domain-defined attribute.
    d = run(text_notice("Your message\n\n  To:      news@mail.example.org\n  Subject: Nyheter\n\n"
                        "did not reach the following recipient(s):\n\n"
                        "c=SE;a= ;p=Kund;o=Site1;dda:SMTP=Bo.Ek@kund.example; on Mon, 2 Mar 2026 10:00:00 +0100\n"
                        "    The recipient name is not recognized\n", subject="Undeliverable: Nyheter"))
    assert [r["address"] for r in d.evidence["recipients"]] == ["bo.ek@kund.example"]


def _wrapped(sender: str) -> str:
    inner = ("From: postmaster@mx.kund.example\nTo: bounces@mail.example.org\nSubject: Delivery Status Notification\n"
             'MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary="in"\n\n'
             "--in\nContent-Type: text/plain\n\nDelivery failed.\n\n--in\nContent-Type: message/delivery-status\n\n"
             "Reporting-MTA: dns; mx.kund.example\n\nFinal-Recipient: rfc822; ulla@kund.example\nAction: failed\n"
             "Status: 5.1.1\n\n--in--\n")
    return (f"From: {sender}\nTo: bounces@mail.example.org\nSubject: Delivery Status Notification (Failure)\n"
            'MIME-Version: 1.0\nContent-Type: multipart/mixed; report-type=delivery-status; boundary="out"\n\n'
            f"--out\nContent-Type: message/rfc822\n\n{inner}\n--out--\n")


def test_a_report_wrapped_whole_by_its_gateway_is_read_from_inside() -> None:
    d = run(_wrapped("postmaster@kund.example"))
    assert d.kind is Kind.BOUNCE and acted(d) == {"ulla@kund.example": ActionType.SUPPRESS}
    assert "read from the report attached to this notice" in d.evidence["notes"]


def test_a_report_forwarded_by_a_person_is_not_unwrapped() -> None:
    d = run(_wrapped("Ulla Berg <ulla.berg@kund.example>"))
    assert d.kind is not Kind.BOUNCE and d.actions == ()


@pytest.mark.parametrize("status, diag, hard", [
    ("5.3.2", "smtp; 521 5.3.2 <a@kund.example>: Recipient address rejected", True),
    ("5.1.10", "smtp; 556 5.1.10 Recipient address rejected", True),
    ("5.7.1", "smtp; 521-5.7.1 client blocked using a DNS blocklist", False),
])
def test_rfc7504_reply_codes(status: str, diag: str, hard: bool) -> None:
    # RFC 7504: 521 with 5.3.2 (host does not accept mail) and 556 with 5.1.10 (domain
    # does not accept mail) are about the destination; a 521 for a blocklist is not.
    d = run(dsn(group("rfc822; a@kund.example", status=status, diag=diag)))
    (row,) = d.evidence["recipients"]
    assert row["hard"] is hard


def test_a_sender_status_code_outweighs_recipient_words() -> None:
    # X.1.8 names our sender's domain; "does not exist" is then about it, not the recipient.
    d = run(dsn(group("rfc822; a@kund.example", status="5.1.8",
                      diag="smtp; 553 5.1.8 <news@mail.example.org>... Domain of sender address does not exist")))
    (row,) = d.evidence["recipients"]
    assert row["hard"] is False and acted(d) == {"a@kund.example": ActionType.SOFT_BOUNCE}


@pytest.mark.parametrize("body", [
    "Delivery of email to this address\n\n\"pia@kund.example\"\n\nhas been postponed due to a full mailbox.\n"
    "We will continue to try to deliver your message over the next few days.\n",
    "Your message could not be delivered to the following recipients:\n\npia@kund.example\n\n"
    "Please do not resend your original message. Delivery attempts will continue to be made for 5 day(s).\n",
])
def test_postponed_delivery_is_a_delay_not_a_failure(body: str) -> None:
    d = run(text_notice(body, subject="Mail Delivery Warning", sender="Mail Delivery System <postmaster@kund.example>"))
    (row,) = d.evidence["recipients"]
    assert row["address"] == "pia@kund.example" and row["action"] == "delayed"
    assert all(a.type not in (ActionType.SUPPRESS, ActionType.SOFT_BOUNCE) for a in d.actions)


@pytest.mark.parametrize("intro", [
    "Unfortunately, we were not able to deliver your message to the following address(es):",
    "邮件无法发送到您指定的地址中。",
])
def test_qmail_like_notices_in_other_wordings_are_read(intro: str) -> None:
    d = run(text_notice(f"{intro}\n\n<jan@kund.example>:\nThis person's account is exceeding their quota.\n\n"
                        "--- Below the next line is a copy of the message.\n",
                        subject="failure notice", sender="MAILER-DAEMON@mx.kund.example"))
    (row,) = d.evidence["recipients"]
    assert row["address"] == "jan@kund.example" and row["action"] == "failed"


def test_quota_wording_exceeding() -> None:
    assert text_reason_of("This person's account is exceeding their quota.") == "mailbox_full"


def text_reason_of(text: str) -> str | None:
    from handlers.bounces.reasons import text_reason

    found = text_reason(text)
    return found.value if found is not None else None


def test_exim_undisclosed_address_gives_the_alias_it_was_generated_from() -> None:
    d = run(text_notice("This message was created automatically by mail delivery software.\n\n"
                        "A message that you sent could not be delivered to one or more of its\n"
                        "recipients. This is a permanent error. The following address(es) failed:\n\n"
                        "  an undisclosed address\n    (generated from alias@kund.example)\n",
                        subject="Mail delivery failed: returning message to sender",
                        sender="Mail Delivery System <Mailer-Daemon@mx.kund.example>"))
    assert [r["address"] for r in d.evidence["recipients"]] == ["alias@kund.example"]


def test_a_return_path_naming_a_mailer_daemon_marks_a_notice_without_from() -> None:
    raw = ("Return-Path: <MAILER-DAEMON@mx.kund.example>\nTo: bounces@mail.example.org\nSubject: Nyheter\n\n"
           "A message could not be delivered to:\nolle@kund.example\n"
           "The address above does not exist.\n")
    d = run(raw)
    assert d.kind is Kind.BOUNCE and [r["address"] for r in d.evidence["recipients"]] == ["olle@kund.example"]


def test_an_unreadable_notice_from_a_mail_system_is_recorded_not_read_as_a_reply() -> None:
    raw = text_notice("Your message could not be delivered.\nPlease unsubscribe me from nothing; no address here.\n",
                      subject="Undeliverable: Nyheter", sender="Mail Delivery Subsystem <MAILER-DAEMON@mx.kund.example>")
    d = run(raw)
    assert d.kind is Kind.UNKNOWN and d.actions == () and not d.review
    assert "delivery notice from a mail system" in d.reason


def test_a_postmasters_own_reply_to_a_notice_is_still_read_as_a_reply() -> None:
    raw = text_notice("Hello, this person has left us. Please remove the address from your list.\n",
                      subject="Re: Undeliverable: Nyheter", sender="Postmaster <postmaster@kund.example>")
    d = run(raw)
    assert d.kind in (Kind.REPLY, Kind.OPTOUT) and "delivery notice from a mail system" not in d.reason


def test_a_pasted_copy_claiming_our_sender_with_a_foreign_message_id_is_forged() -> None:
    copy = ("Return-Path: <bounces@mail.example.org>\nFrom: Alumninytt <alumni@mail.example.org>\n"
            "To: nils@kund.example\nSubject: Alumninytt\nMessage-ID: <1@elsewhere.example>\n\nHej\n")
    d = run(text_notice(QMAIL_HEAD.format(rcpt="nils@kund.example") + copy))
    assert d.actions == () and d.review and "forged" in d.evidence


def test_a_pasted_copy_cut_before_its_message_id_is_no_sign_of_forgery() -> None:
    # "The first lines of your message follow": a copy without Message-ID under our From.
    copy = "Return-Path: <bounces@mail.example.org>\nFrom: Alumninytt <alumni@mail.example.org>\nTo: nils@kund.example\n"
    d = run(text_notice(QMAIL_HEAD.format(rcpt="nils@kund.example") + copy))
    assert acted(d) == {"nils@kund.example": ActionType.SUPPRESS} and "forged" not in d.evidence
