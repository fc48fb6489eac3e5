"""handlers.replies.language: language identification and lemmas of reply text.

Sentences written for these tests (not taken from any corpus or from the dev set).
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.replies.language import (KNOWN, MAX_CHARS, READ, UNKNOWN, Identified, clean, identify, lemmas,
                                       ranking, tokens)

SENTENCES = [
    ("sv", "Jag har flyttat utomlands och vill inte längre få era nyhetsbrev, tack ändå."),
    ("sv", "Hej! Kommer det att finnas kaffe innan föreläsningen börjar på torsdag?"),
    ("nb", "Jeg har flyttet til utlandet og ønsker ikke lenger å få nyhetsbrevene deres."),
    ("nb", "Hei! Blir det servert kaffe før forelesningen begynner på torsdag?"),
    ("nn", "Eg har flytta til utlandet og vil ikkje lenger få nyheitsbreva frå dykk."),
    ("nn", "Hei! Blir det servert kaffi før førelesinga byrjar på torsdag, og kva tid sluttar ho?"),
    ("da", "Jeg er flyttet til udlandet og ønsker ikke længere at modtage jeres nyhedsbreve."),
    ("da", "Hej! Bliver der serveret kaffe, før forelæsningen begynder på torsdag?"),
    ("fi", "Olen muuttanut ulkomaille enkä halua enää saada uutiskirjeitänne."),
    ("fi", "Hei! Onko ennen luentoa tarjolla kahvia torstaina?"),
    ("en", "I have moved abroad and no longer wish to receive your newsletters, thanks anyway."),
    ("en", "Hello! Will there be coffee before the lecture starts on Thursday?"),
    ("de", "Ich bin ins Ausland gezogen und möchte Ihre Newsletter nicht mehr erhalten."),
    ("de", "Hallo! Gibt es am Donnerstag vor der Vorlesung Kaffee?"),
]

FOREIGN = [
    ("fr", "Je suis partie vivre à l'étranger et je ne souhaite plus recevoir vos lettres d'information."),
    ("es", "Me he mudado al extranjero y ya no quiero recibir sus boletines, gracias."),
    ("pl", "Przeprowadziłam się za granicę i nie chcę już otrzymywać waszych biuletynów."),
    ("it", "Mi sono trasferita all'estero e non desidero più ricevere le vostre newsletter."),
    ("nl", "Ik ben naar het buitenland verhuisd en wil jullie nieuwsbrieven niet meer ontvangen."),
    ("et", "Kolisin välismaale ja ei soovi enam teie uudiskirju saada, aitäh."),
]


@pytest.mark.parametrize("lang,text", SENTENCES, ids=[f"{lang}-{i}" for i, (lang, _t) in enumerate(SENTENCES)])
def test_identifies_the_languages_unsubd_reads(lang: str, text: str) -> None:
    found = identify(text)
    assert found.lang == lang, found
    assert found.reads and found.known
    assert 0.0 < found.confidence <= 1.0
    assert lang in found.candidates


@pytest.mark.parametrize("lang,text", FOREIGN, ids=[lang for lang, _t in FOREIGN])
def test_identifies_other_languages_as_not_read(lang: str, text: str) -> None:
    found = identify(text)
    assert found.lang == lang, found
    assert not found.reads


@pytest.mark.parametrize("text", ["Meld meg av", "avregistrera mig", "pls unsubscribe", "Stop", "ok", "Tack!",
                                  "Afmeld", "Bitte abmelden.", "", "   ", "12345 678", "https://example.org/u/abc"])
def test_short_texts_are_unknown(text: str) -> None:
    found = identify(text)
    assert found.lang == UNKNOWN
    assert not found.reads and not found.known


def test_nynorsk_and_bokmal_by_their_own_spellings() -> None:
    assert identify("Kva tid byrjar møtet, og kor skal eg gå?").lang == "nn"
    assert identify("Hva tid begynner møtet, og hvor skal jeg gå?").lang == "nb"


def test_quoted_urls_and_addresses_do_not_decide() -> None:
    text = "Jag vill inte ha fler utskick https://www.example.org/english/news/unsubscribe anna@example.co.uk tack"
    assert identify(text).lang == "sv"
    assert "http" not in clean(text) and "@" not in clean(text)


def test_all_capitals_are_read() -> None:
    assert identify("JAG VILL INTE HA FLER MEJL FRÅN ER, SLUTA SKICKA!").lang == "sv"


def test_ranking_is_a_distribution_over_the_candidates() -> None:
    ranked = ranking("Ich möchte keine Briefe mehr bekommen.")
    assert ranked[0][0] == "de"
    assert abs(sum(p for _l, p in ranked) - 1.0) < 1e-6
    assert [p for _l, p in ranked] == sorted((p for _l, p in ranked), reverse=True)
    flat = ranking("")
    assert len({p for _l, p in flat}) == 1


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_text_gives_a_known_code(text: str) -> None:
    found = identify(text)
    assert isinstance(found, Identified)
    assert found.lang in KNOWN
    assert 0.0 <= found.confidence <= 1.0
    assert all(c in KNOWN for c in found.candidates)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.sampled_from([*READ, "fr", UNKNOWN, "xx"]))
def test_lemmas_of_any_text(text: str, lang: str) -> None:
    out = lemmas(text, lang)
    assert isinstance(out, list) and all(isinstance(w, str) and w for w in out)
    assert len(out) == len(tokens(text))


@pytest.mark.parametrize("lang,text,expected", [
    ("sv", "Jag blev avregistrerad men får fortfarande nyhetsbreven", ["avregistrera", "nyhetsbrev"]),
    ("nb", "Ikke send flere tekstmeldinger eller nyhetsbrevene", ["tekstmelding", "nyhetsbrev"]),
    ("nn", "Eg vil ikkje ha fleire e-postar eller tekstmeldingar", ["e-post", "tekstmelding", "ikkje"]),
    ("da", "Jeg vil ikke have flere nyhedsbreve eller breve", ["nyhedsbrev", "brev"]),
    ("fi", "En halua enää uutiskirjeitä enkä tekstiviestejä", ["uutiskirje", "tekstiviesti"]),
    ("de", "Ich habe mich abgemeldet und will keine Anrufe oder Briefe", ["abmelden", "anruf", "brief"]),
    ("en", "I unsubscribed but the emails and calls keep coming", ["unsubscribe", "email", "call"]),
])
def test_lemmas_give_dictionary_forms(lang: str, text: str, expected: list[str]) -> None:
    out = lemmas(text, lang)
    for word in expected:
        assert word in out, (word, out)
    assert all(w == w.lower() for w in out)


def test_lemmas_of_a_language_without_a_dictionary_are_lower_cased_words() -> None:
    assert lemmas("Désinscrivez-moi, S'IL VOUS PLAÎT!", "fr") == ["désinscrivez-moi", "s'il", "vous", "plaît"]
    assert lemmas("Avregistrera MIG", UNKNOWN) == ["avregistrera", "mig"]


def test_tokens_keep_hyphens_and_apostrophes_inside_words() -> None:
    assert tokens("e-post, sms'er -- don't 123 abc") == ["e-post", "sms'er", "don't", "abc"]


def _cpu(fn, *args) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        fn(*args)
        best = min(best, time.process_time() - start)
    return best


@pytest.mark.parametrize("payload", ["a" * 1_000_000, "a-" * 500_000, "Jag vill inte. " * 70_000,
                                     "@" * 1_000_000, "x" * 900_000 + " https://" + "y" * 100_000,
                                     "'" * 1_000_000, "ab'" * 300_000])
def test_cost_is_bounded_whatever_the_length(payload: str) -> None:
    identify("warm up the model before timing anything")
    lemmas("värm upp ordlistan", "sv")
    small = payload[:MAX_CHARS * 5]
    t_small = _cpu(identify, small) + _cpu(lemmas, small, "sv")
    t_large = _cpu(identify, payload) + _cpu(lemmas, payload, "sv")
    # Both are cut to a bounded length first: a 1 MB text costs what its first part costs
    # (plus the cut itself), never its square.
    assert t_large <= 10 * t_small + 0.25, (t_small, t_large)


def test_warm_up_loads_the_model_so_no_message_pays_for_it() -> None:
    from handlers.classify import warm_up
    from handlers.replies import language

    language._identifier.cache_clear()
    warm_up()
    assert language._identifier.cache_info().currsize == 1
