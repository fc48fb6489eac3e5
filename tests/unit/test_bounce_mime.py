"""handlers.mail.message: the MIME parser and header decoding that every reader stands on.

`parse_message` builds the same tree of `email.message.Message` objects as the
standard library's `BytesParser(policy=compat32)`, with its own (faster) cutting of
header blocks and boundaries, so it is compared with the standard parser on
hand-written messages of every shape readers rely on, and it must never raise on
mutated ones. Where the standard parser gives up (a boundary that never occurs,
a lost boundary parameter) it recovers the parts, and says so in a defect.
"""

from __future__ import annotations

import email.errors
import email.policy
from email.message import Message
from email.parser import BytesParser
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.mail.message import (
    MAX_PARSE_DEPTH,
    MAX_PARSED_PARTS,
    content_type,
    decode_words,
    header_text,
    iter_parts,
    parse_headers,
    parse_message,
    raw_header,
)


def shape(msg: Message, depth: int = 0) -> list[Any]:
    """Content types, raw header fields, envelope line and payload text of the whole tree."""
    out: list[Any] = [(depth, msg.get_content_type(), tuple(msg.items()), msg.get_unixfrom())]
    payload = msg.get_payload()
    if msg.get_content_type() == "message/delivery-status" and isinstance(payload, list):
        # The standard parser keeps an empty block for each extra blank line; the
        # delivery-status reader joins blocks at blank lines, so those are the same report.
        payload = [p for p in payload if p.items() or p.get_payload()]
    if isinstance(payload, list):
        for part in payload:
            out += shape(part, depth + 1)
    else:
        out.append((depth, "payload", payload))
    return out


def stdlib(raw: bytes) -> Message:
    return BytesParser(policy=email.policy.compat32).parsebytes(raw)


DSN = (
    b"Return-Path: <>\r\n"
    b"From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
    b"To: news@example.org\r\n"
    b"Subject: Undelivered Mail Returned to Sender\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/report; report-type=delivery-status;\r\n"
    b"\tboundary=\"B0/mx.example.net\"\r\n"
    b"\r\n"
    b"This is a MIME-encapsulated message.\r\n"
    b"\r\n"
    b"--B0/mx.example.net\r\n"
    b"Content-Description: Notification\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"<bo@example.se>: host mx.example.se[192.0.2.1] said: 550 5.1.1 User unknown\r\n"
    b"    (in reply to RCPT TO command)\r\n"
    b"\r\n"
    b"--B0/mx.example.net\r\n"
    b"Content-Type: message/delivery-status\r\n"
    b"\r\n"
    b"Reporting-MTA: dns; mx.example.net\r\n"
    b"\r\n"
    b"Final-Recipient: rfc822; bo@example.se\r\n"
    b"Action: failed\r\n"
    b"Status: 5.1.1\r\n"
    b"\r\n"
    b"--B0/mx.example.net\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: news@example.org\r\n"
    b"To: bo@example.se\r\n"
    b"Subject: Nyhetsbrev\r\n"
    b"\r\n"
    b"Hej!\r\n"
    b"\r\n"
    b"--B0/mx.example.net--\r\n"
    b"epilogue\r\n"
)

SAME_AS_STDLIB = {
    "dsn": DSN,
    "dsn with LF line ends": DSN.replace(b"\r\n", b"\n"),
    "plain": b"From: a@example.se\nSubject: hi\n\nhello\nworld\n",
    "no body": b"From: a@example.se\nSubject: hi\n",
    "no header": b"\nbody only\n",
    "unix from line": b"From MAILER-DAEMON Thu Apr 29 23:34:45 2015\nFrom: a@example.se\n\nx\n",
    "folded header": b"Subject: one\n two\n\tthree\nX-Empty:\n  later\n\nx\n",
    "line that is not a header": b"From: a@example.se\nthis is not a header\nSubject: x\n\nbody\n",
    "nested multipart": (b"Content-Type: multipart/mixed; boundary=outer\n\n--outer\n"
                         b"Content-Type: multipart/alternative; boundary=inner\n\n--inner\n"
                         b"Content-Type: text/plain\n\nplain\n--inner\nContent-Type: text/html\n\n<p>html</p>\n"
                         b"--inner--\n--outer\nContent-Type: text/plain\n\nsecond\n--outer--\n"),
    "digest": (b"Content-Type: multipart/digest; boundary=d\n\n--d\n\nFrom: x@example.se\n\none\n"
               b"--d\n\nFrom: y@example.se\n\ntwo\n--d--\n"),
    "missing close boundary": (b"Content-Type: multipart/mixed; boundary=b\n\npre\n--b\n"
                               b"Content-Type: text/plain\n\nfirst\n--b\nContent-Type: text/plain\n\nlast\n"),
    "boundary with trailing blanks": (b"Content-Type: multipart/mixed; boundary=b\n\n--b   \n\none\n--b--  \n"),
    "8-bit header and body": "Subject: räksmörgås\nFrom: Åsa <asa@example.se>\n\nhälsningar\n".encode("utf-8"),
}


@pytest.mark.parametrize("raw", SAME_AS_STDLIB.values(), ids=SAME_AS_STDLIB.keys())
def test_same_tree_as_the_standard_parser(raw: bytes) -> None:
    assert shape(parse_message(raw)) == shape(stdlib(raw))


def test_preamble_epilogue_and_defects_like_the_standard_parser() -> None:
    ours, theirs = parse_message(DSN), stdlib(DSN)
    assert (ours.preamble, ours.epilogue) == (theirs.preamble, theirs.epilogue)
    bad = b"From: a@example.se\nthis is not a header\n\nx\n"
    assert [type(d) for d in parse_message(bad).defects] == [type(d) for d in stdlib(bad).defects]
    no_close = SAME_AS_STDLIB["missing close boundary"]
    assert [type(d) for d in parse_message(no_close).defects] == [email.errors.CloseBoundaryNotFoundDefect]


def test_a_boundary_that_never_occurs_is_recovered_from_the_body() -> None:
    # The declared boundary differs from the one the body uses (rewritten headers).
    raw = DSN.replace(b'boundary="B0/mx.example.net"', b'boundary="B1/mx.example.net"')
    msg = parse_message(raw)
    assert [content_type(p) for p, _ in iter_parts(msg)] == [
        "multipart/report", "text/plain", "message/delivery-status", "message/rfc822"]
    assert any(isinstance(d, email.errors.StartBoundaryNotFoundDefect) for d in msg.defects)
    # The standard parser keeps the whole body as text instead.
    assert isinstance(stdlib(raw).get_payload(), str)


def test_a_lost_boundary_parameter_is_recovered_from_the_body() -> None:
    # "boundary=" folded without leading white space becomes body text.
    raw = (b"From: post_master@example.com\nContent-Type: multipart/mixed;\nboundary=\"P0\"\n\n"
           b"--P0\nContent-Type: text/plain\n\nError: Invalid user address\n--P0--\n")
    msg = parse_message(raw)
    assert [content_type(p) for p, _ in iter_parts(msg)] == ["multipart/mixed", "text/plain"]
    assert any(isinstance(d, email.errors.NoBoundaryInMultipartDefect) for d in msg.defects)


def test_deep_nesting_stops_without_error() -> None:
    raw = b"Subject: bottom\n\nunsubscribe\n"
    for level in range(200):
        raw = b"From: relay%d@example.net\nContent-Type: message/rfc822\n\n" % level + raw
    msg = parse_message(raw)
    depth = sum(1 for _ in iter_parts(msg, into_messages=True))
    assert 1 < depth <= MAX_PARSE_DEPTH + 1
    assert not any("ParserFailure" in type(d).__name__ for d in msg.defects)


def test_delivery_status_blocks_are_header_only_parts() -> None:
    status = next(p for p, _ in iter_parts(parse_message(DSN)) if content_type(p) == "message/delivery-status")
    blocks = status.get_payload()
    assert [dict(b.items()) for b in blocks] == [
        {"Reporting-MTA": "dns; mx.example.net"},
        {"Final-Recipient": "rfc822; bo@example.se", "Action": "failed", "Status": "5.1.1"},
    ]


def test_parse_headers_reads_a_header_block() -> None:
    msg = parse_headers(b"From: news@example.org\r\nMessage-ID: <m1@example.org>\r\nTo: bo@example.se\r\n")
    assert header_text(msg, "message-id") == "<m1@example.org>"
    assert parse_headers(b"\xff\xfe garbage").items() == []


# ------------------------------------------------------------------ header text


@pytest.mark.parametrize(("raw", "name", "expected"), [
    (b"Subject: =?utf-8?q?Re=3A_hej?=  =?utf-8?q?_d=C3=A5?= tail", "Subject", "Re: hej då tail"),
    (b"Subject: =?ISO-8859-1?B?5fbk?=", "Subject", "åöä"),
    (b"Subject: =?utf-8*sv?Q?r=C3=A4ka?=", "Subject", "räka"),
    (b"From: =?utf-8?q?Doe=2C_John?= <j@example.se>", "From", '"Doe, John" <j@example.se>'),
    (b"Subject: =?utf-8?q?Doe=2C_John?=", "Subject", "Doe, John"),
    (b"Subject: =?x-unknown?q?caf=C3=A9?=", "Subject", "café"),
    (b"Subject: =?base64?q?abc?=", "Subject", "abc"),
    (b"Subject: folded\r\n  line", "Subject", "folded line"),
    (b"Subject: r\xc3\xa4ksm\xc3\xb6rg\xc3\xa5s", "Subject", "räksmörgås"),
    (b"Subject: r\xe4ka", "Subject", "räka"),
])
def test_header_text_decodes(raw: bytes, name: str, expected: str) -> None:
    assert header_text(parse_message(raw + b"\r\n\r\nbody"), name) == expected


def test_header_text_never_raises_on_broken_words() -> None:
    msg = parse_message(b"From: =?utf-8?q?broken=ZZ?= <\xff@x>\r\nSubject: =?utf-8?b?!!!?= =?utf-8?b?w6?=\r\n\r\n")
    assert isinstance(header_text(msg, "From"), str)
    assert isinstance(header_text(msg, "Subject"), str)
    assert header_text(msg, "X-Missing") is None
    assert decode_words("=?utf-8?q?ok?= plain") == "ok plain"


def test_first_field_wins_and_names_are_case_insensitive() -> None:
    msg = parse_message(b"Received: one\r\nreceived: two\r\n\r\n")
    assert raw_header(msg, "RECEIVED") == "one"


def test_content_type_of_a_parameter_folded_without_semicolon() -> None:
    msg = parse_message(b"Content-Type: text/plain\n   charset=\"iso-2022-jp\"\n\nx\n")
    assert content_type(msg) == "text/plain"


# ------------------------------------------------------------------ never raises


def _mutate(raw: bytes, cuts: list[tuple[int, int, bytes]]) -> bytes:
    for at, length, insert in cuts:
        at %= len(raw) + 1
        raw = raw[:at] + insert + raw[at + length:]
    return raw


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(list(SAME_AS_STDLIB.values())),
       st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 40),
                          st.sampled_from([b"", b"\r\n", b"\n\n", b"--B0/mx.example.net\r\n", b"--", b":",
                                           b"Content-Type: multipart/mixed; boundary=B0/mx.example.net\r\n",
                                           b"Content-Type: message/rfc822\r\n\r\n", b"\x00", b"\xff\xfe",
                                           b"=?utf-8?b?", b" \t", b"\r"])),
                max_size=8))
def test_mutated_messages_never_raise(raw: bytes, cuts: list[tuple[int, int, bytes]]) -> None:
    msg = parse_message(_mutate(raw, cuts))
    for part, _parent in iter_parts(msg, into_messages=True):
        content_type(part)
        header_text(part, "Subject")
        header_text(part, "From")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    msg = parse_message(raw)
    assert isinstance(msg, Message)
    list(iter_parts(msg))


def test_a_mime_bomb_is_cut_at_the_part_budget() -> None:
    raw = b"Content-Type: multipart/mixed; boundary=b\n\n" + b"--b\n\nx\n" * (MAX_PARSED_PARTS * 2) + b"--b--\n"
    parts = parse_message(raw).get_payload()
    assert MAX_PARSED_PARTS - 1 <= len(parts) <= MAX_PARSED_PARTS


def test_a_header_block_keeps_its_first_and_last_fields_beyond_the_cap() -> None:
    from handlers.mail.message import MAX_FIELDS, header_text, parse_message

    junk = "".join(f"X-Junk-{i}: v\r\n" for i in range(5 * MAX_FIELDS))
    raw = ("Subject: first\r\n" + junk + "From: anna@example.se\r\n\r\nhi\r\n").encode()
    msg = parse_message(raw)
    assert len(msg.keys()) == MAX_FIELDS
    assert header_text(msg, "Subject") == "first" and header_text(msg, "From") == "anna@example.se"
    assert any("header fields" in str(d) for d in msg.defects)
    small = parse_message(b"Subject: s\r\nFrom: a@example.se\r\n\r\nhi\r\n")
    assert len(small.keys()) == 2 and not small.defects


# ------------------------------------------------------------------ handlers.mail.addresses fast path

_ADDRESS_CHARS = st.sampled_from(list("aAzZ09.-_+!#$%&'*/=?^`{|}~@") + ["xn--", "--", ".local", ".test", ".com", "ä", "1"])


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_ADDRESS_CHARS, min_size=1, max_size=40).map("".join))
def test_plain_address_fast_path_agrees_with_the_validator(text: str) -> None:
    # normalise() answers a plain ASCII dot-atom address without email-validator; it must
    # give exactly what the validator gives (the same address, or None).
    from handlers.mail.addresses import _validated, normalise

    normalise.cache_clear()
    cleaned = text.strip()
    if not cleaned or any(c in cleaned for c in " \t\r\n<>\"\\\x00") or cleaned[:7].lower() == "rfc822;":
        return
    assert normalise(cleaned) == _validated(cleaned), cleaned


@pytest.mark.parametrize("text, want", [
    ("Anna.Berg@Example.SE", "anna.berg@example.se"), ("a+b@mail.kund.example", "a+b@mail.kund.example"),
    ("x@y.local", "x@y.local"), ("a..b@example.se", None), ("a@example.123", None), ("a@-x.example", None),
    ("a@xn--bcher-kva.example", "a@bücher.example"), ("a@b.c-d.example", "a@b.c-d.example"),
])
def test_plain_addresses_and_their_edges(text: str, want: str | None) -> None:
    from handlers.mail.addresses import normalise

    assert normalise(text) == want


def test_a_parts_decoded_body_and_text_are_kept_for_the_next_reader() -> None:
    # Every reader (complaints, SES, DSN, text notices, replies) asks for the same parts:
    # the body is decoded once per part, and the text is the same object the next time.
    from handlers.mail.message import part_text, payload_bytes

    msg = parse_message(b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                        b"SGVqIGTDpHIh\r\n")
    first = part_text(msg)
    assert first == "Hej där!" and part_text(msg) is first
    assert payload_bytes(msg) is payload_bytes(msg)
