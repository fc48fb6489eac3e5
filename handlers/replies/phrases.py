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
from functools import cache, cached_property, lru_cache
from importlib import resources

from handlers.mail.needles import fold, required_literals

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
    sentence (the reply reader runs on every message). So each pattern is gated by the
    literals every match of it contains (handlers.mail.needles): a text holding none
    of a pattern's needles is not scanned with it, and a list whose every pattern is
    shut costs a few substring tests. The patterns whose gate opens are tried one by
    one, in list order (to say which pattern and language matched), or, when every
    pattern's gate opens, at once as one alternation (`combined`). Same answers as
    trying every pattern; same worst case: an alternation tried at each position
    costs what the patterns cost tried one after another.
    """

    items: tuple[tuple[str, re.Pattern[str]], ...]

    @cached_property
    def combined(self) -> re.Pattern[str] | None:
        if not self.items:
            return None
        return re.compile("|".join(f"(?:{pattern.pattern})" for _lang, pattern in self.items), FLAGS)

    @cached_property
    def _gates(self) -> tuple[tuple[str, ...], dict[str, tuple[int, ...]], tuple[int, ...]]:
        """(every needle, needle -> the patterns it gates, the patterns without a gate)."""
        gated: dict[str, list[int]] = {}
        open_always = []
        for index, (_lang, pattern) in enumerate(self.items):
            needles = required_literals(pattern.pattern, pattern.flags)
            if needles is None:
                open_always.append(index)
            for needle in needles or ():
                gated.setdefault(needle, []).append(index)
        return tuple(gated), {k: tuple(v) for k, v in gated.items()}, tuple(open_always)

    def _open(self, text: str) -> tuple[int, ...] | list[int]:
        """Indexes, in list order, of the patterns that may match `text`."""
        needles, gated, open_always = self._gates
        present = list(filter(folded_text(text).__contains__, needles))
        if not present:
            return open_always
        if len(present) == 1 and not open_always:
            return gated[present[0]]
        found = set(open_always)
        for needle in present:
            found.update(gated[needle])
        return sorted(found)

    def search(self, text: str) -> tuple[str, re.Match[str]] | None:
        """The first (language, match) in `text`, in list order, or None."""
        for index in self._open(text):
            lang, pattern = self.items[index]
            found = pattern.search(text)
            if found is not None:
                return lang, found
        return None

    def any(self, text: str) -> bool:
        indexes = self._open(text)
        if not indexes:
            return False
        if len(indexes) == len(self.items):
            return self.combined.search(text) is not None  # type: ignore[union-attr]
        items = self.items
        return any(items[i][1].search(text) is not None for i in indexes)

    def all_matches(self, text: str) -> list[tuple[str, re.Match[str]]]:
        items = self.items
        return [(items[i][0], m) for i in self._open(text) for m in items[i][1].finditer(text)]


@lru_cache(maxsize=64)
def folded_text(text: str) -> str:
    """handlers.mail.needles.fold of `text`, kept for the next list asked about the
    same text (every sentence is asked about some twenty lists)."""
    return fold(text)


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
