"""Literal gates (handlers.mail.needles) and the reply reader's gated tables: the gates
only ever skip work, never change an answer.

Each gated table is compared with the plain reading it replaces (every pattern tried,
every lemma rule matched) on the sentences of the reply development set
(tests/data/replies/*.toml, not the part kept aside), in the case they are written in
and in upper case, plus sentences written here with the characters `re` folds
specially under re.IGNORECASE.
"""

from __future__ import annotations

import re
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.mail.needles import NeedleFinder, fold, required_literals
from handlers.replies.intent import _match_rule, _Words, sentences
from handlers.replies.phrases import LEMMA_LISTS, LISTS, Patterns, lemma_rules, phrases
from tests.support.devset import load

FOLDED = ["İNGA FLER SMS", "ſtop ſending", "AVREGİSTRERA MİG", "ΟΣ stop", "KELVİN \u212a mail", "µ-list"]


def _sentences() -> list[str]:
    found: list[str] = []
    for entry in load():
        for text in (entry.get("subject") or "", entry.get("body") or ""):
            found += sentences(text)
    unique = list(dict.fromkeys(found))
    return unique + [s.upper() for s in unique] + FOLDED


SENTENCES = _sentences()


def test_fold_equals_what_re_ignorecase_treats_as_equal_for_every_code_point() -> None:
    import _sre
    from re import _casefix

    representative: dict[int, int] = {}
    for key, others in _casefix._EXTRA_CASES.items():
        members = (key, *others)
        lowest = min(min(members), *(representative.get(m, m) for m in members))
        for member in members:
            representative[member] = lowest
    for point in range(sys.maxunicode + 1):
        if 0xD800 <= point < 0xE000:
            continue
        lower = _sre.unicode_tolower(point)
        assert fold(chr(point)) == chr(representative.get(lower, lower)), hex(point)


@pytest.mark.parametrize("text,pattern", [("İngen", "ingen"), ("ſtop", "stop"), ("KELVIN", "kelvin"),
                                          ("\u212aelvin", "kelvin"), ("ΤΟΣ", "τοσ")])
def test_a_folded_needle_is_in_every_folded_text_the_pattern_matches(text: str, pattern: str) -> None:
    assert re.search(pattern, text, re.IGNORECASE) is not None
    needles = required_literals(pattern, re.IGNORECASE)
    assert needles is not None and any(n in fold(text) for n in needles)


def test_required_literals_of_simple_patterns() -> None:
    assert required_literals(r"Avregistrera (?:mig|oss)", re.IGNORECASE) == ("avregistrera ",)
    assert required_literals(r"stop|\bno more\b", re.IGNORECASE) == ("no more", "stop")
    assert required_literals(r"(?:ab|cd)+x?") is None           # needles shorter than three
    assert required_literals(r"[a-z]+@x|unsubscribe") is None    # a branch with no literal
    assert required_literals(r"(") is None                        # does not parse: no gate


def _plain_search(patterns: Patterns, text: str) -> tuple[str, tuple[int, int], str] | None:
    for lang, pattern in patterns.items:
        found = pattern.search(text)
        if found is not None:
            return lang, found.span(), pattern.pattern
    return None


@pytest.mark.parametrize("name", LISTS)
def test_gated_phrase_lists_answer_as_every_pattern_tried(name: str) -> None:
    patterns = phrases(name)
    for sentence in SENTENCES:
        plain = _plain_search(patterns, sentence)
        found = patterns.search(sentence)
        assert (found and (found[0], found[1].span(), found[1].re.pattern)) == plain, sentence
        assert patterns.any(sentence) == (plain is not None), sentence
        assert [(lang, m.span(), m.re.pattern) for lang, m in patterns.all_matches(sentence)] == [
            (lang, m.span(), p.pattern) for lang, p in patterns.items for m in p.finditer(sentence)], sentence


@pytest.mark.parametrize("name", LEMMA_LISTS)
def test_gated_lemma_rules_answer_as_every_rule_matched(name: str) -> None:
    matched = 0
    for sentence in SENTENCES:
        words = _Words(sentence)
        plain = []
        for lang, rule in lemma_rules(name):
            start = _match_rule(rule, words.surface, words.lemmas(lang))
            if start is not None:
                plain.append((lang, words.spans[start][0], rule.source))
        assert _Words(sentence).hits(name) == plain, sentence
        matched += bool(plain)
    assert matched > 0          # the comparison saw rules that match, not only rules that do not


# A small alphabet, so that needles overlap, nest and share prefixes; "." and "(" must
# be taken as themselves, not as pattern syntax.
_ALPHABET = st.sampled_from("ab .(\n")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(_ALPHABET, min_size=1, max_size=6), max_size=12), st.text(_ALPHABET, max_size=60))
def test_a_needle_finder_finds_exactly_the_needles_a_text_contains(needles: list[str], text: str) -> None:
    assert NeedleFinder(needles).present(text) == {n for n in needles if n in text}


def test_the_reason_and_form_tables_find_their_needles_as_substring_tests_do() -> None:
    from handlers.bounces import patterns

    for table in ([p for _r, p in patterns.REASON_PATTERNS], [f.detect for f in patterns.MTA_FORMS]):
        needles = {n for words in table for n in words.needles or ()}
        finder = NeedleFinder(needles)
        for sentence in SENTENCES[:400] + ["the user unknown; mailbox full. no such user here"]:
            lowered = sentence.lower()
            assert finder.present(lowered) == {n for n in needles if n in lowered}, sentence
