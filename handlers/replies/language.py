"""Which language a reply is written in, and the dictionary forms of its words.

Two questions the reply reader asks of newly written text (issue 21):

* `identify(text)`: is this one of the languages unsubd reads (sv, nb, nn, da, fi,
  en, de), another language (a French or Polish request must go to review, not
  be read as an ordinary reply), or too short to tell? It uses py3langid's naive
  Bayes model over byte n-grams, restricted to CANDIDATES and weighted towards
  the languages replies to a Nordic university are written in (PRIOR). A text
  with fewer than MIN_WORDS words or MIN_LETTERS letters, or whose best language
  is not clearly ahead, is "unknown": a two-word mobile reply ("Meld meg av",
  "pls unsubscribe") carries too few n-grams to tell Bokmål from Nynorsk or Danish,
  and a wrong guess is worse than none.
* `lemmas(text, lang)`: the words of `text` in dictionary form (simplemma), so that
  phrase data can name "avregistrera" once and match "avregistrerad",
  "avregistrerade", or name "uutiskirje" and match "uutiskirjeitä".

Both are pure: no environment, clock or network. The py3langid model and the
simplemma dictionaries are package data, loaded by the libraries on first use
(once per process, cached). Every input is cut to a bounded length before any
work (MAX_CHARS, MAX_LEMMA_CHARS, MAX_TOKEN), and the tokenizer below is a regex
without nested quantifiers, so no text costs more than linear time.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache

# The languages unsubd reads (handlers/data/phrases/*.toml), ISO 639-1.
READ = ("sv", "nb", "nn", "da", "fi", "en", "de")
# Other languages a reply may plausibly be in: told apart so that a request in them
# goes to review instead of being taken for an ordinary reply. Languages close to a
# read one (Faroese and Icelandic to Nynorsk, Estonian to Finnish, Dutch to German)
# are listed on purpose: leaving them out would make their text "look" Nordic.
OTHER = ("fr", "es", "pt", "it", "nl", "pl", "et", "is", "fo", "lt", "lv", "cs", "sk", "hu", "ro", "ru", "uk",
         "tr", "ar", "fa", "zh", "ja", "ko", "el", "hr", "sl", "sq", "so", "vi", "th")
UNKNOWN = "unknown"
CANDIDATES = READ + OTHER
KNOWN = frozenset(CANDIDATES) | {UNKNOWN}

# py3langid names Bokmål "no" (its training data is mostly Bokmål) and Nynorsk "nn".
_TO_MODEL = {"nb": "no"}
_FROM_MODEL = {"no": "nb"}

# Prior weight of each candidate relative to a read language: mail to the reply
# address of a Nordic university is mostly in the languages it reads, so another
# language must be clearly ahead to win. The weight multiplies the model's
# probability before renormalising (it adds log(weight) to the score).
PRIOR_READ = 1.0
PRIOR_OTHER = 0.25
PRIOR = {lang: (PRIOR_READ if lang in READ else PRIOR_OTHER) for lang in CANDIDATES}

MAX_CHARS = 2_000        # characters of (cleaned) text looked at: enough n-grams for any decision
MIN_WORDS = 3            # fewer words than this: "unknown"
MIN_LETTERS = 12         # ... or fewer letters than this
SHORT_LETTERS = 40       # texts shorter than this need THRESHOLD_SHORT, longer ones THRESHOLD
THRESHOLD_SHORT = 0.70
THRESHOLD = 0.60
NEAR = 0.25              # a language with at least NEAR times the best one's probability is a candidate

# Bokmål and Nynorsk (and, in short texts, Danish) share most words: the sum over such
# a group is what is compared with the threshold, and the best of the group is named.
GROUPS = (frozenset({"nb", "nn"}),)
# Within the Norwegian group the model leans to Bokmål (py3langid's "no" is trained on
# mostly Bokmål text), so the written standards' own spellings decide when the text
# has them: words each standard writes differently (Nynorsk "ikkje, eg, kva, frå,
# dykk" for Bokmål "ikke, jeg, hva, fra, dere"). More words of one list than of the
# other name that standard; a tie leaves the model's choice.
NYNORSK_WORDS = frozenset("""ikkje eg kva korleis kvifor kvar kven kor frå dykk dykkar berre heile meir fleire
    noko nokon mykje gjere vere ver sjå òg gjev kjem ein eit seinare saman mogleg ynskjer ønskjer
    vore høyrer""".split())
BOKMAL_WORDS = frozenset("""ikke jeg hva hvordan hvorfor hvor hvem fra dere deres bare hele mer flere noe noen
    mye gjøre være se også gir kommer en et senere sammen mulig ønsker vært hører""".split())

MAX_LEMMA_CHARS = 10_000  # characters of text lemmatised (handlers.replies.intent.MAX_TEXT)
MAX_TOKEN = 40            # longer "words" are returned lower-cased, not looked up (affix search per token)
LEMMA_LANGS = frozenset(READ)

_URL = re.compile(r"\b(?:https?://|www\.)\S{0,500}", re.IGNORECASE)
_ADDRESS = re.compile(r"\S{0,64}@\S{0,255}")
_NOT_TEXT = re.compile(r"[\d_\W]+", re.UNICODE)
# A word: letters, optionally joined by one hyphen or apostrophe to more letters
# ("e-post", "sms'er", "don't"). No nested quantifiers, so matching is linear.
_WORD = re.compile(r"[^\W\d_]+(?:[-'’][^\W\d_]+)*")


@dataclass(frozen=True)
class Identified:
    """The language of a text: an ISO 639-1 code from CANDIDATES, or "unknown".

    `confidence` is the weighted probability of `lang` (of its group for nb/nn)
    among CANDIDATES, 0.0 for "unknown" from too short a text; `candidates` are the
    languages close to the best (best first), also when `lang` is "unknown", so a
    caller may still try the phrase tables of each; `reads` says whether unsubd has
    phrase tables for `lang`.
    """

    lang: str
    confidence: float
    candidates: tuple[str, ...] = ()

    @property
    def reads(self) -> bool:
        return self.lang in READ

    @property
    def known(self) -> bool:
        return self.lang != UNKNOWN


def load() -> None:
    """Load the language model now (about half a second, once per process) rather than
    on the first reply: the parser processes call it at start (handlers.classify.warm_up)."""
    _identifier()


@cache
def _identifier():  # type: ignore[no-untyped-def]
    """py3langid's model restricted to CANDIDATES, with normalised probabilities (loaded once)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages([_TO_MODEL.get(lang, lang) for lang in CANDIDATES])
    return identifier


def clean(text: str) -> str:
    """`text` without URLs, addresses, digits and punctuation runs, white space collapsed,
    cut to MAX_CHARS at a word boundary. Never raises; "" for text without letters."""
    text = (text or "")[: MAX_CHARS * 4]
    text = _URL.sub(" ", text)
    text = _ADDRESS.sub(" ", text)
    text = " ".join(_NOT_TEXT.sub(" ", text).split())
    if len(text) > MAX_CHARS:
        cut = text.rfind(" ", 0, MAX_CHARS)
        text = text[: cut if cut > 0 else MAX_CHARS]
    return text


def ranking(text: str) -> list[tuple[str, float]]:
    """Every candidate language with its weighted probability for `text`, best first.

    The text is cleaned (`clean`) first. Probabilities sum to 1 over CANDIDATES; text
    without letters gives every language the same share. Never raises.
    """
    cleaned = clean(text)
    if not cleaned:
        share = 1.0 / len(CANDIDATES)
        return [(lang, share) for lang in CANDIDATES]
    raw = _identifier().rank(cleaned)
    weighted = []
    for code, probability in raw:
        lang = _FROM_MODEL.get(code, code)
        weighted.append((lang, float(probability) * PRIOR.get(lang, PRIOR_OTHER)))
    total = sum(p for _l, p in weighted)
    if not total or math.isnan(total):
        share = 1.0 / len(weighted)
        return [(lang, share) for lang, _p in weighted]
    return sorted(((lang, p / total) for lang, p in weighted), key=lambda item: -item[1])


def identify(text: str) -> Identified:
    """The language `text` is written in, or "unknown".

    `text` should be the sender's own words (subject and new text, without quoted
    history or footers). Returns Identified(UNKNOWN, 0.0) for text with fewer than
    MIN_WORDS words or MIN_LETTERS letters (a short mobile reply), and
    Identified(UNKNOWN, p, candidates) when the best language (or language group,
    for Bokmål/Nynorsk) has probability p below the threshold (THRESHOLD_SHORT for
    texts under SHORT_LETTERS letters, else THRESHOLD). Looks at MAX_CHARS
    characters at most. Never raises; any string, including one with NUL bytes or
    lone surrogates, gives a result.
    """
    try:
        cleaned = clean(text)
        words = cleaned.split()
        letters = sum(len(w) for w in words)
        if len(words) < MIN_WORDS or letters < MIN_LETTERS:
            return Identified(UNKNOWN, 0.0)
        ranked = ranking(cleaned)
    except (ValueError, UnicodeError, MemoryError):
        return Identified(UNKNOWN, 0.0)
    best, p_best = ranked[0]
    probability = dict(ranked)
    group = next((g for g in GROUPS if best in g), frozenset({best}))
    p_group = sum(probability.get(lang, 0.0) for lang in group)
    candidates = tuple(lang for lang, p in ranked if p >= p_best * NEAR)[:4]
    threshold = THRESHOLD_SHORT if letters < SHORT_LETTERS else THRESHOLD
    if p_group < threshold:
        return Identified(UNKNOWN, round(p_group, 4), candidates)
    if best in ("nb", "nn"):
        best = _norwegian_standard(words, best)
    return Identified(best, round(p_group, 4), candidates)


def _norwegian_standard(words: list[str], guess: str) -> str:
    """"nn" or "nb" by the spellings only one written standard uses (see NYNORSK_WORDS);
    `guess` when the text has as many of one as of the other."""
    nynorsk = bokmal = 0
    for word in words:
        lower = word.lower()
        nynorsk += lower in NYNORSK_WORDS
        bokmal += lower in BOKMAL_WORDS
    if nynorsk > bokmal:
        return "nn"
    if bokmal > nynorsk:
        return "nb"
    return guess


def tokens(text: str) -> list[str]:
    """The words of `text` (letters joined by single hyphens or apostrophes), in order,
    from its first MAX_LEMMA_CHARS characters. Never raises; [] for text without letters."""
    return _WORD.findall((text or "")[:MAX_LEMMA_CHARS])


def token_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each word `tokens(text)` returns, in the same order."""
    return [m.span() for m in _WORD.finditer((text or "")[:MAX_LEMMA_CHARS])]


def _lemmatize_one(token: str, lang: str) -> str:
    # simplemma keeps its own bounded cache of lookups per language.
    import simplemma

    try:
        return simplemma.lemmatize(token, lang=lang).lower()
    except (ValueError, TypeError, KeyError):
        return token.lower()


def lemmas(text: str, lang: str) -> list[str]:
    """The words of `text` in dictionary form for `lang`, lower-cased, in order.

    `lang` is one of READ ("sv", "nb", "nn", "da", "fi", "en", "de"); simplemma has
    separate dictionaries for Bokmål ("nb") and Nynorsk ("nn"). For any other code
    ("unknown", "fr", ...) the words are returned lower-cased, not lemmatised. Words
    simplemma does not know come back as they are (lower-cased); words longer than
    MAX_TOKEN are not looked up. Note that simplemma maps comparatives to their
    positive ("fler"/"flere"/"fleire" -> "många"/"mange") and object pronouns to
    the subject form ("mig" -> "jag"). Only the first MAX_LEMMA_CHARS characters are
    read. Never raises.
    """
    words = tokens(text)
    if lang not in LEMMA_LANGS:
        return [w.lower() for w in words]
    out = []
    for word in words:
        if len(word) > MAX_TOKEN:
            out.append(word.lower())
        else:
            out.append(_lemmatize_one(word, lang))
    return out
