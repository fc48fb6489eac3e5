"""Opt-out intent per language, on hand-written samples (not corpus files)."""

from __future__ import annotations

import pytest

from handlers import Kind
from tests.support.reply_samples import decide, mail, scope

QUOTE_SV = "\n\nDen tis 20 jan. 2026 kl 09:00 skrev Nordvik universitet <alumni@mail.example.org>:\n> Avregistrera dig här: https://x\n"
QUOTE_NB = "\n\ntir. 20. jan. 2026 kl. 09:10 skrev Nordvik universitet Alumni <\nalumni@mail.example.org>:\n> Meld deg av her\n"
QUOTE_EN = "\n\nOn Tue, 20 Jan 2026 at 09:05, Nordvik University <\nalumni@mail.example.org> wrote:\n> To unsubscribe click here\n"
QUOTE_DE = "\n\nAm 20.01.2026 um 09:05 schrieb Nordvik University <alumni@mail.example.org>:\n> Abmelden\n"
QUOTE_FI = "\n\nti 20.1.2026 klo 9.05 Nordvik University (alumni@mail.example.org) kirjoitti:\n> unsubscribe\n"
OUTLOOK_DA = "\n\nFra: Nordvik University <alumni@mail.example.org>\nSendt: 20. januar 2026\nTil: X\nEmne: Y\n\nAfmeld her\n"

OPTOUTS = [
    ("sv", "Snälla ta bort mig från era utskick." + QUOTE_SV, "all", ("email",)),
    ("sv", "Jag vill inte längre ha några mejl från er." + QUOTE_SV, "all", ("email",)),
    ("sv", "Inga fler sms tack, mejlen går bra." + QUOTE_SV, "all", ("sms",)),
    ("sv", "Avregistrera mig från Forskningsnytt, tack." + QUOTE_SV, ("research-news",), ("email",)),
    ("sv", "Kontakta mig inte alls längre, ingenting mer." + QUOTE_SV, "all", "all"),
    ("nb", "Vennligst meld meg av nyhetsbrevet." + QUOTE_NB, "all", ("email",)),
    ("nb", "Ikke ring meg igjen. E-post er greit." + QUOTE_NB, "all", ("phone",)),
    ("nn", "Eg vil ikkje ha fleire brev i posten frå dykk." + QUOTE_NB, "all", ("letter",)),
    ("da", "Afmeld mig venligst Studentinfo." + OUTLOOK_DA, ("student-comms",), ("email",)),
    ("da", "Jeg vil ikke have flere sms'er." + OUTLOOK_DA, "all", ("sms",)),
    ("fi", "Poistakaa minut postituslistalta, kiitos." + QUOTE_FI, "all", ("email",)),
    ("en", "Please unsubscribe me from everything except Research News." + QUOTE_EN,
     ("alumni", "events", "student-comms"), ("email",)),
    ("en", "Stop sending me text messages please. Email is fine." + QUOTE_EN, "all", ("sms",)),
    ("de", "Bitte melden Sie mich vom Newsletter ab." + QUOTE_DE, "all", ("email",)),
    ("de", "Ich möchte keine E-Mails mehr erhalten." + QUOTE_DE, "all", ("email",)),
]


@pytest.mark.parametrize("lang,body,units,channels", OPTOUTS, ids=[f"{o[0]}-{i}" for i, o in enumerate(OPTOUTS)])
def test_optout_per_language(lang: str, body: str, units: object, channels: object) -> None:
    decision = decide(mail(body))
    assert decision.kind is Kind.OPTOUT and not decision.review, decision.reason
    assert decision.actions[0].address == "anna.berg@example.se"
    assert scope(decision) == (units, channels)


NOT_OPTOUTS = [
    ("sv", "Tack, jag kommer gärna på minglet!" + QUOTE_SV),
    ("sv", "Jag råkade klicka på \"avregistrera\" – kan ni lägga tillbaka mig?" + QUOTE_SV),
    ("sv", "Ta bort mig från deltagarlistan, jag kan inte komma." + QUOTE_SV),
    ("nb", "Takk for sist! Når er neste treff?" + QUOTE_NB),
    ("da", "Tak for invitationen, jeg kommer gerne." + OUTLOOK_DA),
    ("fi", "Kiitos kutsusta, osallistun mielelläni." + QUOTE_FI),
    ("en", "I do NOT want to unsubscribe, I love this newsletter." + QUOTE_EN),
    ("en", "Stop the presses – which date is right?" + QUOTE_EN),
    ("en", "Please remove me from the attendee list, I can't make it." + QUOTE_EN),
    ("en", "Please use my new address anna@new.example from now on." + QUOTE_EN),
    ("de", "Vielen Dank für die Einladung, ich komme gerne." + QUOTE_DE),
]


@pytest.mark.parametrize("lang,body", NOT_OPTOUTS, ids=[f"{o[0]}-{i}" for i, o in enumerate(NOT_OPTOUTS)])
def test_not_optout_per_language(lang: str, body: str) -> None:
    decision = decide(mail(body))
    assert decision.kind is Kind.REPLY, decision.reason
    assert decision.actions == ()


def test_quoted_footer_alone_never_counts() -> None:
    for quote in (QUOTE_SV, QUOTE_NB, QUOTE_EN, QUOTE_DE, QUOTE_FI, OUTLOOK_DA):
        decision = decide(mail("Tack!" + quote))
        assert decision.kind is Kind.REPLY and decision.actions == (), quote


def test_subject_counts_only_when_own_words() -> None:
    assert decide(mail("", subject="Avregistrera")).kind is Kind.OPTOUT
    assert decide(mail("Hej!", subject="Re: Avregistrera dig")).kind is Kind.REPLY


def test_erasure_opts_out_of_all_channels_with_deadline() -> None:
    decision = decide(mail("Radera mina uppgifter, tack." + QUOTE_SV))
    assert decision.kind is Kind.OPTOUT and scope(decision) == ("all", "all")
    assert decision.evidence["rights_request"]["type"] == "erasure"


def test_access_request_goes_to_review() -> None:
    decision = decide(mail("Jag vill ha ett registerutdrag." + QUOTE_SV))
    assert decision.kind is Kind.REPLY and decision.review and decision.actions == ()


@pytest.mark.parametrize("body", ["I would like to unsubscribe from the newsletter.", "I want to unsubscribe, thanks.",
                                  "Hi, I wish to unsubscribe please."])
def test_wanting_to_unsubscribe_is_not_mistaken_for_a_footer(body: str) -> None:
    # "to unsubscribe" in a person's sentence once made the whole line read as a footer.
    decision = decide(mail(body + QUOTE_EN))
    assert decision.kind is Kind.OPTOUT and not decision.review, decision.reason


def test_footer_lines_with_to_unsubscribe_are_still_footers() -> None:
    for footer in ("To unsubscribe click here: https://x", "Use this link to unsubscribe: https://x",
                   "Reply STOP to unsubscribe."):
        decision = decide(mail("Tack!\n" + footer))
        assert decision.kind is Kind.REPLY and decision.actions == (), footer
