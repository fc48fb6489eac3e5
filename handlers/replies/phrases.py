"""Phrase tables for reading human text, loaded from the TOML files in handlers/data/.

The words people use to opt out, to quote, to sign off, and the words automatic
replies use, are data, not code: a language is added or corrected by editing a file
under `handlers/data/phrases/` (one per language) or `handlers/data/*.toml`.

Loading reads package data once (cached); it touches no environment, clock or
network, so handlers stay pure. A broken pattern in a file raises at first use,
which the test suite exercises, rather than silently matching nothing.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import cache, cached_property
from importlib import resources

FLAGS = re.IGNORECASE | re.UNICODE

# The lists every language file may define (see handlers/data/phrases/en.toml).
LISTS = ("optout", "optout_weak", "optout_object", "negated", "lookalike", "question", "resubscribe", "negation",
         "keep", "except_words", "all_contact", "third_party", "address_change", "erasure", "access", "attribution",
         "separator", "header_block", "app_signature", "signoff", "footer", "request_cue", "contrast", "report",
         "past", "condition")
# Lists of lemma rules (see LemmaRule): matched against a sentence's words in dictionary form.
LEMMA_LISTS = ("optout_lemmas", "nocontact_lemmas", "erasure_lemmas", "resubscribe_lemmas", "rectification_lemmas")
# How many words may stand between two consecutive tokens of a lemma rule.
LEMMA_GAP = 3


@dataclass(frozen=True)
class Patterns:
    """Compiled patterns of one list, with the language each came from.

    Most lists match nothing in most sentences, and every list is asked about every
    sentence (the reply reader runs on every message). So each list is also compiled
    into one alternation (`combined`): `any` is one search of the text instead of one
    per pattern, and `search` and `all_matches` only try the patterns one by one (to
    say which pattern and language matched, in list order) when the alternation has
    found something. Same answers, same worst case: an alternation tried at each
    position costs what the patterns cost tried one after another.
    """

    items: tuple[tuple[str, re.Pattern[str]], ...]

    @cached_property
    def combined(self) -> re.Pattern[str] | None:
        if not self.items:
            return None
        return re.compile("|".join(f"(?:{pattern.pattern})" for _lang, pattern in self.items), FLAGS)

    def search(self, text: str) -> tuple[str, re.Match[str]] | None:
        """The first (language, match) in `text`, in list order, or None."""
        if not self.any(text):
            return None
        for lang, pattern in self.items:
            found = pattern.search(text)
            if found is not None:
                return lang, found
        return None

    def any(self, text: str) -> bool:
        combined = self.combined
        return combined is not None and combined.search(text) is not None

    def all_matches(self, text: str) -> list[tuple[str, re.Match[str]]]:
        if not self.any(text):
            return []
        return [(lang, m) for lang, pattern in self.items for m in pattern.finditer(text)]


def _read(relative: str) -> dict:
    data = resources.files("handlers").joinpath("data").joinpath(relative).read_bytes()
    return tomllib.loads(data.decode("utf-8"))


@cache
def languages() -> tuple[str, ...]:
    """The languages with a phrase file; files whose name starts with "_" are shared tables."""
    root = resources.files("handlers").joinpath("data").joinpath("phrases")
    return tuple(sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml") and not p.name.startswith("_")))


@dataclass(frozen=True)
class LemmaRule:
    """One lemma rule: tokens that must appear in this order, at most LEMMA_GAP words apart.

    Written in the phrase files as a string of space-separated tokens. A token is one
    or more alternatives joined by "|"; an alternative is a dictionary form ("slippa"),
    a word only as written ("=säg", not its dictionary form, so that the past "sa upp"
    does not count), a prefix ("avregistr*"), a suffix ("*lista", for compounds) or a part ("*list*"),
    or a class: "@channel" (a word naming a channel, handlers/data/channels.toml) or
    "@object" (a word for what one is taken off: a list, a mailing, a register) or
    "@unit" (an informal name of a unit, handlers/data/phrases/_units.toml).
    Each alternative is compared with the word's dictionary form and with the word as
    written (lower-cased), so a rule may name either. A token written with "+" before
    it must follow the previous token directly ("stop +the|my @channel").
    """

    source: str
    tokens: tuple[tuple[str, ...], ...]


@cache
def lemma_rules(list_name: str, lang: str | None = None) -> tuple[tuple[str, LemmaRule], ...]:
    """The lemma rules of `list_name` (one of LEMMA_LISTS) for one language, or all merged."""
    if list_name not in LEMMA_LISTS:
        raise KeyError(list_name)
    langs = (lang,) if lang else languages()
    out = []
    for code in langs:
        for source in _read(f"phrases/{code}.toml").get(list_name, []):
            tokens = tuple(tuple(alt for alt in token.lower().split("|") if alt) for token in source.split())
            if not tokens or any(not alts for alts in tokens):
                raise ValueError(f"empty lemma rule token in {code}.toml {list_name}: {source!r}")
            out.append((code, LemmaRule(source, tokens)))
    return tuple(out)


@cache
def lemma_table(lang: str) -> dict[str, str]:
    """{inflected form: dictionary form} of `lang` for the words its lemma rules name.

    Generated from simplemma's dictionaries by bench/lemma_table.py into
    handlers/data/phrases/_lemmas.json: loading simplemma itself in a parser process
    would cost about 800 MB and 6 s of CPU for the seven languages (see that script).
    {} for a language without rules. A form missing here is compared as written.
    """
    return dict(_read_json("phrases/_lemmas.json").get(lang, {}))


@cache
def _read_json(relative: str) -> dict:
    import json

    data = resources.files("handlers").joinpath("data").joinpath(relative).read_bytes()
    return json.loads(data.decode("utf-8"))


@cache
def cross_language_cues(list_name: str = "request_cue") -> Patterns:
    """Words that look like a request in languages unsubd does not read, or (list_name
    "negation") that negate one (handlers/data/phrases/_other.toml)."""
    return Patterns(tuple(("*", re.compile(s, FLAGS)) for s in _read("phrases/_other.toml").get(list_name, [])))


@cache
def all_unit_words() -> dict[str, Patterns]:
    """Every informal unit name of handlers/data/phrases/_units.toml, by unit key (the "@unit" class)."""
    return unit_words(tuple(sorted(_read("phrases/_units.toml"))))


@cache
def unit_words(unit_keys: tuple[str, ...]) -> dict[str, Patterns]:
    """Informal names of units (handlers/data/phrases/_units.toml) for the configured unit keys."""
    data = _read("phrases/_units.toml")
    return {key: Patterns(tuple(("*", re.compile(s, FLAGS)) for s in data.get(key, []))) for key in unit_keys
            if data.get(key)}


@cache
def phrases(list_name: str, lang: str | None = None) -> Patterns:
    """The compiled `list_name` patterns of one language, or of all languages merged."""
    if list_name not in LISTS:
        raise KeyError(list_name)
    langs = (lang,) if lang else languages()
    items = []
    for code in langs:
        for source in _read(f"phrases/{code}.toml").get(list_name, []):
            items.append((code, re.compile(source, FLAGS)))
    return Patterns(tuple(items))


@cache
def channel_words() -> dict[str, Patterns]:
    """Channel name -> patterns naming it (handlers/data/channels.toml), without `number`."""
    data = _read("channels.toml")
    return {name: Patterns(tuple(("*", re.compile(s, FLAGS)) for s in sources)) for name, sources in data.items()
            if name != "number"}


@cache
def number_words() -> Patterns:
    """Words for a phone or mobile number (handlers/data/channels.toml `number`)."""
    return Patterns(tuple(("*", re.compile(s, FLAGS)) for s in _read("channels.toml").get("number", [])))


@cache
def autoreply_patterns(list_name: str) -> Patterns:
    """One list from handlers/data/autoreply.toml, compiled."""
    return Patterns(tuple(("*", re.compile(s, FLAGS)) for s in _read("autoreply.toml")[list_name]))
