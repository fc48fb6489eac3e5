"""Auto-replies: header markers, subject prefixes per language, text-only vacation notices."""

from __future__ import annotations

import pytest

from handlers import Kind
from tests.support import corpus
from tests.support.reply_samples import decide, mail

HEADERS = ["Auto-Submitted: auto-replied\n", "Auto-Submitted: auto-generated (vacation)\n", "X-Autoreply: yes\n",
           "X-Autorespond: on\n", "Precedence: bulk\n", "Precedence: auto_reply\n", "Precedence: junk\n",
           "Precedence: list\n"]


@pytest.mark.parametrize("header", HEADERS)
def test_header_markers(header: str) -> None:
    decision = decide(mail("Hej, tack för ditt mejl.", extra=header))
    assert decision.kind is Kind.AUTOREPLY and decision.actions == ()


def test_auto_submitted_no_is_not_a_marker() -> None:
    assert decide(mail("Avregistrera mig", extra="Auto-Submitted: no\n")).kind is Kind.OPTOUT


@pytest.mark.parametrize("subject", ["Autosvar: Alumninytt", "Automatiskt svar: Alumninytt", "Automatisk svar: X",
                                     "Fraværsmelding", "Frånvaro: X", "Poissa: X", "Abwesenheitsnotiz: X",
                                     "Out of Office: X", "Automatic reply: X", "Réponse automatique : X",
                                     "RE: Automatic reply: X"])
def test_subject_prefixes(subject: str) -> None:
    assert decide(mail("Back on Monday.", subject=subject)).kind is Kind.AUTOREPLY


@pytest.mark.parametrize("body", [
    "Jag är på semester till och med 3 mars och läser inte min e-post.",
    "Jeg er på ferie til 3. mars og har begrenset tilgang til e-post.",
    "Olen lomalla 3.3. asti.",
    "Ich bin bis zum 3. März nicht im Büro.",
    "I am out of the office until 3 March with limited access to email.",
    "To protect against spam, this mailbox only accepts email from verified senders. Please verify that you are a human.",
    "Vi har tagit emot ditt ärende och det har fått nummer 123.",
])
def test_text_only_auto_replies(body: str) -> None:
    assert decide(mail(body)).kind is Kind.AUTOREPLY


def test_vacation_text_with_a_request_is_not_swallowed() -> None:
    decision = decide(mail("I am out of the office this week, but please unsubscribe me anyway."))
    assert decision.kind is Kind.OPTOUT


def test_corpus_auto_replies() -> None:
    root = corpus.require("mail")
    labels = [x for x in corpus.read_jsonl("mail/labels.jsonl") if x["kind"] == "autoreply"]
    assert labels
    for label in labels:
        decision = decide((root / label["file"]).read_bytes(), rcpt=(), mail_from=None)
        assert decision.kind is Kind.AUTOREPLY and decision.actions == (), label["file"]
