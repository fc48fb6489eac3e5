"""The safety net of the reply reader: may this reply be a request? (issue 21, "no silent drops")

The phrase tables and lemma rules (handlers.replies.intent) read a request with
confidence, or not at all. Unseen mail phrases requests in ways no table holds
("Begge deler kan dere slutte med nå", "sluta skika mej mail"), so a message they
leave unread must still reach a person when it may be a request. This module answers
that question by rule, from word classes rather than phrases
(handlers/data/phrases/_net.toml): a word of refusal (a verb of stopping, removing,
sparing; a verb with its particle, "ta ... bort"; a negation with "any more" or with
wanting, unless a copula makes it a state: "Eg er ikkje student lenger") beside a word for what we send (a channel, a list, a
newsletter, a unit; or a demonstrative standing for it) in the same sentence, or the
object in the sentence before ("Jeg får både e-post og SMS. Begge deler kan dere
slutte med."); a negation directly before such a word ("inga sms", "keine Mails");
an unsubscribe word alone; a refusal alone in the Subject; and "again"/"back" with an
object and a request marker (a request to come back).

Words are compared as written, lower-cased: as a whole word, by prefix (inflections),
or by a part (Nordic and German compounds: "alumninyheitene", "Newsletterversand").
A word of five letters or more also matches a stem one typing error away
("avregistera", "sluuta"). Each distinct word is classified once (cached), so a text
costs a look-up per word and a constant amount of work per new word: linear.

It decides nothing. The decider (handlers.replies.reply) sends a message in which the
net fires, and that was not read as a request, to review with the cue words.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Iterable

from handlers.replies.language import token_spans

# Words at most this far apart make a verb and its particle ("ta mig bort", "Tag mig
# venligst af"); a pair may allow more (German: "Melden Sie mich bitte vom Alumni-Rundbrief ab").
PAIR_GAP = 3
# "Any more" or wanting at most this many words after a negation ("vill jag inte ha längre").
NEGATION_REACH = 6
# A refusal stem this long or longer also matches a word one typing error away (a
# five-letter stem is one letter from too many words of the other languages: "spare",
# "svarer"); an
# unsubscribe stem only from STRONG_TYPO_MIN ("Anmeldung" is one letter from "Abmeldung",
# and means the opposite); a letter missing only from MISSING_MIN ("delte" is Norwegian,
# not "delete").
TYPO_MIN = 6
STRONG_TYPO_MIN = 8
MISSING_MIN = 7
# Only so many words of one sentence are read (a request is short); the cost is bounded.
MAX_WORDS = 120

_CLASSES = ("strong", "refusal", "negation", "more", "want", "negated", "object", "pointer", "back", "ask",
            "third_person", "first_person", "second_person", "copula", "send", "infinitive",
            "auxiliary", "reported", "between", "than", "contact")


@dataclass(frozen=True, eq=False)
class _Lexicon:
    """One word class: whole words, prefixes and parts (see _net.toml)."""

    words: frozenset[str]
    prefixes: tuple[str, ...]
    parts: tuple[str, ...]
    suffixes: tuple[str, ...]
    typo: dict[str, frozenset[str]]      # a stem or one of its one-letter deletions -> stems
    sizes: tuple[int, ...]               # the lengths of those stems

    def has(self, word: str) -> str | None:
        """The entry `word` matches (as written, by prefix or part), else None."""
        if word in self.words:
            return word
        for prefix in self.prefixes:
            if word.startswith(prefix):
                return prefix + "*"
        for part in self.parts:
            if part in word:
                return "*" + part + "*"
        for suffix in self.suffixes:
            if word.endswith(suffix):
                return "*" + suffix
        return None

    def near(self, word: str) -> str | None:
        """A stem of TYPO_MIN letters or more that `word` begins with, one typing error
        away (a letter missing, added or changed), else None. Symmetric deletion: a
        constant number of look-ups per stem length."""
        if len(word) < TYPO_MIN - 1 or not self.typo:
            return None
        for size in self.sizes:
            head = word[:size]
            for candidate in (head, word[:size + 1], word[:size - 1]):
                for variant in _deletions(candidate):
                    for stem in self.typo.get(variant, ()):
                        # People rarely mistype the first letter; "fremover" is no "remove".
                        if stem[0] == word[0] and abs(len(candidate) - len(stem)) <= 1 \
                                and (len(candidate) >= len(stem) or len(stem) >= MISSING_MIN):
                            return stem + "~"
        return None


def _deletions(text: str) -> list[str]:
    return [text] + [text[:i] + text[i + 1:] for i in range(len(text))]


def _lexicon(entries: Iterable[str], typo: int) -> _Lexicon:
    """The lexicon of one class; stems of `typo` letters or more (0: none) get a typo index."""
    words, prefixes, parts, suffixes = set(), [], [], []
    index: dict[str, set[str]] = {}
    for entry in entries:
        entry = entry.lower()
        if entry.startswith("*") and entry.endswith("*") and len(entry) > 2:
            parts.append(entry[1:-1])
        elif entry.startswith("*"):
            suffixes.append(entry[1:])
        elif entry.endswith("*"):
            prefixes.append(entry[:-1])
            stem = entry[:-1]
            if typo and len(stem) >= typo and "*" not in stem:
                for variant in _deletions(stem):
                    index.setdefault(variant, set()).add(stem)
        else:
            # A word listed as written gets no typo index: its forms are chosen ("slutat"
            # is listed, "slutade", I quit, one letter away, is not a refusal of ours).
            words.add(entry)
    sizes = tuple(sorted({len(stem) for stems in index.values() for stem in stems}))
    return _Lexicon(frozenset(words), tuple(prefixes), tuple(parts), tuple(suffixes),
                    {k: frozenset(v) for k, v in index.items()}, sizes)


@dataclass(frozen=True)
class _Tables:
    classes: dict[str, _Lexicon]
    # (first words, first prefixes, second words, most words between)
    pairs: tuple[tuple[frozenset[str], tuple[str, ...], frozenset[str], int], ...]
    idioms: frozenset[tuple[str, str]]


@cache
def tables() -> _Tables:
    """The word classes of handlers/data/phrases/_net.toml, read once (package data)."""
    raw = resources.files("handlers").joinpath("data").joinpath("phrases").joinpath("_net.toml").read_bytes()
    data = tomllib.loads(raw.decode("utf-8"))
    classes = {name: _lexicon(data.get(name, []), TYPO_MIN if name == "refusal" else STRONG_TYPO_MIN
                              if name == "strong" else 0) for name in _CLASSES}
    pairs = []
    for source in data.get("pairs", []):
        first, second = source.lower().split()
        second, _colon, gap = second.partition(":")
        alts = first.split("|")
        pairs.append((frozenset(a for a in alts if not a.endswith("*")), tuple(a[:-1] for a in alts if a.endswith("*")),
                      frozenset(second.split("|")), int(gap) if gap else PAIR_GAP))
    idioms = frozenset(tuple(s.lower().split()) for s in data.get("idioms", []))
    return _Tables(classes, tuple(pairs), idioms)


@lru_cache(maxsize=8192)
def word_classes(word: str) -> tuple[tuple[str, str], ...]:
    """(class, entry) of each class `word` (lower case) belongs to; a typing error
    counts for the refusal classes when the word is in neither as written."""
    found = []
    lexicons = tables().classes
    for name in _CLASSES:
        entry = lexicons[name].has(word)
        if entry is not None:
            found.append((name, entry))
    if len(word) >= TYPO_MIN and not any(name in ("strong", "refusal") for name, _entry in found):
        for name in ("strong", "refusal"):
            entry = lexicons[name].near(word)
            if entry is not None:
                found.append((name, entry))
                break
    return tuple(found)


def words_of(sentence: str) -> list[str]:
    """The words of one sentence, lower-cased, curly apostrophes made straight."""
    return [sentence[a:b].lower().replace("’", "'") for a, b in token_spans(sentence)[:MAX_WORDS]]


@dataclass(frozen=True)
class Reading:
    """What the net saw in one sentence: the cue words of refusal and of object."""

    verbs: tuple[str, ...]         # verbs of refusal, or a verb and its particle ("ta ... bort")
    negated: tuple[str, ...]       # a negation with "any more" or with wanting ("inte ... längre")
    objects: tuple[str, ...]       # words for what we send
    pointers: tuple[str, ...]      # demonstratives ("these", "näitä")
    strong: tuple[str, ...]        # unsubscribe words
    no_object: tuple[str, ...]     # a short sentence that begins with a negation and an object ("Inga sms")
    back: tuple[str, ...]          # "again"/"back" with a request marker
    asks: bool                     # a request marker (a modal, "please")


# A sentence of at most this many words that begins "no <object>" is a request without a
# verb ("Inga sms, tack", "No texts please"); "Lena får inga utskick" tells, it does not ask.
SHORT = 5


def read(sentence: str) -> Reading:
    """The cue words of one sentence (see the module docstring).

    Negation has a scope here too: a refusal word with a negation just before it or
    right after it ("never stop", "Sluta aldrig skicka", "I'm not unsubscribing") is
    no refusal.
    """
    words = words_of(sentence)
    data = tables()
    classes = [dict(word_classes(w)) for w in words]
    verbs: list[str] = []
    negated: list[str] = []
    objects: list[str] = []
    pointers: list[str] = []
    strong: list[str] = []
    no_object: list[str] = []
    back: list[str] = []
    asks = False
    state = False
    negation_at = -1

    def said_not(i: int) -> bool:
        near = classes[max(0, i - 2):i] + classes[i + 1:i + 2]
        return any("negation" in c for c in near)

    for i, (word, found) in enumerate(zip(words, classes)):
        following = words[i + 1] if i + 1 < len(words) else ""
        if (word, following) in data.idioms:
            continue
        if "strong" in found and not said_not(i):
            strong.append(word)
        if "refusal" in found and not said_not(i) and not _own_doing(words, classes, i):
            verbs.append(word)
        if "object" in found:
            objects.append(word)
            if i == 1 and "negation" in classes[0] and "object" not in classes[0] and len(words) <= SHORT:
                no_object.append(f"{words[i - 1]} {word}")
        if "pointer" in found:
            pointers.append(word)
        if "negated" in found:
            negated.append(word)
        if "copula" in found:
            state = True
        if "negation" in found:
            negation_at = i
        elif negation_at >= 0 and i - negation_at <= NEGATION_REACH and ({"more", "want"} & found.keys()) \
                and not (i + 1 < len(words) and "than" in classes[i + 1]):
            negated.append(f"{words[negation_at]} … {word}")
        if "ask" in found:
            asks = True
        if "back" in found:
            back.append(word)
        if said_not(i):
            continue
        for firsts, prefixes, seconds, gap in data.pairs:
            if word in firsts or (prefixes and word.startswith(prefixes)):
                second = next((w for w in words[i + 1:i + 2 + gap] if w in seconds), None)
                if second is not None:
                    verbs.append(f"{word} … {second}")
                    break
    asked = asks or sentence.rstrip().endswith("?")
    if state:
        negated = []        # "Eg er ikkje student lenger": a state, not a request
    return Reading(tuple(verbs), tuple(negated), tuple(objects), tuple(pointers), tuple(strong), tuple(no_object),
                   tuple(back) if asked and objects else (), asks)


# Finnish governs a verb of stopping with the elative of the third infinitive
# ("lopettaa lukemasta"); English with a gerund ("stop reading").
_GOVERNED_ENDINGS = ("ing", "masta", "mästä")


def _own_doing(words: list[str], classes: list[dict[str, str]], i: int) -> bool:
    """Whether the verb of refusal at `i` governs a verb of the person's own doing ("stop
    reading", "slutte å lese", "lopettaa lukemasta"), not one of ours (`send` class)."""
    j = i + 1
    marked = j < len(words) and "infinitive" in classes[j]
    if marked:
        j += 1
    if j >= len(words):
        return False
    governed = marked or words[j].endswith(_GOVERNED_ENDINGS)
    return governed and not ({"send", "object"} & classes[j].keys())


# Words that may stand beside a refusal in a Subject that is nothing but a refusal.
_BESIDE_REFUSAL = {"strong", "refusal", "negation", "more", "negated", "first_person", "ask", "pointer", "object",
                   "infinitive", "send", "want"}


def _bare_refusal(subject: str) -> bool:
    """Whether every word of `subject` is a refusal or a word that may stand beside one
    (me, please, thanks, these, more): "Stopp!", "Ikke mer takk", not "Stoppa pressarna!"."""
    words = words_of(subject)
    return bool(words) and all(_BESIDE_REFUSAL & dict(word_classes(w)).keys() for w in words)


def may_request(sentences: Iterable[tuple[str, bool, bool]]) -> tuple[str, ...]:
    """The cue words that make these sentences look like a request, or ().

    `sentences` are (sentence, from the Subject, to be skipped) in reading order; a
    skipped sentence (negated, a look-alike) fires nothing but still lends its objects
    to the next one. It fires on:
    * an unsubscribe word;
    * a verb of refusal with an object (or a demonstrative) in the same sentence, or
      with an object in the sentence before ("Begge deler kan dere slutte med");
    * a negation with "any more" or with wanting, and an object or a demonstrative
      in the same sentence; in a question only beside a request marker (a question
      to the reader, "Keine weiteren Nachrichten gewünscht?", or about someone else,
      "Ist er nicht mehr registriert?", asks nothing of us);
    * a short sentence that begins with a negation and an object ("Inga sms, tack");
    * a refusal alone in the Subject ("Stopp", "Ikke mer, takk"; not "Stoppa pressarna!");
    * "again"/"back" with an object and a request marker (a request to come back).
    """
    cues: list[str] = []
    previous_objects: tuple[str, ...] = ()
    for sentence, subject, skip in sentences:
        seen = read(sentence)
        question = sentence.rstrip().endswith("?")
        negated = seen.negated if (not question or seen.asks) else ()
        what = seen.objects or seen.pointers
        if not skip:
            if seen.strong:
                cues.append(seen.strong[0])
            elif seen.verbs and (what or previous_objects):
                cues.append(f"{seen.verbs[0]} + {(what or previous_objects)[0]}")
            elif negated and what:
                cues.append(f"{negated[0]} + {what[0]}")
            elif seen.no_object:
                cues.append(seen.no_object[0])
            elif subject and (seen.verbs or negated) and _bare_refusal(sentence):
                cues.append((seen.verbs or negated)[0])
            elif seen.back:
                cues.append(f"{seen.back[0]} + {seen.objects[0]}")
        previous_objects = seen.objects
    return tuple(dict.fromkeys(cues))


def _has(words: list[str], name: str) -> bool:
    return any(name in dict(word_classes(w)) for w in words)


def about_someone_else(sentence: str) -> bool:
    """Whether `sentence` speaks of a third person ("hun er afmeldt", "he was removed") or
    reports someone's words ("Mein Vater sagt, ..."), and of no first person (see _net.toml
    `third_person`, `reported`). German "Sie" written with a
    capital is "you", not "she": only the lower-case "sie" counts."""
    words = [w for w in words_of(sentence)]
    written = [sentence[a:b] for a, b in token_spans(sentence)[:MAX_WORDS]]
    third = any("third_person" in dict(word_classes(w)) and not (w == "sie" and raw == "Sie")
                for w, raw in zip(words, written))
    return (third or _has(words, "reported")) and not _has(words, "first_person")


def bare_question(sentence: str) -> bool:
    """Whether `sentence` is a question that asks nothing of us: it ends with "?" and has
    neither a request marker ("kan", "could", "bitte") nor a word for "you"."""
    if not sentence.rstrip().endswith("?"):
        return False
    words = words_of(sentence)
    return not (_has(words, "ask") or _has(words, "second_person"))


def comes_back(sentence: str) -> bool:
    """Whether `sentence` has a word for "again" or "back" ("få det att", "add me back")."""
    return _has(words_of(sentence), "back")


def clear_request(sentence: str, previous: str = "") -> str | None:
    """The cue words when `sentence` alone asks clearly enough to act on, else None.

    Narrower than may_request: in one clause (commas and "but" divide them: "Jag slutade
    på företaget, men läser gärna nyhetsbrevet" quits a job and keeps the newsletter), an
    unsubscribe word with a word for what we send; a verb of refusal (or a verb and its
    particle) that governs us (governs_us: "ta bort mig", not "ta bort bilden från
    nyhetsbrevet") or "no longer"/"any more" after a negation (not "more than"), with a
    word for what we send
    (not only in the sentence before, `previous`, and not only a demonstrative: "Stoppa
    dessa" points at something a person should see). Never a bare question ("Min datter
    er afmeldt?"), never said of someone else, and never wanting alone ("I don't want to
    miss the newsletter" has no "stop" and no "any more"). The caller
    (handlers.replies.intent) acts on it with a lower confidence and reads its scope as
    for a phrase.
    """
    if bare_question(sentence) or about_someone_else(sentence):
        return None
    for clause in clauses(sentence):
        cue = _clear_clause(clause, sentence)
        if cue is not None:
            return cue
    return None


def clauses(sentence: str) -> list[str]:
    """`sentence` cut at commas, semicolons, colons, dashes and the word for "but"."""
    out, start = [], 0
    words = token_spans(sentence)[:MAX_WORDS]
    cuts = [a for a, b in words if sentence[a:b].lower() in _BUT]
    for index, char in enumerate(sentence):
        if char in _CLAUSE_MARKS or index in cuts:
            out.append(sentence[start:index])
            start = index
    out.append(sentence[start:])
    return [c for c in out if c.strip(" " + _CLAUSE_MARKS)]


_CLAUSE_MARKS = ",;:–—()"
_BUT = frozenset(("men", "but", "aber", "mutta", "mais", "doch", "sondern"))


def _clear_clause(clause: str, sentence: str) -> str | None:
    seen = read(clause)
    what = seen.objects
    if not what:
        return None
    words = words_of(clause)
    if seen.strong:
        if _has(words, "auxiliary"):
            return None     # "Ich hatte den Newsletter abbestellt": a report
        if not any(governs_us(words, words.index(w)) for w in seen.strong if w in words):
            return None     # "Unsubscribe links in the newsletter are broken"
        return f"{seen.strong[0]} + {what[0]}"
    verbs = [v for v in seen.verbs if _verb_governs_us(words, v)]
    if verbs:
        return f"{verbs[0]} + {what[0]}"
    stops = [cue for cue in seen.negated if _is_more(cue)]
    if stops and (not sentence.rstrip().endswith("?") or read(sentence).asks):
        return f"{stops[0]} + {what[0]}"
    return None


def governs_us(words: list[str], i: int) -> bool:
    """Whether the verb at `i` is about us: past "please", determiners and "off/from"
    (`between`), the next word is the person ("ta bort mig", "poistakaa minut"), one of
    our verbs ("stop sending", "sluta skicka") or what we send ("stop the newsletter",
    "fjern min adresse fra listen"). "Ta bort bilden från nyhetsbrevet" removes a photo:
    its verb governs "bilden", not us; a person reads it."""
    if words and "object" in dict(word_classes(words[0])) and i <= 4:
        # Object first, as the Nordic languages and Finnish put it: "Tekstiviestit saa
        # jättää pois", "Utskicken kan ni sluta med".
        return not _own(words, i)
    for word in words[i + 1:i + 6]:
        found = dict(word_classes(word))
        if "between" in found and "object" not in found:
            continue
        return bool({"first_person", "send", "object", "infinitive"} & found.keys()) and not _own(words, i)
    return False


def _own(words: list[str], i: int) -> bool:
    classes = [dict(word_classes(w)) for w in words]
    return _own_doing(words, classes, i)


def _verb_governs_us(words: list[str], verb: str) -> bool:
    head = verb.split(" … ")[0]
    return any(governs_us(words, k) for k, w in enumerate(words) if w == head) or " … " in verb and \
        any(governs_us(words, k) for k, w in enumerate(words) if w == verb.split(" … ")[-1])


def _is_more(cue: str) -> bool:
    """Whether a negated cue ("inte … längre", "enää") says "any more", not only "want"."""
    last = cue.split()[-1]
    found = dict(word_classes(last))
    return "more" in found or "negated" in found and last not in ("halua", "haluu", "tarvitse")


def asks_back(sentence: str) -> bool:
    """Whether `sentence` asks to come back: "again"/"back" with an object and a request
    marker ("Voisitteko lisätä minut taas jakeluun?", "Kan dere sette meg på lista igjen?")."""
    return bool(read(sentence).back)


def names_contact(text: str) -> bool:
    """Whether `text` names contact of any kind ("henvendelser", "yhteydenotot"; `contact`)."""
    return _has(words_of(text), "contact")
