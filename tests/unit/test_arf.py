"""ARF complaints (RFC 5965): recipient, unit, actions, malformed reports; corpus-driven."""

from __future__ import annotations

from collections import defaultdict

from handlers.context import Context
from handlers import ActionType, Decision, Inbound, Kind, classify
from handlers.mail.addresses import normalise
from tests.support import corpus
from tests.conftest import make_settings
from tests.support.reply_samples import NOW, SETTINGS

# Complaints are acted on only from a proven feedback-loop source (issue 22). These
# tests are about reading reports, so they come from one: our MTA (authserv-id
# mx.mail.example.org) stamps a dkim=pass for isp.example, a configured source.
# tests/integration/test_forged_reports.py covers reports without that proof.
FBL = {"UNSUBD_TRUSTED_AUTHSERV_IDS": '["mx.mail.example.org"]', "UNSUBD_COMPLAINTS__FBL_SOURCES": '["isp.example"]'}
FBL_SETTINGS = make_settings(**FBL)


def stamped(raw: bytes) -> bytes:
    """`raw` as our MTA passes on a report whose isp.example signature it verified."""
    eol = b"\r\n" if b"\r\n" in raw[:4000] else b"\n"
    return b"Authentication-Results: mx.mail.example.org; dkim=pass header.d=isp.example" + eol + raw


def decide(raw: bytes, rcpt: tuple[str, ...] = ("fbl@mail.example.org",), mail_from: str | None = "x@example.se",
           settings=FBL_SETTINGS, stamp: bool = True) -> Decision:
    raw = stamped(raw) if stamp else raw
    return classify(Inbound.from_smtp(raw, mail_from, rcpt, NOW), Context.from_settings(settings), NOW)

ORIGINAL = ("Return-Path: <bounces+kari=example.no@mail.example.org>\nFrom: Alumni <alumni@mail.example.org>\n"
            "To: <redacted@isp.example>\nList-Id: Alumni <alumni.mail.example.org>\nX-NV-Recipient-Id: abc123\n"
            "Subject: Alumninytt\n")


def arf(fields: str, original: str = ORIGINAL, report_type: str = "feedback-report") -> bytes:
    return (f"From: fbl@isp.example\nTo: fbl@mail.example.org\nSubject: report\nMIME-Version: 1.0\n"
            f"Content-Type: multipart/report; report-type={report_type}; boundary=B\n\n"
            f"--B\nContent-Type: text/plain\n\nA complaint.\n\n"
            f"--B\nContent-Type: message/feedback-report\n\n{fields}\n\n"
            f"--B\nContent-Type: text/rfc822-headers\n\n{original}\n--B--\n").encode()


def test_redacted_recipient_from_our_verp_and_unit_from_list_id() -> None:
    decision = decide(arf("Feedback-Type: abuse\nVersion: 1\nUser-Agent: X/1"), rcpt=("fbl@mail.example.org",))
    assert decision.kind is Kind.COMPLAINT and not decision.review
    types = {(a.type, a.address) for a in decision.actions}
    assert types == {(ActionType.SUPPRESS, "kari@example.no"), (ActionType.UNSUBSCRIBE, "kari@example.no")}
    unsub = [a for a in decision.actions if a.type is ActionType.UNSUBSCRIBE][0]
    assert unsub.units == ("alumni",) and unsub.channels == ("email",)
    assert decision.evidence["recipient_id"] == "abc123"


def test_original_rcpt_to_wins() -> None:
    decision = decide(arf("Feedback-Type: abuse\nOriginal-Rcpt-To: <Per@Example.SE>"))
    assert {a.address for a in decision.actions} == {"per@example.se"}


def test_only_recipient_id_names_the_contact_by_that_id() -> None:
    original = "From: x@mail.example.org\nTo: Undisclosed recipients:;\nX-NV-Recipient-Id: r-77\n"
    decision = decide(arf("Feedback-Type: abuse", original=original))
    assert not decision.review and decision.evidence["recipient_id"] == "r-77"
    assert {a.type for a in decision.actions} == {ActionType.SUPPRESS, ActionType.UNSUBSCRIBE}
    assert all(a.recipient_id == "r-77" and a.address == "" and a.contact_id is None for a in decision.actions)
    assert "X-NV-Recipient-Id" in decision.evidence["recipient_source"]


def test_unit_unknown_gives_all_units() -> None:
    original = "From: someone@else.example\nTo: ulla@example.se\n"
    decision = decide(arf("Feedback-Type: abuse", original=original))
    unsub = [a for a in decision.actions if a.type is ActionType.UNSUBSCRIBE][0]
    assert unsub.units == "all"


def test_malformed_reports_are_reviewed_not_acted_on() -> None:
    missing_type = decide(arf("Original-Rcpt-To: a@example.se"))
    assert missing_type.kind is Kind.COMPLAINT and missing_type.review and missing_type.actions == ()
    no_part = ("From: fbl@isp.example\nSubject: r\nContent-Type: multipart/report; report-type=feedback-report; "
               "boundary=B\n\n--B\nContent-Type: text/plain\n\nhi\n--B--\n").encode()
    decision = decide(no_part)
    assert decision.kind is Kind.COMPLAINT and decision.review and decision.actions == ()


def test_auth_failure_and_not_spam_change_nothing() -> None:
    for kind in ("auth-failure", "not-spam"):
        decision = decide(arf(f"Feedback-Type: {kind}\nOriginal-Rcpt-To: a@example.se"))
        assert decision.kind is Kind.COMPLAINT and decision.actions == ()


def test_mail_corpus_complaints() -> None:
    root = corpus.require("mail")
    labels = [x for x in corpus.read_jsonl("mail/labels.jsonl") if x["kind"] == "complaint"]
    assert labels
    for label in labels:
        decision = decide((root / label["file"]).read_bytes(), rcpt=(), mail_from=None)
        assert decision.kind is Kind.COMPLAINT, label["file"]
        assert {a.address for a in decision.actions} == {label["address"]}, label["file"]
        # The same report as it arrives (no proof of its source): read the same, held for review.
        held = decide((root / label["file"]).read_bytes(), rcpt=(), mail_from=None, stamp=False)
        assert held.kind is Kind.COMPLAINT and held.review and held.actions == (), label["file"]
        assert {a["address"] for a in held.evidence["held_actions"]} == {label["address"]}, label["file"]


def test_bounce_corpus_feedback_recipients() -> None:
    root = corpus.require("bounces")
    wanted: dict[str, list[str | None]] = defaultdict(list)
    for line in corpus.read_jsonl("bounces/expected.jsonl"):
        if line.get("kind") == "feedback":
            wanted[line["file"]].append(line["recipient"])
    found = total = 0
    for file, recipients in wanted.items():
        decision = decide((root / file).read_bytes(), rcpt=(), mail_from=None)
        assert decision.kind is Kind.COMPLAINT, file
        got = {a.address for a in decision.actions}
        recorded = set(decision.evidence.get("recipients", []))
        for r in recipients:
            if r is None:
                continue
            total += 1
            found += normalise(r) in got
            # auth-failure reports (RFC 6591) name the recipient but are not complaints by it
            assert normalise(r) in got or decision.evidence["feedback_type"] == "auth-failure", file
            assert normalise(r) in recorded, file
    assert total == 23 and found >= 20
    assert SETTINGS.units


def test_complaint_scope_all_unsubscribes_every_unit():
    from datetime import datetime, timezone

    now = datetime(2026, 3, 1, tzinfo=timezone.utc)
    labels = [l for l in corpus.read_jsonl("mail/labels.jsonl") if l["kind"] == "complaint"]
    raw = stamped((corpus.require("mail") / labels[0]["file"]).read_bytes())
    item = Inbound.from_file(raw, labels[0]["file"], now)
    narrow = classify(item, Context.from_settings(make_settings(**FBL)), now)
    wide = classify(item, Context.from_settings(make_settings(UNSUBD_COMPLAINT_SCOPE="all", **FBL)), now)
    assert narrow.kind is wide.kind is Kind.COMPLAINT
    unsub = lambda d: [a for a in d.actions if a.type is ActionType.UNSUBSCRIBE]
    assert unsub(narrow) and all(a.units != "all" for a in unsub(narrow))
    assert unsub(wide) and all(a.units == "all" for a in unsub(wide))
