"""handlers.bounces.patterns.Words: lower-case tables and the literal gate in front of them.

`Words` patterns are matched against lower-cased text, and skip the regex scan when
none of the literal strings every match must contain is present. Both are speed
devices that must never change an answer: these tests check that on every table row.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from handlers.bounces import patterns as patterns
from handlers.bounces.patterns import Words, _needles
from tests.support import corpus

ALL_WORDS: list[tuple[str, Words]] = (
    [(f"reason {i} {reason.value}", words) for i, (reason, words) in enumerate(patterns.REASON_PATTERNS)]
    + [(name, getattr(patterns, name)) for name in ("FAILURE_PHRASE", "ORIGINAL_MARKERS", "AFTER_DATA", "DATA_REPLY", "BEFORE_RCPT",
                                                     "TEMPORARY_WORDS", "PERMANENT_WORDS")]
    + [(f"form {f.name} detect", f.detect) for f in patterns.MTA_FORMS]
    + [(f"form {f.name} temporary", f.temporary) for f in patterns.MTA_FORMS if f.temporary is not None]
)

SAMPLES = [
    "550 5.1.1 <anna@example.se>: Recipient address rejected: User unknown in local recipient table",
    "Mailbox full; quota exceeded (mailbox for user is full)",
    "Host or domain name not found. Name service error for name=example.se type=A: Host not found",
    "smtp; 554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
    "Meddelandet kunde inte levereras. Mottagaren finns inte.",
    "Ihre Nachricht konnte nicht zugestellt werden: Empfänger unbekannt",
    "The message has been delayed; delivery will continue to be retried for 5 days",
    "This is the mail system at host mx.example.net.\n\n<anna@example.se>: host mx said: 550 no such user",
    ">>> DATA\n<<< 550 Unknown user anna@example.se\n554 5.0.0 Service unavailable",
    "",
    "user unknow",            # a needle cut short must not match
    "UNKNOWN USER",           # upper case: Words lower-case their input
]


def test_sources_must_be_lower_case() -> None:
    with pytest.raises(ValueError):
        Words(r"User unknown")
    # Escapes and address ranges are not text.
    assert Words(r"\S+ [A-Za-z]+ \bx").pattern.flags & re.IGNORECASE == 0


def test_needles_of_simple_patterns() -> None:
    assert _needles(r"user unknown|no such (?:user|mailbox)") == ("no such ", "user unknown")
    assert _needles(r"mail ?box full") is None or all(len(n) >= 3 for n in _needles(r"mail ?box full"))
    assert _needles(r"[a-z]+@x|\d\d") is None          # a branch with no literal: no gate
    assert _needles(r"(?:a|b)c") is None                 # too short to be worth a test


@pytest.mark.parametrize("name, words", ALL_WORDS, ids=[n for n, _w in ALL_WORDS])
def test_gate_and_lower_casing_never_change_a_match(name: str, words: Words) -> None:
    plain = re.compile(words.pattern.pattern, re.IGNORECASE | re.MULTILINE)
    for text in SAMPLES + [n.upper() for n in (words.needles or ())] + list(words.needles or ()):
        assert bool(words.search(text)) == bool(plain.search(text)), (name, text)


def test_gate_over_the_corpus() -> None:
    corpus.require("bounces")
    files = corpus.files("bounces/sisimai/bsd", "*.eml")[::7]
    assert files
    for path in files:
        text = path.read_bytes().decode("utf-8", "replace")[:20_000].lower()
        for name, words in ALL_WORDS:
            assert bool(words.search_lowered(text)) == bool(words.pattern.search(text)), (name, path.name)


def test_every_form_compiles_its_address_groups() -> None:
    for form in patterns.MTA_FORMS:
        assert any(g.startswith("addr") for g in form.recipients.groupindex), form.name
        match = form.recipients.search("")
        assert match is None or not match.group(0)


def test_sample_file_names_in_comments_exist() -> None:
    # Rows name the corpus sample that shows the form; a typo there misleads the next reader.
    corpus.require("bounces")
    source = Path(patterns.__file__).read_text(encoding="utf-8")
    root = corpus.corpus_dir() / "bounces" / "sisimai"
    for name in set(re.findall(r"\b((?:lhost|rhost|rfc3464)-[a-z0-9]+-\d\d)\b", source)):
        assert list(root.glob(f"*/{name}.eml")), name


def test_long_reason_rows_are_split_without_changing_which_reason_wins() -> None:
    # patterns._rows cuts a row into pieces of a few alternatives (each with its own needle
    # gate); consecutive pieces name the same reason, so the first match names the same one.
    from handlers.bounces import patterns as P

    assert P._alternatives(r"a(?:b|c)|[|]x|\|y|z[\]|]w|q") == ["a(?:b|c)", "[|]x", r"\|y", r"z[\]|]w", "q"]
    merged: list[tuple[object, list[str]]] = []
    for reason, words in P.REASON_PATTERNS:
        if merged and merged[-1][0] is reason:
            merged[-1][1].append(words.pattern.pattern)
        else:
            merged.append((reason, [words.pattern.pattern]))
    whole = [(reason, P.Words("|".join(sources))) for reason, sources in merged]
    assert len(whole) < len(P.REASON_PATTERNS)
    texts = ["550 5.1.1 user unknown", "mailbox is full", "blocked using spamhaus", "account has been disabled",
             "spf check failed for sender domain", "message expired after 5 days in queue", "no reason here",
             "connection timed out while talking", "the recipient's mailbox does not exist", "over quota"]
    for text in texts:
        split = next((r for r, w in P.REASON_PATTERNS if w.search(text)), None)
        joined = next((r for r, w in whole if w.search(text)), None)
        assert split is joined, text
