"""No message costs classify more than linear time (issue 22, item 2).

Each hostile message is built here, at two sizes, and timed with CPU time
(time.process_time) against an ordinary reply of the same size measured in the same
run: timed assertions are ratios to that baseline, never absolute seconds.

* budget: a hostile message may cost at most PER_KB_BUDGET times what the ordinary
  message of the same size costs (plus a small floor for measurement noise);
* growth: doubling the hostile input may at most GROWTH times its cost (quadratic
  code would take about 4x, linear about 2x).

Before the fix, a 300 kB run of "a.a.a." cost `unsubd classify` 44 s in the address
finder of handlers/replies/intent.py; 60 kB lines, broken base64 and quoted-printable fed the
phrase tables one huge sentence; 300,000 empty lines were summed again per line.
"""

from __future__ import annotations

import gc
import re
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest

import config
from handlers.context import Context
from handlers import Decision, Inbound, classify
from handlers.replies.intent import addresses_in
from handlers.replies.quotes import strip_tags

NOW = datetime(2026, 2, 1, 12, 0, tzinfo=timezone.utc)
ROOT = Path(__file__).resolve().parents[2]
SIZE = 300_000          # characters of hostile payload at the larger size (the 44 s message's size)
PER_KB_BUDGET = 25      # hostile cost <= this many times the ordinary message of the same size
GROWTH = 3.0            # doubling the input may at most triple the cost (quadratic: ~4x)
FLOOR = 0.02            # seconds of CPU below which a measurement is noise, not a trend
REPEAT = 5              # the cheapest of this many runs is taken (other processes share the CPU)


@pytest.fixture(scope="module")
def settings() -> config.Settings:
    return config.load({}, ROOT / "config" / "example.toml")


def _head(*, ctype: str = "text/plain; charset=utf-8", extra: str = "", sender: str = "Anna Berg <anna@example.net>",
          subject: str = "Re: the alumni newsletter") -> str:
    return (f"From: {sender}\r\nTo: alumni@mail.example.org\r\nSubject: {subject}\r\n"
            f"Message-ID: <lt-1@example.net>\r\nDate: Sun, 1 Feb 2026 12:00:00 +0000\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: {ctype}\r\n{extra}\r\n")


def ordinary(size: int) -> bytes:
    """A reply of `size` characters: a request, then ordinary paragraphs."""
    para = ("Thank you for the letter about the research week. I read it with interest and will "
            "pass it on to my colleagues at the department. Best wishes from Anna.\r\n\r\n")
    body = "Please unsubscribe me from the alumni newsletter.\r\n\r\n"
    body += para * (max(0, size - len(body)) // len(para) + 1)
    return (_head() + body).encode()


def _bounce_head(ctype: str) -> str:
    return _head(ctype=ctype, sender="Mail Delivery System <MAILER-DAEMON@mx.example.net>",
                 subject="Undelivered Mail Returned to Sender")


def _dsn(diagnostic: str, recipient: str = "u@example.se") -> str:
    return (_bounce_head('multipart/report; report-type=delivery-status; boundary="z"')
            + "--z\r\nContent-Type: text/plain\r\n\r\nDelivery failed: " + diagnostic[:200] + "\r\n"
            + "--z\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"
            + f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            + f"Diagnostic-Code: smtp; 550 {diagnostic}\r\n\r\n--z--\r\n")


# name -> message of about n characters of hostile payload
HOSTILE: dict[str, Callable[[int], bytes]] = {
    "address-chars-no-at": lambda n: (_head() + "a." * (n // 2) + "\r\n").encode(),
    "address-chars-one-at": lambda n: (_head() + "a." * (n // 4) + "@" + "a." * (n // 4) + "\r\n").encode(),
    "at-run": lambda n: (_head() + "a@" * (n // 2) + "\r\n").encode(),
    "one-word": lambda n: (_head() + "a" * n + "\r\n").encode(),
    "60kb-lines": lambda n: (_head() + ("x" * 60_000 + " unsubscribe me\r\n") * max(1, n // 60_000)).encode(),
    "empty-lines": lambda n: (_head() + "\n" * n).encode(),
    "broken-base64": lambda n: (_head(extra="Content-Transfer-Encoding: base64\r\n") + "QUJD=!" * (n // 6)).encode(),
    "broken-quoted-printable": lambda n: (_head(extra="Content-Transfer-Encoding: quoted-printable\r\n")
                                         + "=Z" * (n // 2) + "\r\n").encode(),
    "many-parts": lambda n: (_head(ctype='multipart/mixed; boundary="b"')
                             + "--b\r\n\r\nx\r\n" * (n // 12) + "--b--\r\n").encode(),
    "nested-multiparts": lambda n: (_head(ctype='multipart/mixed; boundary="b0"') + "".join(
        f'--b{i}\r\nContent-Type: multipart/mixed; boundary="b{i + 1}"\r\n\r\n' for i in range(n // 60))).encode(),
    "huge-header": lambda n: ("X-Filler: " + "a" * n + "\r\n" + _head()).encode() + b"hello\r\n",
    "huge-subject": lambda n: (_head(subject="a." * (n // 2))).encode() + b"hello\r\n",
    "many-headers": lambda n: ("".join(f"X-H{i}: v\r\n" for i in range(n // 10)) + _head()).encode() + b"hi\r\n",
    "nul-bytes": lambda n: _head().encode() + b"\x00" * n,
    "parameter-stuffing": lambda n: (_head(ctype="text/plain (comment)" + ";" * n)).encode() + b"hi\r\n",
    "html-lt-run": lambda n: (_head(ctype="text/html") + "<" * n).encode(),
    "html-unclosed-script": lambda n: (_head(ctype="text/html") + "<script" * (n // 7)).encode(),
    "bounce-html-unclosed-script": lambda n: (_bounce_head("text/html") + "could not be delivered "
                                              + "<script" * (n // 7)).encode(),
    "bounce-text-address-chars": lambda n: (_bounce_head("text/plain") + "could not be delivered to:\r\n\r\n"
                                            + "a." * (n // 2) + "\r\n").encode(),
    "dsn-long-diagnostic": lambda n: _dsn("a." * (n // 2)).encode(),
    "dsn-long-recipient": lambda n: _dsn("user unknown", recipient="a." * (n // 2)).encode(),
}


def _cpu(raw: bytes, settings: config.Settings) -> tuple[float, Decision]:
    item = Inbound.from_smtp(raw, "anna@example.net", ["alumni@mail.example.org"], NOW)
    best, decision = float("inf"), None
    for _ in range(REPEAT):
        gc.collect()
        started = time.process_time()
        decision = classify(item, Context.from_settings(settings), NOW)
        best = min(best, time.process_time() - started)
    assert isinstance(decision, Decision)
    return best, decision


@pytest.fixture(scope="module")
def baseline(settings: config.Settings) -> dict[int, float]:
    """CPU seconds of the ordinary reply at each size used below."""
    _cpu(ordinary(1000), settings)          # phrase tables compiled once, outside the measurements
    return {n: _cpu(ordinary(n), settings)[0] for n in (SIZE // 2, SIZE)}


def test_the_ordinary_message_is_what_it_claims(settings: config.Settings) -> None:
    _cost, decision = _cpu(ordinary(SIZE), settings)
    assert decision.kind.value == "optout" and decision.actions


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_message_costs_linear_time(name: str, settings: config.Settings, baseline: dict[int, float]) -> None:
    small_raw, large_raw = HOSTILE[name](SIZE // 2), HOSTILE[name](SIZE)
    small, _ = _cpu(small_raw, settings)
    large, decision = _cpu(large_raw, settings)
    assert "classifier error" not in decision.reason, decision.reason
    # Budget: per kB of input, no worse than PER_KB_BUDGET ordinary messages.
    ordinary_per_byte = baseline[SIZE] / len(ordinary(SIZE))
    assert large <= PER_KB_BUDGET * ordinary_per_byte * len(large_raw) + FLOOR, (name, large, baseline[SIZE])
    # Growth: twice the input, at most GROWTH times the cost.
    assert large <= GROWTH * small + FLOOR, (name, small, large)


# ------------------------------------------------------------ the scanners themselves

_OLD_ADDRESS = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_OLD_TAGS = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]{0,2000}>", re.IGNORECASE | re.DOTALL)
_OLD_BOUNCE_TAGS = re.compile(r"<(?:script|style)\b.*?</(?:script|style)>|<[^>]{0,2000}>", re.IGNORECASE | re.DOTALL)


@pytest.mark.parametrize("text", [
    "", "no address here", "mail me at Anna.Berg@Example.SE today", "a@b@c.se", "x@y.z", "x@y.zz.q",
    "first@one.se, second@two.no; third@tre.dk.", "o'brien+tag@mail.example.co.uk", "@example.se", "a@.se",
    "a@b.c-d.se-", "foo@bar.se@baz.no", "foo.@bar..se", "1@2.3a", "see <kalle@kth.example>:",
])
def test_address_scanner_finds_what_the_regex_found(text: str) -> None:
    assert addresses_in(text) == _OLD_ADDRESS.findall(text)


def test_address_scanner_skips_runs_longer_than_rfc_5321_allows() -> None:
    # RFC 5321 section 4.5.3.1.1: 64 octets of local part at most.
    assert addresses_in("a" * 65 + "@example.se") == []
    assert addresses_in("a" * 64 + "@example.se") == ["a" * 64 + "@example.se"]
    assert addresses_in("x@" + "a." * 200 + "se") == []


@pytest.mark.parametrize("markup", [
    "", "plain", "<b>bold</b> text", "<script>x</script>after", "<SCRIPT >x</script >y", "<style>a</style>b",
    "<script>never closed", "a < b > c", "<" + "a" * 2000 + ">x", "<" + "a" * 2001 + ">x", "<scripts>x</scripts>",
    "<script>a</style>b</script>c", "<<>>", "<style>x</SCRIPT>y</style >z",
])
def test_tag_scanner_removes_what_the_regexes_removed(markup: str) -> None:
    assert strip_tags(markup) == _OLD_TAGS.sub("", markup)
    assert strip_tags(markup, " ", any_closer=True) == _OLD_BOUNCE_TAGS.sub(" ", markup)
