"""Fuzzing handlers.classify: whatever arrives, it returns a Decision and never raises.

Random bytes, and messages built from random pieces of MIME (header fields, folding,
boundaries, transfer encodings, content types, multipart/report shapes, DSN and ARF
fields, encoded words, NUL bytes, truncation at any point). classify catches every
exception and turns it into an "unreadable: classifier error ..." decision; a fuzzed
message that gets there is a bug, so the test asserts it never does.

Bounded in CI: FUZZ_EXAMPLES examples per test (200). `make fuzz` sets
UNSUBD_FUZZ_EXAMPLES=20000 for a long run.
"""

from __future__ import annotations

import json
import os
import pickle
from datetime import datetime, timezone
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import config
from handlers.context import Context
from handlers import Decision, Inbound, classify

NOW = datetime(2026, 2, 1, 12, 0, tzinfo=timezone.utc)
ROOT = Path(__file__).resolve().parents[2]
FUZZ_EXAMPLES = int(os.environ.get("UNSUBD_FUZZ_EXAMPLES", "200"))
SETTINGS = config.load({}, ROOT / "config" / "example.toml")
RCPTS = ["bounces@mail.example.org", "alumni@mail.example.org", "fbl@mail.example.org",
         "unsubscribe+abc@mail.example.org", "reply@mail.example.org"]

FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=FUZZ_EXAMPLES <= 200,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_NAMES = ["From", "To", "Cc", "Subject", "Message-ID", "Date", "MIME-Version", "Content-Type",
          "Content-Transfer-Encoding", "Content-Disposition", "Auto-Submitted", "Precedence", "X-Autoreply",
          "Return-Path", "Received", "List-Unsubscribe", "Authentication-Results", "X-Failed-Recipients",
          "Reporting-MTA", "Final-Recipient", "Original-Recipient", "Action", "Status", "Diagnostic-Code",
          "Feedback-Type", "User-Agent", "Version", "Original-Rcpt-To", "Arrival-Date", "In-Reply-To"]
_TYPES = ["text/plain", "text/html", "multipart/mixed", "multipart/alternative", "multipart/report",
          "multipart/digest", "message/rfc822", "message/delivery-status", "message/global-delivery-status",
          "message/feedback-report", "text/rfc822-headers", "application/json", "application/octet-stream",
          "message/partial", "bogus", "text/", "/"]
_ENCODINGS = ["7bit", "8bit", "binary", "base64", "quoted-printable", "x-uuencode", "bogus"]
_ATOMS = st.sampled_from([
    "anna@example.net", "<bounces@mail.example.org>", "rfc822; user@example.se", "5.1.1", "4.2.2", "550 5.1.1",
    "failed", "delayed", "abuse", "unsubscribe", "avregistrera mig", "=?utf-8?q?J=C3=B6rg?=", "=?utf-8?b?////?=",
    "=?x?q?", ";", ";;;", "(comment", ")", '"', "\\", "<", ">", "@", "a.a.a.a.", "\x00", "\r", "\n", "\r\n ",
    "\t", "=", "=ZZ", "QUJD", "==", "--", "report-type=delivery-status", "report-type=feedback-report",
    "boundary=b", 'boundary="b"', "charset=utf-7", "charset=klingon", "auto-replied", "MAILER-DAEMON",
    "Undelivered Mail Returned to Sender", "Out of office", "dns; mx.example.net", "smtp; 550 user unknown",
])
_TEXT = st.lists(st.one_of(_ATOMS, st.text(max_size=30)), max_size=12).map("".join)


@st.composite
def _header(draw: st.DrawFn) -> str:
    name = draw(st.one_of(st.sampled_from(_NAMES), st.text(max_size=12)))
    if name == "Content-Type" and draw(st.booleans()):
        value = draw(st.sampled_from(_TYPES)) + draw(st.sampled_from(["", "; boundary=b", '; boundary="b"',
                                                                     "; report-type=delivery-status; boundary=b",
                                                                     "; report-type=feedback-report; boundary=b",
                                                                     "; charset=utf-8", " (c); boundary=b"]))
    elif name == "Content-Transfer-Encoding" and draw(st.booleans()):
        value = draw(st.sampled_from(_ENCODINGS))
    else:
        value = draw(_TEXT)
    fold = draw(st.sampled_from(["", "\r\n ", "\n\t"]))
    return f"{name}:{draw(st.sampled_from([' ', '', '  ']))}{value}{fold}{draw(_TEXT) if fold else ''}"


@st.composite
def _entity(draw: st.DrawFn, depth: int = 0) -> str:
    headers = draw(st.lists(_header(), max_size=6))
    nl = draw(st.sampled_from(["\r\n", "\n"]))
    kind = draw(st.sampled_from(["leaf", "leaf", "multipart", "message"])) if depth < 3 else "leaf"
    if kind == "multipart":
        boundary = draw(st.sampled_from(["b", "zz", "=_x", "b" * 70, ""]))
        headers.append(f'Content-Type: {draw(st.sampled_from(["multipart/mixed", "multipart/report"]))}; '
                       f'report-type={draw(st.sampled_from(["delivery-status", "feedback-report", "x"]))}; '
                       f'boundary="{boundary}"')
        parts = draw(st.lists(_entity(depth + 1), max_size=4))
        close = draw(st.sampled_from([f"--{boundary}--{nl}", "", f"--{boundary}{nl}"]))
        body = "".join(f"--{boundary}{nl}{part}{nl}" for part in parts) + close
    elif kind == "message":
        headers.append("Content-Type: " + draw(st.sampled_from(["message/rfc822", "message/delivery-status",
                                                                 "message/feedback-report", "text/rfc822-headers"])))
        body = draw(_entity(depth + 1))
    else:
        body = nl.join(draw(st.lists(_TEXT, max_size=8)))
    return nl.join(headers) + nl + nl + body


def _check(raw: bytes, rcpt: str, mail_from: str | None) -> None:
    item = Inbound.from_smtp(raw, mail_from, [rcpt], NOW)
    decision = classify(item, Context.from_settings(SETTINGS), NOW)
    assert isinstance(decision, Decision)
    assert "classifier error" not in decision.reason, (decision.reason, raw[:300])
    assert decision.item_id == item.id
    json.dumps(dict(decision.evidence), default=str)
    pickle.dumps(decision)


@FUZZ
@given(raw=st.binary(max_size=4000), rcpt=st.sampled_from(RCPTS))
def test_random_bytes(raw: bytes, rcpt: str) -> None:
    _check(raw, rcpt, "")


@FUZZ
@given(message=_entity(), rcpt=st.sampled_from(RCPTS), mail_from=st.sampled_from(["", "anna@example.net", None]),
       cut=st.one_of(st.none(), st.integers(min_value=0, max_value=4000)),
       charset=st.sampled_from(["utf-8", "latin-1"]))
def test_structured_mime(message: str, rcpt: str, mail_from: str | None, cut: int | None, charset: str) -> None:
    raw = message.encode(charset, "replace")
    _check(raw if cut is None else raw[:cut], rcpt, mail_from)


@FUZZ
@given(prefix=st.sampled_from([
    b"From: MAILER-DAEMON@mx.example.net\r\nSubject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"z\"\r\n\r\n--z\r\n"
    b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"
    b"Final-Recipient: rfc822; user@example.se\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--z--\r\n",
    b"From: fbl@isp.example\r\nSubject: complaint\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; "
    b"report-type=feedback-report; boundary=\"z\"\r\n\r\n--z\r\nContent-Type: text/plain\r\n\r\nabuse\r\n--z\r\n"
    b"Content-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: x/1\r\nVersion: 1\r\n\r\n--z\r\n"
    b"Content-Type: text/rfc822-headers\r\n\r\nFrom: news@mail.example.org\r\nTo: user@example.se\r\n\r\n--z--\r\n",
    b"From: Anna <anna@example.net>\r\nTo: alumni@mail.example.org\r\nSubject: Re: news\r\n\r\n"
    b"Please unsubscribe me.\r\n\r\nOn Mon, 2 Feb 2026, alumni@mail.example.org wrote:\r\n> news\r\n",
]), edits=st.lists(st.tuples(st.integers(min_value=0, max_value=1200), st.integers(min_value=0, max_value=40),
                             st.binary(max_size=20)), max_size=6), rcpt=st.sampled_from(RCPTS))
def test_mutated_reports(prefix: bytes, edits: list[tuple[int, int, bytes]], rcpt: str) -> None:
    raw = bytearray(prefix)
    for at, drop, insert in edits:
        at = min(at, len(raw))
        raw[at:at + drop] = insert
    _check(bytes(raw), rcpt, "")
