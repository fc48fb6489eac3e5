"""Literal gates for regular expressions: strings one of which every match contains.

Most phrase and reason patterns match nothing in most texts, and a regex scan of a
long alternation costs far more than a few substring tests. So a pattern's required
literals ("needles") are worked out once from its parsed form, and a text that holds
none of them is not scanned. The gate only ever says "cannot match"; when it opens,
the pattern itself decides, so the answers are those of the pattern.

For patterns compiled with re.IGNORECASE (the phrase tables), needles and text are
compared after `fold`, which maps two characters to the same string whenever
CPython's `re` treats them as equal ignoring case.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache

# A needle shorter than this is in too many texts to be worth a test.
MIN_NEEDLE = 3


def required_literals(source: str, flags: int = 0) -> tuple[str, ...] | None:
    """Literal strings, one of which occurs in every match of `source`, or None.

    Worked out from the parsed pattern: a run of literal characters in a sequence
    is required, a group requires what its content requires, and an alternation
    requires one of what each branch requires. None when some branch requires no
    literal of at least MIN_NEEDLE characters, or the pattern does not parse (no gate
    is always correct). With re.IGNORECASE in `flags` the needles are `fold`ed. A
    needle that contains another of the set is left out: it adds nothing to the test.
    """
    try:
        from re import _constants, _parser  # the standard library's own pattern parser
        found = _required(_parser.parse(source, flags), _constants)
    except Exception:  # noqa: BLE001 - no gate is always correct
        return None
    if not found or min(len(n) for n in found) < MIN_NEEDLE:
        return None
    if flags & re.IGNORECASE:
        found = {fold(n) for n in found}
    # A needle that contains another is in a text only where that one is: one test fewer.
    return tuple(sorted(n for n in found if not any(m != n and m in n for m in found)))


def _required(items: object, constants: object) -> set[str] | None:
    options: list[set[str]] = []
    run = ""
    for op, arg in list(items):  # type: ignore[call-overload]
        if op is constants.LITERAL:  # type: ignore[attr-defined]
            run += chr(arg)
            continue
        if run:
            options.append({run})
            run = ""
        if op is constants.SUBPATTERN:  # type: ignore[attr-defined]
            inner = _required(arg[-1], constants)
        elif op is constants.BRANCH:  # type: ignore[attr-defined]
            branches = [_required(b, constants) for b in arg[1]]
            inner = None if any(b is None for b in branches) else set().union(*branches)  # type: ignore[arg-type]
        elif op in (constants.MAX_REPEAT, constants.MIN_REPEAT) and arg[0] >= 1:  # type: ignore[attr-defined]
            inner = _required(arg[2], constants)
        else:
            inner = None
        if inner:
            options.append(inner)
    if run:
        options.append({run})
    usable = [o for o in options if o and min(len(n) for n in o) >= MIN_NEEDLE]
    if not usable:
        return None
    return max(usable, key=lambda o: (min(len(n) for n in o), -len(o)))


def fold(text: str) -> str:
    """`text` with every character replaced by one representative of the characters
    CPython's `re` matches it with under re.IGNORECASE (re.UNICODE).

    `re` compares the simple lower-case mapping of each character, plus the extra
    equivalences of re._casefix ("ſ" and "s", "ı" and "i", "µ" and "μ", "ς" and "σ",
    ...). str.lower differs from the simple mapping only for "İ" (to "i" and a
    combining dot), which is replaced first. Same length as `text` but for that.
    tests/unit/test_needles.py checks every code point.
    """
    if "\u0130" in text:
        text = text.replace("\u0130", "i")
    lowered = text.lower()
    return lowered if lowered.isascii() else lowered.translate(_fold_table())


@cache
def _fold_table() -> dict[int, int]:
    from re import _casefix  # the table `re` compiles IGNORECASE literals with

    representative: dict[int, int] = {}
    for key, others in _casefix._EXTRA_CASES.items():
        members = (key, *others)
        lowest = min(min(members), *(representative.get(m, m) for m in members))
        for member in members:
            representative[member] = lowest
    return {member: lowest for member, lowest in representative.items() if member != lowest}



class NeedleFinder:
    """Which of many needles a text contains, in one regex pass instead of one
    substring test per needle.

    The needles are compiled into a trie-shaped pattern inside a look-ahead, so that
    `re` tries it at every position of the text: at each position the first character
    picks one branch, and the match is the longest needle starting there; the needles
    that are prefixes of it are there too (`_prefixes`). Needles starting inside
    another are found at their own positions. Cost: the text's length times the
    longest needle at most, as a regex with no repetition. `present(text)` equals
    `{n for n in needles if n in text}` (tests/unit/test_needles.py).
    """

    __slots__ = ("_finder", "_prefixes")

    def __init__(self, needles: tuple[str, ...] | list[str] | set[str]) -> None:
        unique = sorted({n for n in needles if n})
        self._finder = re.compile("(?=(" + trie_source(unique) + "))") if unique else None
        self._prefixes = {n: tuple(m for m in unique if n.startswith(m)) for n in unique}

    def present(self, text: str) -> set[str]:
        found: set[str] = set()
        if self._finder is None:
            return found
        prefixes = self._prefixes
        for needle in set(self._finder.findall(text)):
            found.update(prefixes[needle])
        return found


def trie_source(words: Iterable[str]) -> str:
    """One alternation matching any of `words`, shared prefixes factored out (a trie):
    the regex engine then tries each character once, not once per word."""
    root: dict[str, dict] = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}
    return _branch(root)


def _branch(node: dict[str, dict]) -> str:
    # Recursion as deep as the longest needle is long: needles are short phrases.
    alternatives = [re.escape(char) + _branch(child) for char, child in sorted(node.items()) if char]
    if not alternatives:
        return ""
    body = alternatives[0] if len(alternatives) == 1 else "(?:" + "|".join(alternatives) + ")"
    return f"(?:{body})?" if "" in node else body
