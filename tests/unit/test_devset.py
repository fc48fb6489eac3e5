"""The reply development set (tests/data/replies/) and its builder (tests.support.devset).

These tests check the data and the messages built from it, not unsubd's reading of
them: every entry has its fields and valid labels and scopes, ids are unique across
the dev part and the part kept aside, every built message parses with the standard
library and carries the headers a mail client writes, the quoting follows the
client, and each language has the entries issue 21 asks for. They read the holdout
files only to count and validate them (never to measure unsubd on them).
"""

from __future__ import annotations

import email
import email.errors
import email.policy
from collections import Counter
from email.message import EmailMessage
from email.utils import parseaddr

import pytest

from tests.support import devset

DEV = devset.load()
HOLDOUT = devset.load(holdout=True)
ALL = DEV + HOLDOUT
REPLY_PREFIXES = ("re:", "sv:", "aw:", "vs:", "fwd:", "wg:")


def _parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _text(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    return part.get_content()


def test_files_are_there() -> None:
    names = {p.stem for p in devset.files()}
    assert names == set(devset.FILES)
    assert {p.stem for p in devset.files(holdout=True)} == set(devset.FILES)


@pytest.mark.parametrize("entry", ALL, ids=[e.id for e in ALL])
def test_entry_is_valid(entry: devset.Entry) -> None:
    assert devset.problems(entry) == []
    lang = entry["lang"]
    file_lang = entry.source.rsplit("/", 1)[-1].removesuffix(".toml")
    if file_lang == "other":
        assert lang in devset.OTHER
    else:
        assert lang == file_lang
        assert entry.id.startswith(f"{lang}-")


def test_ids_are_unique_across_dev_and_holdout() -> None:
    counts = Counter(e.id for e in ALL)
    assert [i for i, n in counts.items() if n > 1] == []
    assert not {e.id for e in DEV} & {e.id for e in HOLDOUT}


@pytest.mark.parametrize("lang", devset.NORDIC)
def test_counts_per_language_meet_the_minimums(lang: str) -> None:
    dev = [e for e in DEV if e["lang"] == lang]
    held = [e for e in HOLDOUT if e["lang"] == lang]
    requests = [e for e in dev if e["label"] in devset.REQUESTS]
    others = [e for e in dev if e["label"] not in devset.REQUESTS]
    assert len(dev) >= devset.MIN_ENTRIES
    assert len(requests) >= devset.MIN_REQUESTS
    assert len(others) >= devset.MIN_OTHERS
    # about a quarter kept aside, requests and non-requests alike
    assert 0.2 <= len(held) / (len(dev) + len(held)) <= 0.3
    assert any(e["label"] in devset.REQUESTS for e in held) and any(e["label"] not in devset.REQUESTS for e in held)


@pytest.mark.parametrize("lang", devset.NORDIC)
def test_each_language_covers_the_kinds_of_reply(lang: str) -> None:
    entries = [e for e in DEV + HOLDOUT if e["lang"] == lang]
    labels = Counter(e["label"] for e in entries)
    assert set(labels) == set(devset.LABELS)
    optouts = [e for e in entries if e["label"] == "optout"]
    assert any(e["channels"] == ["phone"] for e in optouts)
    assert any(e["channels"] == ["sms"] for e in optouts)
    assert any(e["channels"] == ["letter"] for e in optouts)
    assert any(isinstance(e["channels"], list) and len(e["channels"]) > 1 for e in optouts)
    assert any(e["channels"] == "all" for e in optouts)
    assert any(e["units"] != "all" for e in optouts)
    assert {e["client"] for e in entries} == set(devset.CLIENTS)
    assert any(e.get("forwarded") for e in entries)
    assert any(e.get("address") for e in entries)
    assert any(e.get("signature") for e in entries)
    assert any(not str(e["body"]).strip() for e in entries)          # request only in the subject


def test_other_languages_are_all_there() -> None:
    langs = {e["lang"] for e in DEV + HOLDOUT if e.source.endswith("other.toml")}
    assert set(devset.OTHER) <= langs


@pytest.mark.parametrize("entry", ALL, ids=[e.id for e in ALL])
def test_built_message_parses_and_has_the_headers(entry: devset.Entry) -> None:
    raw = devset.build(entry)
    assert raw == devset.build(entry)                                 # deterministic
    msg = _parse(raw)
    assert not [d for d in msg.defects if not isinstance(d, email.errors.MissingHeaderBodySeparatorDefect)]
    name, address = parseaddr(str(msg["From"]))
    assert address == devset.sender(entry)[1]
    if not entry.get("sender"):
        assert name
        assert address.rpartition("@")[2] in devset.ANY_DOMAIN
    assert str(msg["To"]) == devset.REPLY_ADDRESS
    assert str(msg["Subject"]) == entry["subject"]
    assert msg["Date"].datetime.year == 2026
    assert msg["Message-ID"].startswith("<") and msg["Message-ID"].endswith(">")
    if entry.get("fresh"):
        assert msg["In-Reply-To"] is None
    else:
        assert msg["In-Reply-To"].endswith("@mail.example.org>")
        assert msg["References"] == msg["In-Reply-To"]
    body = _text(msg)
    own = devset.new_text(entry).strip()
    if own:
        first_line = own.splitlines()[0].strip()
        assert first_line in body
    if entry.get("signature"):
        signature_line = devset._fill(entry["signature"], entry).strip().splitlines()[-1].strip()
        assert signature_line in body


@pytest.mark.parametrize("entry", [e for e in ALL if e.get("quoted")], ids=[e.id for e in ALL if e.get("quoted")])
def test_quoted_history_follows_the_client(entry: devset.Entry) -> None:
    msg = _parse(devset.build(entry))
    body = _text(msg)
    client = entry["client"]
    own = devset.new_text(entry).strip()
    newsletter = str(entry["quoted"]).startswith("@")
    if entry.get("forwarded"):
        assert "From:" in body or any(f"{label}:" in body for label, *_ in devset.OUTLOOK_BLOCK.values())
    elif client in ("plain", "gmail"):
        assert "\n> " in body
        before_quote = body.split("\n> ", 1)[0]
        assert before_quote.rstrip().endswith(":")                    # the attribution line
    elif client == "outlook":
        labels = devset.OUTLOOK_BLOCK.get(entry["lang"], devset.OUTLOOK_BLOCK["en"])
        assert "________________________________" in body
        for label in labels:
            assert f"\n{label}: " in body
    else:
        sent_from = devset.SENT_FROM_IPHONE.get(entry["lang"], devset.SENT_FROM_IPHONE["en"])
        assert sent_from in body
        assert body.index(sent_from) < body.index("\n> ")
    if newsletter:
        assert "https://mail.example.org/u/" in body                  # the footer's link is in the history
        if own:
            assert body.index(own.splitlines()[0].strip()) < body.index("https://mail.example.org/u/")


@pytest.mark.parametrize("client", devset.CLIENTS)
def test_mime_structure_per_client(client: str) -> None:
    entries = [e for e in ALL if e["client"] == client]
    assert entries
    for entry in entries:
        msg = _parse(devset.build(entry))
        if client in ("gmail", "outlook"):
            assert msg.get_content_type() == "multipart/alternative"
            html = msg.get_body(("html",))
            assert html is not None and "<html" in html.get_content()
        else:
            assert msg.get_content_type() == "text/plain"


def test_line_endings_vary_like_real_mail() -> None:
    raws = [devset.build(e) for e in ALL]
    lf_only = [r for r in raws if b"\r\n" not in r]
    assert 0 < len(lf_only) < len(raws) / 4


@pytest.mark.parametrize("entry", ALL, ids=[e.id for e in ALL])
def test_expected_label_has_the_bench_shape(entry: devset.Entry) -> None:
    label = devset.expected(entry)
    assert label["file"] == entry.id
    assert label["kind"] in ("optout", "reply", "autoreply")
    assert label["address"] == label["address"].lower() and "@" in label["address"]
    if entry["label"] in ("optout", "erasure"):
        assert label["kind"] == "optout"
        scope = label["scope"]
        assert set(scope) == {"units", "channels"}
        if entry["label"] == "erasure":
            assert scope == {"units": "all", "channels": "all"}
        assert label["address"] == devset.target(entry)
    else:
        assert label["scope"] is None
        assert label["address"] == devset.sender(entry)[1]
    if entry["label"] == "optin":
        assert label["kind"] == "reply" and label["optin"]["units"]


def test_victim_domains_are_never_used() -> None:
    for entry in ALL:
        assert "victim.example" not in devset.build(entry).decode("utf-8")
