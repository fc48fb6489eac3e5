"""What a person asks for in newly written text: opt-out, its scope, or something else.

The text is split into sentences (subject first, when it is the sender's own words),
and each sentence into clauses at dashes and semicolons. Phrase lists per language
(handlers/data/phrases/*.toml) decide:

* a sentence with an opt-out phrase counts unless it is negated ("I do NOT want to
  unsubscribe"), a look-alike ("stop the presses", "remove me from the attendee
  list"), or a question about how to unsubscribe;
* channels named in the opt-out clauses narrow the channel ("inga fler sms"); "at
  all", "ingenting mer" or every channel listed means all channels; channels in a
  keeping clause ("email is fine", "Mejl går bra") are kept;
* units named (any configured name or alias) in opt-out clauses narrow the unit;
  units in keeping clauses or after "except"/"utom" are kept;
* erasure, access, address-change, rectification (lemma rules: "correct my
  name", "min adress har ändrats"), re-subscribe and third-party phrases are
  reported separately so the decider can send the item to review (or, for a
  re-subscribe request from a verified sender, act on it);
* an opt-out gets a confidence: high for a clear phrase early in the sender's own
  words in one language, lower for each doubt (see _confidence).

Words inside quotation marks are mentions, not requests ('I clicked "avregistrera"
by mistake'), so quoted strings are removed before matching.

Reading by rule (issue 21): besides the regular expressions, each language has lemma
rules (handlers.replies.phrases.LemmaRule) matched against the sentence's words in
dictionary form (simplemma, handlers.replies.language.lemmas), so that one rule
covers inflections, compounds and word order ("slippa telefonsamtalen", "bli strøket
fra utsendelseslistene", "aus Ihrem Verteiler nehmen"). Negation has a scope: a
request phrase preceded within its clause, by at most NEGATION_SCOPE words, by a
negation ("I don't want to unsubscribe", "Never stop sending", "Ikke slutt å sende")
is no request. Sentences that are not read as a request but carry request-like words
(`request_cue`, in any read language or in the cross-language table) are reported
in `cues`, so that the decider sends them to review rather than drop them.

What makes a request phrase no request, besides negation (each a phrase list):
* `past`: it reports an opt-out done before ("Ich hatte es abbestellt", "I cancelled
  my subscription last year"); beside a wish to come back it is an opt-in, alone it
  goes to review;
* `condition`: it is limited to a time or an occasion ("don't call me before 9"),
  which unsubd cannot carry out: review;
* a re-subscribe phrase only in a keeping clause ("..., but do keep sending me the
  invitations") keeps something; it does not turn the opt-out into an opt-in.
A phone or mobile number (channels.toml `number`) is the phone channel only when the
request names no channel otherwise ("delete my mobile number, I don't want texts" is sms).
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from handlers.model import ALL, Channel
from handlers.replies.language import token_spans
from handlers.replies.net import (about_someone_else, asks_back, bare_question, clear_request, comes_back, may_request,
                                  names_contact)
from handlers.replies.phrases import (LEMMA_GAP, LEMMA_LISTS, LemmaRule, all_unit_words, channel_words,
                                      cross_language_cues, lemma_rules, lemma_table, number_words, phrases,
                                      unit_words)

CHANNELS = (Channel.EMAIL.value, Channel.SMS.value, Channel.PHONE.value, Channel.LETTER.value)
_QUOTED = re.compile(r"\"[^\"\n]{0,200}\"|“[^”\n]{0,200}”|”[^”\n]{0,200}”|«[^»\n]{0,200}»|„[^“\n]{0,200}“")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n\s*\n|\n(?=\s*[-*•]\s)")
_CLAUSE = re.compile(r"\s+[–—-]\s+|[;,]\s*|\s*\(\s*|\)\s*")
# Text read for intent is cut to this many characters per text (the subject, the new
# text): every phrase list is searched in every sentence, so the cost is the text's
# length times the number of patterns. The reply reader already keeps at most
# handlers.replies.quotes.MAX_NEW characters of new text and 500 of the subject; this bound is
# for any other caller, so that no text costs more than this much.
MAX_TEXT = 10_000
# RFC 5321 section 4.5.3.1.1-2: a local part has at most 64 octets and a domain at most
# 255. A run of address characters longer than that around an "@" is no address, and
# the scanner below never looks further than this from one "@".
MAX_LOCAL = 64
MAX_DOMAIN = 255
_LOCAL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+'-")
_DOMAIN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-")
_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# A negation this many words or fewer before a request phrase, in the same clause,
# negates it ("I do not want to unsubscribe", "Never stop sending").
NEGATION_SCOPE = 3
_CLAUSE_END = ",;:–—()"
# Lemma rules are matched in sentences of at most this many characters, and in at most
# LEMMA_SENTENCES sentences per text: a request is short and comes early, and each
# sentence is lemmatised once per language read (handlers.replies.language.READ).
LEMMA_CHARS = 600
LEMMA_SENTENCES = 40


# A unit's name written with an ending, as the Nordic languages and Finnish inflect a
# proper name: a genitive ("Alumni News's", "Forskningsnytts"), a definite form, or a
# Finnish case, with or without the colon Finnish writes after a foreign name
# ("Research Newsista", "Research News:stä"). Only these endings: "Alumni Newsroom" is
# no "Alumni News".
_NAME_INFLECTION = (r"(?:[:'’-]?(?:s|n|en|et|a|ä|ta|tä|ssa|ssä|sta|stä|lla|llä|lta|ltä|lle|ksi|iin|in|ia|iä"
                    r"|ista|istä|issa|issä|ille|ilta|iltä|ina|inä))?")


@dataclass
class Intent:
    """What the text asks for. `optout` is True only for a clear request."""

    optout: bool = False
    units: tuple[str, ...] | str = ALL
    channels: tuple[str, ...] | str = ("email",)
    languages: tuple[str, ...] = ()
    matched: list[str] = field(default_factory=list)     # the opt-out phrases that matched, as evidence
    negated: bool = False
    lookalike: bool = False
    question: bool = False
    resubscribe: bool = False
    third_party: bool = False
    address_change: bool = False
    erasure: bool = False
    access: bool = False
    addresses: tuple[str, ...] = ()                       # addresses named in the text
    kept_units: tuple[str, ...] = ()
    kept_channels: tuple[str, ...] = ()
    optin_clear: bool = False                             # asks to come back, with no negation in those sentences
    optin_units: tuple[str, ...] = ()                     # units named where the text asks to stay or come back
    optin_channels: tuple[str, ...] = ()
    confidence: float = 0.0                               # of the opt-out request (0 when there is none)
    doubts: tuple[str, ...] = ()                          # what lowered it, in words for a reviewer
    cues: tuple[str, ...] = ()                            # request-like words in sentences not read as a request
    foreign_cues: tuple[str, ...] = ()                    # ... of the cross-language table (languages not read)
    objection: bool = False                               # objects to all contact or all processing for marketing
    rectification: bool = False                           # asks to correct what is held (GDPR art. 16)
    net: tuple[str, ...] = ()                             # cue words of handlers.replies.net: may be a request


def sentences(text: str) -> list[str]:
    """Split text into sentences; single newlines inside a paragraph are joined."""
    out = []
    for chunk in _SENTENCE.split(text):
        chunk = " ".join(chunk.split())
        if chunk:
            out.append(chunk)
    return out


def addresses_in(text: str) -> list[str]:
    """The addresses written in `text`, in order: local@domain where the domain ends in a
    dot and two or more letters; [] for text without one. Never raises.

    What the regex `[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}` finds with
    findall, in linear time: that regex, searched over a long run of address
    characters without a usable "@" ("a.a.a.a..."), re-scans the run from every start
    position, which costs the square of its length. Here each "@" is found with
    str.find and the address grown left and right from it, never past the previous
    address, the neighbouring "@" or the RFC 5321 limits (MAX_LOCAL, MAX_DOMAIN): a
    run longer than those is no address and is skipped.
    """
    found: list[str] = []
    floor = 0
    size = len(text)
    at = text.find("@")
    while at >= 0:
        start = at
        while start > floor and at - start <= MAX_LOCAL and text[start - 1] in _LOCAL_CHARS:
            start -= 1
        end = at + 1
        while end < size and end - at <= MAX_DOMAIN + 1 and text[end] in _DOMAIN_CHARS:
            end += 1
        stop = _domain_end(text, at + 1, end)
        if (start < at and at - start <= MAX_LOCAL and end - at <= MAX_DOMAIN + 1 and stop > 0):
            found.append(text[start:stop])
            floor = stop
        at = text.find("@", max(at + 1, floor))
    return found


def _domain_end(text: str, begin: int, end: int) -> int:
    """End of the longest text[begin:k] (k <= end) ending in "." and two or more letters
    with something before that dot, as the greedy regex backtracks to it; -1 if none."""
    dot = text.rfind(".", begin + 1, end)
    while dot > begin:
        after = dot + 1
        while after < end and text[after] in _LETTERS:
            after += 1
        if after - dot - 1 >= 2:
            return after
        dot = text.rfind(".", begin + 1, dot)
    return -1


def _clean(sentence: str) -> str:
    return " ".join(_QUOTED.sub(" ", sentence).split())


def read_intent(texts: Iterable[str], unit_names: Mapping[str, tuple[str, ...]],
                subject_first: bool = False) -> Intent:
    """Read intent from `texts` (the subject when it is the sender's own, then new text).

    `subject_first`: the first text is the Subject (the safety net, handlers.replies.net,
    reads a refusal alone there as a possible request).

    `unit_names` maps a unit key to the names and aliases that refer to it. Returns
    an Intent; empty or unreadable text gives Intent(optout=False). Never raises on
    odd text (any string is accepted). An opt-out Intent carries a `confidence` and
    the `doubts` that lowered it (see _confidence).
    """
    intent = Intent()
    optout_sentences: list[str] = []
    other_sentences: list[str] = []
    optin_sentences: list[str] = []
    langs: list[str] = []
    found: list[_Found] = []
    conflicts: list[str] = []
    nocontact_sentences: list[str] = []
    net_sentences: list[tuple[str, bool, bool]] = []
    comeback: list[str] = []
    by_net: list[str] = []
    for text_index, text in enumerate(texts):
        text_sentences = sentences((text or "")[:MAX_TEXT])
        for position, raw in enumerate(text_sentences):
            sentence = _clean(raw)
            if not sentence:
                continue
            in_subject = subject_first and text_index == 0
            previous = _clean(text_sentences[position - 1]) if position else ""
            intent.addresses += tuple(a.lower() for a in addresses_in(raw))
            flags = _flags(sentence)
            lemma_ok = position < LEMMA_SENTENCES and len(sentence) <= LEMMA_CHARS
            words = _words(sentence) if lemma_ok else None
            if words is not None:
                flags["erasure"] = flags["erasure"] or bool(words.hits("erasure_lemmas"))
                flags["resubscribe"] = flags["resubscribe"] or bool(words.hits("resubscribe_lemmas"))
                if words.hits("rectification_lemmas"):
                    intent.rectification = True
            hits, negated_hits = _request_hits(sentence, words)
            if negated_hits and not hits:
                flags["negated"] = True
            if not hits and not negated_hits and lemma_ok and not any(flags.values()) \
                    and (cue := clear_request(sentence, previous)) is not None \
                    and phrases("past").search(sentence) is None \
                    and (_names_something(sentence, unit_names) or phrases("optout_object").any(sentence)):
                # Read by rule (handlers.replies.net): a verb of refusal, or "no longer",
                # with a word for what we send, in a sentence that asks for itself, names
                # a channel, a unit or a list ("Inga fler nyheter om parkeringen" names
                # none: a person reads it) and reports nothing done before. No phrase
                # says so: a lower confidence (DOUBT_NET), the same scope rules.
                hits = [("net", cue)]
                by_net.append(sentence)
            if not hits and (past := phrases("past").search(sentence)) is not None \
                    and _request_hits(sentence, words, past=False)[0]:
                # "Ich hatte es abbestellt", "Eg sa det opp i fjor": a report of an opt-out
                # done before is no request, but it is near one: a person reads it.
                intent.cues += (past[1].group(0),)
            if hits and (condition := phrases("condition").search(sentence)) is not None:
                # "Don't call me before 9": a request limited to a time or an occasion is
                # not one unsubd can carry out; a person reads it.
                intent.cues += (f"{hits[0][1]} ({condition[1].group(0)})",)
                hits = []
            if hits and flags["resubscribe"] and not _resubscribe_asked(sentence):
                # "... but do keep sending me the invitations": keeping something beside
                # an opt-out narrows it; it is no request to be subscribed again.
                flags["resubscribe"] = False
            if hits and about_someone_else(sentence):
                # "hun er afmeldt", "Han ber om at ...": a request phrase said of someone
                # else (and of no first person) is reported or on their behalf: review.
                flags["third_party"] = True
            for name, value in flags.items():
                if value:
                    setattr(intent, name, True)
            if hits and words is not None and words.hits("nocontact_lemmas"):
                intent.objection = True
                nocontact_sentences.append(sentence)
            if position < LEMMA_SENTENCES and len(sentence) <= LEMMA_CHARS:
                # The net reads every sentence (a skipped one still lends its objects to
                # the next); one said not to ("I do NOT want to unsubscribe") or a
                # look-alike ("stop the presses") fires nothing.
                net_sentences.append((sentence, in_subject, flags["negated"] or flags["lookalike"]))
            if hits and not (flags["negated"] or flags["lookalike"] or flags["question"] or flags["resubscribe"]):
                optout_sentences.append(sentence)
                intent.matched.append(hits[0][1])
                langs.append(hits[0][0])
                found.append(_Found(sentence, position, len(text_sentences), question=bare_question(sentence),
                                    net=hits[0][0] == "net"))
            else:
                if not (flags["negated"] or flags["lookalike"]):
                    cue = phrases("request_cue").search(sentence)
                    foreign = cross_language_cues().search(sentence)
                    if foreign is not None and cross_language_cues("negation").any(sentence):
                        foreign = None
                    if cue is not None and _negated_before(sentence, cue[1].start()):
                        cue = None          # "Älkää koskaan lopettako": never stop
                    if cue is not None:
                        intent.cues += (cue[1].group(0),)
                    if foreign is not None:
                        intent.foreign_cues += (foreign[1].group(0),)
                other_sentences.append(sentence)
                if flags["negated"] or (flags["resubscribe"] and not _names_something(sentence, unit_names)):
                    conflicts.append(sentence)
            if flags["resubscribe"]:
                optin_sentences.append(sentence)
            if not hits and (flags["resubscribe"] or (lemma_ok and asks_back(sentence))):
                comeback.append(sentence)
            # "Eine Löschung wünsche ich nicht": a negated erasure is no erasure (its
            # sentence is a conflict above, so the message goes to a person at most).
            if flags["erasure"] and not flags["negated"]:
                if sentence not in optout_sentences:
                    optout_sentences.append(sentence)
                    found.append(_Found(sentence, position, len(text_sentences), erasure=True))
    intent.addresses = tuple(dict.fromkeys(intent.addresses))
    intent.languages = tuple(dict.fromkeys(langs))
    intent.net = may_request(net_sentences)
    if optin_sentences:
        # "Please do not add me back" is no opt-in: any negation in such a sentence
        # leaves it to a person.
        intent.optin_clear = not any(phrases("negation").any(s) for s in optin_sentences)
        intent.optin_units = tuple(sorted(set().union(*(units_in(s, unit_names) for s in optin_sentences))))
        intent.optin_channels = tuple(c for c in CHANNELS
                                      if any(c in channels_in(s) for s in optin_sentences))
    if not optout_sentences:
        return intent
    intent.optout = True
    _scope(intent, optout_sentences, other_sentences, unit_names, nocontact_sentences)
    intent.confidence, intent.doubts = _confidence(found, conflicts, unit_names, comeback)
    if by_net and all(f.net for f in found if not f.erasure):
        intent.confidence = round(max(intent.confidence - DOUBT_NET, 0.05), 2)
        intent.doubts += ("read by word classes (handlers.replies.net), not by a phrase",)
    return intent


@dataclass(frozen=True)
class _Found:
    """One sentence read as a request: where it stood in its text (subject or new text)."""

    sentence: str
    position: int                 # 0-based sentence index within its text
    of: int                       # how many sentences that text has
    erasure: bool = False         # an erasure request (no opt-out phrase needed)
    question: bool = False        # a question that asks nothing of us (net.bare_question)
    net: bool = False             # read by the safety net's word classes, not by a phrase


# How the confidence of an opt-out request is lowered (handlers.model: high >= 0.85,
# review below 0.6). Two doubts together always reach review; one lowers to medium.
BASE = 0.95
EARLY = 3              # a request within the first sentences of a text is where people put it
LONG = 6               # ... a text longer than this with the request only later is a doubt
DOUBT_LATE = 0.15
DOUBT_LANGUAGES = 0.15
DOUBT_WEAK = 0.3
DOUBT_CONFLICT = 0.3
# Enough for review alone: a false opt-out is worse than a review.
DOUBT_QUESTION = 0.4
# A request read only by the safety net's word classes: acted on alone (0.80), under
# review with any other doubt.
DOUBT_NET = 0.15
DOUBT_COMEBACK = 0.4


def _confidence(found: list[_Found], conflicts: list[str], unit_names: Mapping[str, tuple[str, ...]],
                comeback: list[str] = ()) -> tuple[float, tuple[str, ...]]:
    """(confidence, doubts) of an opt-out read from `found` request sentences.

    A clear phrase early in the sender's own words (Subject or the first sentences),
    in one language, with nothing pointing the other way, is BASE. Doubts:
    the request stands only late in a long text; no one language has phrases for
    every request sentence (a Norwegian "ikke flere sms" also reads as Danish, so
    one language matching all is enough); every request uses only a weak phrase
    ("remove me", "stop") naming no list, channel or unit; another sentence is
    negated or asks to stay subscribed. Each alone sends the request to review: every
    request sentence is a question that asks nothing of us ("Min datter er afmeldt?");
    another sentence asks to come back ("Kan de leggje meg til på nytt?").
    """
    doubts: list[str] = []
    value = BASE
    if not any(f.position < EARLY or f.of <= LONG for f in found):
        value -= DOUBT_LATE
        doubts.append("request only late in a long text")
    phrased = [f for f in found if not f.erasure and not f.net]
    if phrased:
        common = set.intersection(*(_languages_of(f.sentence) for f in phrased))
        if not common:
            value -= DOUBT_LANGUAGES
            doubts.append("request phrases in more than one language")
        if all(_weak(f.sentence, unit_names) for f in phrased) and not any(f.erasure for f in found):
            value -= DOUBT_WEAK
            doubts.append("only a weak phrase, naming no list, channel or unit")
    if conflicts:
        value -= DOUBT_CONFLICT
        doubts.append("another sentence says not to, or asks to stay")
    if found and all(f.question for f in found):
        value -= DOUBT_QUESTION
        doubts.append("asked as a question about a state, not as a request")
    if comeback:
        value -= DOUBT_COMEBACK
        doubts.append("another sentence asks to come back")
    return round(max(value, 0.05), 2), tuple(doubts)


def _languages_of(sentence: str) -> set[str]:
    words = _words(sentence) if len(sentence) <= LEMMA_CHARS else None
    return {lang for lang, _phrase in _request_hits(sentence, words)[0]}


def _weak(sentence: str, unit_names: Mapping[str, tuple[str, ...]]) -> bool:
    """Whether every opt-out phrase in `sentence` is a weak one and the sentence names
    nothing to be taken off (no list or mailing word, no channel, no unit)."""
    weak = phrases("optout_weak")
    if len(sentence) <= LEMMA_CHARS:
        words = _words(sentence)
        if words.hits("optout_lemmas") or words.hits("nocontact_lemmas"):
            return False        # a lemma rule always names what is asked for
    for _lang, match in phrases("optout").all_matches(sentence):
        text = match.group(0).strip()
        if not any(pattern.fullmatch(text) for _l, pattern in weak.items):
            return False
    return not _names_something(sentence, unit_names) and not phrases("optout_object").any(sentence)


def _names_something(sentence: str, unit_names: Mapping[str, tuple[str, ...]]) -> bool:
    return bool(channels_in(sentence) or units_in(sentence, unit_names))


def _flags(sentence: str) -> dict[str, bool]:
    return {
        "negated": phrases("negated").any(sentence),
        "lookalike": phrases("lookalike").any(sentence),
        "question": phrases("question").any(sentence),
        "resubscribe": phrases("resubscribe").any(sentence),
        "third_party": phrases("third_party").any(sentence),
        "address_change": phrases("address_change").any(sentence),
        "erasure": phrases("erasure").any(sentence),
        "access": phrases("access").any(sentence),
    }


def channels_in(text: str) -> set[str]:
    """The channels `text` names. A phone or mobile number names none here: see _scope."""
    combined = number_words().combined
    if combined is not None:
        text = combined.sub(" ", text)
    words = channel_words()
    return {name for name, patterns in words.items() if patterns.any(text)}


def units_in(text: str, unit_names: Mapping[str, tuple[str, ...]]) -> set[str]:
    """The unit keys `text` names: by a configured name or alias (whole words), or by an
    informal name of handlers/data/phrases/_units.toml ("alumnibrevet", "the student emails")."""
    found = set()
    informal = unit_words(tuple(sorted(unit_names)))
    for key, patterns in informal.items():
        if patterns.any(text):
            found.add(key)
    for key, names in unit_names.items():
        if key in found:
            continue
        for name in names:
            if name and re.search(rf"(?<!\w){re.escape(name)}{_NAME_INFLECTION}(?!\w)", text, re.IGNORECASE):
                found.add(key)
                break
    return found


def _split_keep(sentence: str) -> tuple[list[str], list[str]]:
    """(request clauses, keeping clauses) of one sentence.

    A clause that keeps something ("email is fine") is a keeping clause; in a
    clause with "except"/"utom", what follows that word is kept.
    """
    request, keeping = [], []
    for clause in _CLAUSE.split(sentence):
        if not clause.strip():
            continue
        hit = phrases("except_words").search(clause)
        if hit is not None:
            request.append(clause[:hit[1].start()])
            keeping.append(clause[hit[1].end():])
        elif (phrases("keep").any(clause) or phrases("contrast").any(clause)) and not _request_hits(clause, None)[0]:
            keeping.append(clause)
        else:
            request.append(clause)
    return request, keeping


def _scope(intent: Intent, optout_sentences: list[str], other_sentences: list[str],
           unit_names: Mapping[str, tuple[str, ...]], nocontact_sentences: list[str] = ()) -> None:
    named_channels: set[str] = set()
    kept_channels: set[str] = set()
    named_units: set[str] = set()
    kept_units: set[str] = set()
    everything = False
    numbers = False
    for sentence in optout_sentences:
        request, keeping = _split_keep(sentence)
        for clause in request:
            if phrases("report").any(clause) and not _request_hits(clause, None)[0]:
                # "ich bekomme immer noch Post von Ihnen": what still arrives, told as a
                # reason, does not name the scope of the request beside it.
                continue
            named_channels |= channels_in(clause)
            numbers = numbers or number_words().any(clause)
            named_units |= units_in(clause, unit_names)
            everything = everything or phrases("all_contact").any(clause)
        for clause in keeping:
            kept_channels |= channels_in(clause)
            kept_units |= units_in(clause, unit_names)
        if phrases("erasure").any(sentence) or sentence in nocontact_sentences:
            everything = True
    # A separate sentence may keep something ("Mejl går bra.", "He would still like
    # to receive alumni event invitations.").
    for sentence in other_sentences:
        _request, keeping = _split_keep(sentence)
        if phrases("keep").any(sentence):
            keeping = keeping or [sentence]
        for clause in keeping:
            kept_channels |= channels_in(clause)
            kept_units |= units_in(clause, unit_names)
    if not named_channels and any(names_contact(s) for s in optout_sentences):
        # "undlader enhver form for henvendelse": contact of any kind, no channel named.
        everything = True
    if numbers and not named_channels:
        # "Delete my phone number": a number is the phone channel when nothing else is
        # named; beside a named channel ("..., I don't want texts") that channel says it.
        named_channels = {Channel.PHONE.value}
    if set(CHANNELS) <= named_channels or intent.erasure:
        everything = True
    kept_channels -= named_channels
    kept_units -= named_units
    intent.kept_channels = tuple(sorted(kept_channels))
    intent.kept_units = tuple(sorted(kept_units))
    if everything:
        remaining = [c for c in CHANNELS if c not in kept_channels]
        intent.channels = ALL if not kept_channels else tuple(remaining)
    elif named_channels:
        intent.channels = tuple(c for c in CHANNELS if c in named_channels)
    else:
        intent.channels = ("email",)
    if intent.erasure:
        intent.units = ALL          # erasure: no contact from any unit, whichever one is named
    elif named_units:
        intent.units = tuple(sorted(named_units))
    elif kept_units:
        intent.units = tuple(sorted(k for k in unit_names if k not in kept_units)) or ALL
    else:
        intent.units = ALL


class _Words:
    """A sentence's words, as written and in dictionary form per language read (computed once each).

    The dictionary forms come from simplemma, through the table of the forms of the
    words the rules name (handlers.replies.phrases.lemma_table): a word not in it is
    compared as written. Which words a rule token matches is worked out once per
    token and language (`_marks`), so the rules of every list that share a token
    ("@channel", "ikke") share the work."""

    def __init__(self, sentence: str) -> None:
        self.sentence = sentence
        self.spans = token_spans(sentence)
        self.surface = [sentence[a:b].lower() for a, b in self.spans]
        self._lemmas: dict[str, list[str]] = {}
        self._marks: dict[str, dict[int, list[bool]]] = {}
        self._open: frozenset[int] | None = None
        self._hits: dict[str, list[tuple[str, int, str]]] = {}

    def lemmas(self, lang: str) -> list[str]:
        if lang not in self._lemmas:
            table = lemma_table(lang)
            self._lemmas[lang] = [table.get(word, word) for word in self.surface]
        return self._lemmas[lang]

    def hits(self, list_name: str) -> list[tuple[str, int, str]]:
        """(language, start offset, rule source) of each rule of `list_name` that matches."""
        if list_name in self._hits:
            return self._hits[list_name]
        out = []
        index = _gate_index()
        rules = index.rules[list_name]
        if self._open is None:
            self._open = index.open_gates(self.surface)
        opened = self._open
        for number in index.candidates(list_name, opened):
            lang, rule, gates = rules[number]
            if not gates <= opened:
                continue        # a token no word can match: the rule cannot match
            start = _match_rule(rule, self.surface, self.lemmas(lang), self._marks.setdefault(lang, {}))
            if start is not None:
                out.append((lang, self.spans[start][0], rule.source))
        self._hits[list_name] = out
        return out


@dataclass(frozen=True)
class _Gate:
    """What a sentence must contain for one token of a lemma rule (in one language) to
    match any of its words: one of `words` as a whole word, or a word containing one of
    `needles`. Exact as a test of "no word matches": a word matches a token by its
    written form or by its dictionary form (the language's lemma table, else the word
    itself), as a form, prefix, suffix or part. So the words are the token's forms and
    written forms plus every inflected form in the table whose dictionary form matches
    the token; the needles are its prefixes, suffixes and parts, which a matching word
    as written contains. A class token ("@channel") has no gate."""

    words: frozenset[str]
    needles: tuple[str, ...]


def _gate_of(token: "_Token", table: Mapping[str, str]) -> _Gate | None:
    if token.classes:
        return None
    inflected = {word for word, lemma in table.items()
                 if lemma in token.forms or (token.prefixes and lemma.startswith(token.prefixes))
                 or (token.suffixes and lemma.endswith(token.suffixes)) or any(p in lemma for p in token.parts)}
    return _Gate(frozenset(token.forms | token.written | inflected),
                 tuple(dict.fromkeys(token.prefixes + token.suffixes + token.parts)))


class _GateIndex:
    """Every lemma rule of every list with the gates of its tokens, indexed so that a
    sentence costs a look-up per word and one substring test per distinct needle,
    and a rule is tried (`_match_rule`) only when every one of its gates is open.

    Gates are numbered; `rules[list_name]` is (language, rule, numbers of its gates)
    in list order. A rule is a candidate when its first gate is open (or it has no
    gate: only class tokens); the rest of its gates are then checked as a subset.
    """

    def __init__(self) -> None:
        numbers: dict[_Gate, int] = {}
        by_word: dict[str, set[int]] = {}
        by_needle: dict[str, set[int]] = {}
        self.rules: dict[str, tuple[tuple[str, LemmaRule, frozenset[int]], ...]] = {}
        self._by_first: dict[str, dict[int, tuple[int, ...]]] = {}
        self._ungated: dict[str, tuple[int, ...]] = {}
        for list_name in LEMMA_LISTS:
            rows = []
            by_first: dict[int, list[int]] = {}
            ungated = []
            for number, (lang, rule) in enumerate(lemma_rules(list_name)):
                table = lemma_table(lang)
                gates = []
                for token in _tokens_of(rule):
                    gate = _gate_of(token, table)
                    if gate is None:
                        continue
                    if gate not in numbers:
                        numbers[gate] = len(numbers)
                        for word in gate.words:
                            by_word.setdefault(word, set()).add(numbers[gate])
                        for needle in gate.needles:
                            by_needle.setdefault(needle, set()).add(numbers[gate])
                    gates.append(numbers[gate])
                rows.append((lang, rule, frozenset(gates)))
                if gates:
                    by_first.setdefault(gates[0], []).append(number)
                else:
                    ungated.append(number)
            self.rules[list_name] = tuple(rows)
            self._by_first[list_name] = {k: tuple(v) for k, v in by_first.items()}
            self._ungated[list_name] = tuple(ungated)
        self._by_word = {k: frozenset(v) for k, v in by_word.items()}
        self._needles = tuple(by_needle)
        self._by_needle = {k: frozenset(v) for k, v in by_needle.items()}

    def open_gates(self, surface: list[str]) -> frozenset[int]:
        """The numbers of the gates some word of `surface` (lower-cased words) opens."""
        opened: set[int] = set()
        by_word = self._by_word
        for word in set(surface):
            found = by_word.get(word)
            if found is not None:
                opened |= found
        # Every word is a substring of the joined words, and no needle holds a space.
        joined = " ".join(surface)
        for needle in filter(joined.__contains__, self._needles):
            opened |= self._by_needle[needle]
        return frozenset(opened)

    def candidates(self, list_name: str, opened: frozenset[int]) -> list[int]:
        """Numbers, in list order, of the rules of `list_name` whose first gate is open."""
        by_first = self._by_first[list_name]
        found = list(self._ungated[list_name])
        for gate in opened:
            found.extend(by_first.get(gate, ()))
        return sorted(found)


@cache
def _gate_index() -> _GateIndex:
    """Built once from package data (the rules and the lemma tables)."""
    return _GateIndex()


@lru_cache(maxsize=256)
def _words(sentence: str) -> _Words:
    """The _Words of `sentence`, shared by the steps that read the same sentence (the
    request, its languages, its weakness, its clauses): each is lemmatised and matched once."""
    return _Words(sentence)


@dataclass(frozen=True)
class _Token:
    """One token of a lemma rule (handlers.replies.phrases.LemmaRule), its alternatives
    sorted by kind, so that a word is tested with set look-ups and one
    str.startswith/endswith per kind instead of a loop over the alternatives."""

    forms: frozenset[str]          # a dictionary form or a written form
    written: frozenset[str]        # "=form": only as written
    prefixes: tuple[str, ...]      # "x*"
    suffixes: tuple[str, ...]      # "*x"
    parts: tuple[str, ...]         # "*x*"
    classes: tuple[str, ...]       # "@channel", "@object", "@unit"
    adjacent: bool                 # "+": must follow the previous token directly

    def ok(self, word: str, lemma: str) -> bool:
        if word in self.forms or lemma in self.forms or word in self.written:
            return True
        if self.prefixes and (word.startswith(self.prefixes) or lemma.startswith(self.prefixes)):
            return True
        if self.suffixes and (word.endswith(self.suffixes) or lemma.endswith(self.suffixes)):
            return True
        if self.parts and any(part in word or part in lemma for part in self.parts):
            return True
        return bool(self.classes) and any(_in_class(name, word) for name in self.classes)


_CLASSES = ("@channel", "@object", "@unit")


@lru_cache(maxsize=None)
def _tokens_of(rule: LemmaRule) -> tuple[_Token, ...]:
    """The tokens of `rule`, compiled once (rules are fixed package data)."""
    out = []
    for token in rule.tokens:
        alts = [a.lstrip("+") for a in token]
        forms, written, prefixes, suffixes, parts, classes = set(), set(), [], [], [], []
        for alt in alts:
            if alt.startswith("="):
                written.add(alt[1:])
            elif alt in _CLASSES:
                classes.append(alt)
            elif alt.startswith("*") and alt.endswith("*") and len(alt) > 2:
                parts.append(alt[1:-1])
            elif alt.startswith("*"):
                suffixes.append(alt[1:])
            elif alt.endswith("*"):
                prefixes.append(alt[:-1])
            else:
                forms.add(alt)
        out.append(_Token(frozenset(forms), frozenset(written), tuple(prefixes), tuple(suffixes), tuple(parts),
                          tuple(classes), any(a.startswith("+") for a in token)))
    return tuple(out)


@lru_cache(maxsize=65536)
def _in_class(name: str, word: str) -> bool:
    # Cached: pure in its arguments (the tables are fixed), and the same few hundred words
    # are asked about by every rule of every list.
    if name == "@channel":
        return bool(channels_in(word)) or number_words().any(word)
    if name == "@object":
        return phrases("optout_object").any(word)
    return any(patterns.any(word) for patterns in all_unit_words().values())


def _match_rule(rule: LemmaRule, surface: list[str], lemma_list: list[str],
                marks: dict[int, list[bool]] | None = None) -> int | None:
    """Index of the first word where `rule` matches (its tokens in order, at most LEMMA_GAP
    words apart), or None. `marks` (token id -> which words it matches) is shared by the
    rules matched against the same words. Cost: words x distinct tokens, then words x
    tokens x LEMMA_GAP look-ups."""
    tokens = _tokens_of(rule)
    size = len(surface)

    def marked(token: _Token) -> list[bool]:
        found = marks.get(id(token)) if marks is not None else None
        if found is None:
            found = [token.ok(w, l) for w, l in zip(surface, lemma_list)]
            if marks is not None:
                marks[id(token)] = found
        return found

    first = marked(tokens[0])
    if True not in first:
        return None
    for start in range(size):
        if not first[start]:
            continue
        at = start
        for token in tokens[1:]:
            # "+" before a token: it must follow the previous one directly ("stop +the
            # newsletter", not "stop reading the newsletter").
            reach = at + 2 if token.adjacent else at + 2 + LEMMA_GAP
            hit = marked(token)
            nxt = next((k for k in range(at + 1, min(size, reach)) if hit[k]), None)
            if nxt is None:
                break
            at = nxt
        else:
            return start
    return None


def _resubscribe_asked(sentence: str) -> bool:
    """Whether a re-subscribe phrase stands in a request clause of `sentence`, not only
    in a keeping clause ("but do keep sending me the invitations")."""
    request, keeping = _split_keep(sentence)
    # "..., men no vil eg gjerne få det att": a clause that wants something again asks to
    # come back; keeping goes on, it does not come back (handlers.replies.net.comes_back).
    for clause in request + [c for c in keeping if comes_back(c)]:
        if phrases("resubscribe").any(clause):
            return True
        if len(clause) <= LEMMA_CHARS and _words(clause).hits("resubscribe_lemmas"):
            return True
    return False


def _past_spans(sentence: str) -> list[tuple[int, int]]:
    """Where `sentence` reports an opt-out done before ("I unsubscribed last year"): the
    request phrases inside these spans are no request (see the `past` phrase lists)."""
    return [m.span() for _lang, m in phrases("past").all_matches(sentence)]


def _negated_before(sentence: str, start: int) -> bool:
    """Whether a negation stands at most NEGATION_SCOPE words before `start`, in the same clause."""
    before = sentence[:start]
    cut = max(before.rfind(c) for c in _CLAUSE_END)
    before = before[cut + 1:] if cut >= 0 else before
    words = before.split()[-NEGATION_SCOPE:]
    return bool(words) and phrases("negation").any(" ".join(words))


def _request_hits(sentence: str, words: "_Words | None",
                  past: bool = True) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """((language, phrase) of request phrases not negated, (language, phrase) of negated ones).

    Phrases inside a report of an opt-out done before (`past`) count as neither, unless
    `past` is False (to ask whether such a report hides a request phrase)."""
    hits: list[tuple[str, str]] = []
    negated: list[tuple[str, str]] = []
    past = _past_spans(sentence) if past else []
    for lang, match in phrases("optout").all_matches(sentence):
        if any(a <= match.start() < b for a, b in past):
            continue
        (negated if _negated_before(sentence, match.start()) else hits).append((lang, match.group(0)))
    if words is not None:
        for name in ("optout_lemmas", "nocontact_lemmas"):
            for lang, start, source in words.hits(name):
                if any(a <= start < b for a, b in past):
                    continue
                (negated if _negated_before(sentence, start) else hits).append((lang, source))
    return hits, negated
