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
from functools import cache
from importlib import resources

FLAGS = re.IGNORECASE | re.UNICODE

# The lists every language file may define (see handlers/data/phrases/en.toml).
LISTS = ("optout", "optout_weak", "optout_object", "negated", "lookalike", "question", "resubscribe", "negation",
         "keep", "except_words", "all_contact", "third_party", "address_change", "erasure", "access", "attribution",
         "separator", "header_block", "app_signature", "signoff", "footer")


@dataclass(frozen=True)
class Patterns:
    """Compiled patterns of one list, with the language each came from."""

    items: tuple[tuple[str, re.Pattern[str]], ...]

    def search(self, text: str) -> tuple[str, re.Match[str]] | None:
        """The first (language, match) in `text`, or None."""
        for lang, pattern in self.items:
            found = pattern.search(text)
            if found is not None:
                return lang, found
        return None

    def any(self, text: str) -> bool:
        return self.search(text) is not None

    def all_matches(self, text: str) -> list[tuple[str, re.Match[str]]]:
        return [(lang, m) for lang, pattern in self.items for m in pattern.finditer(text)]


def _read(relative: str) -> dict:
    data = resources.files("handlers").joinpath("data").joinpath(relative).read_bytes()
    return tomllib.loads(data.decode("utf-8"))


@cache
def languages() -> tuple[str, ...]:
    root = resources.files("handlers").joinpath("data").joinpath("phrases")
    return tuple(sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml")))


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
    """Channel name -> patterns naming it (handlers/data/channels.toml)."""
    data = _read("channels.toml")
    return {name: Patterns(tuple(("*", re.compile(s, FLAGS)) for s in sources)) for name, sources in data.items()}


@cache
def autoreply_patterns(list_name: str) -> Patterns:
    """One list from handlers/data/autoreply.toml, compiled."""
    return Patterns(tuple(("*", re.compile(s, FLAGS)) for s in _read("autoreply.toml")[list_name]))
