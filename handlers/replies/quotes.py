"""The newly written part of a reply: body text without quoted history, signatures, footers.

Mail clients quote in their own ways, and in the writer's language: "On ... wrote:",
"Den ... skrev:", "Am ... schrieb:", "ke 18.2.2026 klo 10.05 X kirjoitti:", Outlook's
"-----Original Message-----" or a "From:/Från:/Fra:/Von:" header block under a line of
underscores, and "> " prefixes. The markers themselves are data
(handlers/data/phrases/*.toml: attribution, separator, header_block, app_signature,
signoff, footer). What is cut is never read for intent: a quoted newsletter footer
("To unsubscribe click here", "Avregistrera dig här") must not count as a request.
"""

from __future__ import annotations

import html
import re
from email.message import Message

from handlers.mail.message import content_type, header_text, iter_parts, part_text
from handlers.replies.phrases import phrases

MAX_BODY = 200_000       # characters of body text read; a reply is short, the rest is quoted
MAX_NEW = 5_000          # characters of new text kept: a request is never longer
# A line is read for markers (attribution, footer, signature) and kept only up to this
# many characters: the new text cannot hold more, and every marker list is searched in
# every line, so a 60 kB line would cost that search over all of it (issue 22).
MAX_LINE = MAX_NEW
# HTML tags are removed by _strip_tags, a scanner: the regex it replaces,
# r"<(script|style)\b.*?</\1\s*>|<[^>]{0,2000}>", searched text after every "<" (to the
# end for an unclosed "<script", 2000 characters for a "<" without ">"), so a body of
# 200,000 "<" cost seconds (issue 22). MAX_TAG is that regex's bound on one tag.
MAX_TAG = 2000
_BLOCK_OPEN = re.compile(r"<(script|style)\b", re.IGNORECASE)
_BLOCK_CLOSE = {name: re.compile(rf"</{name}\s*>", re.IGNORECASE) for name in ("script", "style")}
_ANY_CLOSE = re.compile(r"</(?:script|style)>", re.IGNORECASE)
_BLOCK_TAG = re.compile(r"<\s*(?:br|/p|/div|/li|/tr|/h\d|blockquote)\b[^>]{0,200}>", re.IGNORECASE)
_BLOCKQUOTE = re.compile(r"<blockquote\b.*", re.IGNORECASE | re.DOTALL)
# The div tag is read up to the next "<" or ">" only: "[^>]*" re-scanned the rest of
# the text after every "<div" of a body without ">".
_GMAIL_QUOTE = re.compile(r"<div[^<>]{0,2000}class=\"?gmail_quote.*", re.IGNORECASE | re.DOTALL)
_UNDERSCORES = re.compile(r"^\s*_{8,}\s*$")
# A bulk sender's own instruction to answer with a keyword ("Reply STOP", "svar AVMELD",
# "Vastaa LOPETA", "Antworten Sie mit ABMELDEN"): a verb of answering or sending, then
# a word of refusal in capitals within KEYWORD_REACH words of it. It is the sender's footer, not a request
# of the person who writes to us; the whole line goes, like a newsletter footer.
_ANSWER_VERBS = frozenset(("reply", "answer", "text", "send", "sms", "svar", "svara", "svare", "svarer", "svarar",
                           "send", "sende", "skicka", "skriv", "vastaa", "vastaamalla", "lähetä", "tekstaa",
                           "antworten", "antworte", "antwort", "sende", "senden", "schreiben", "schreibe", "simsen",
                           "répondez", "répondre", "envoyez", "responde", "responda", "envía", "odpowiedz",
                           "wyślij", "rispondi", "rispondere", "invia", "antwoord", "stuur", "vasta", "saada"))
_KEYWORD_WORD = re.compile(r"[^\W\d_]+")
KEYWORD_REACH = 4
_DASHES = re.compile(r"^\s*-{5,}.*-{5,}\s*$")


def body_text(msg: Message) -> str:
    """The message's own text: its first inline text/plain part, else text/html as text.

    Attached messages (message/rfc822 and the like) are not entered: a forwarded or
    returned message is someone else's text. Bytes are decoded as UTF-8 when they
    are valid UTF-8 (a declared us-ascii often hides UTF-8, corpus m126), else with
    the declared charset, else Latin-1. Returns "" when there is no text. Never raises.
    """
    html_part: Message | None = None
    for part, _parent in iter_parts(msg):
        kind = content_type(part)
        if kind.startswith("multipart/"):
            continue
        disposition = (header_text(part, "Content-Disposition") or "").lower()
        if disposition.startswith("attachment"):
            continue
        if kind == "text/plain":
            return part_text(part)[:MAX_BODY]
        if kind == "text/html" and html_part is None:
            html_part = part
    if html_part is not None:
        return html_to_text(part_text(html_part)[:MAX_BODY])
    return ""


def html_to_text(markup: str) -> str:
    """Visible text of an HTML body, with quoted blocks (blockquote, gmail_quote) dropped."""
    markup = _GMAIL_QUOTE.sub("", markup)
    markup = _BLOCKQUOTE.sub("", markup)
    markup = _BLOCK_TAG.sub("\n", markup)
    return html.unescape(strip_tags(markup))


def strip_tags(markup: str, replacement: str = "", *, any_closer: bool = False) -> str:
    """`markup` with script/style blocks and tags replaced by `replacement`, in one
    linear pass; text without tags is returned as it is. Never raises.

    A "<script" or "<style" opener removes everything up to its closing tag (with
    `any_closer`, up to the next "</script>" or "</style>", whichever); any other
    "<" removes up to the next ">" when that is at most MAX_TAG characters on; a "<"
    with neither stays as text. The next closer and the next ">" are remembered, so
    no part of the text is searched twice.
    """
    out: list[str] = []
    pos = 0
    gt = -2                                   # position of the next ">" at or after the cursor; -1: none left
    closers: dict[str, tuple[int, int]] = {}  # name -> (start, end) of the next closer; (-1, -1): none left
    at = markup.find("<")
    while at >= 0:
        if gt != -1 and gt <= at:
            gt = markup.find(">", at + 1)
        if gt == -1:
            break       # no ">" left: no tag and no closing tag can follow
        end = -1
        opener = _BLOCK_OPEN.match(markup, at)
        if opener is not None:
            name = "*" if any_closer else opener.group(1).lower()
            start, stop = closers.get(name, (-2, -2))
            if start != -1 and start < opener.end():
                found = (_ANY_CLOSE if any_closer else _BLOCK_CLOSE[name]).search(markup, opener.end())
                start, stop = (found.start(), found.end()) if found else (-1, -1)
                closers[name] = (start, stop)
            end = stop
        if end < 0:
            if gt != -1 and gt <= at:
                gt = markup.find(">", at + 1)
            if gt != -1 and gt - at - 1 <= MAX_TAG:
                end = gt + 1
        if end > 0:
            out.append(markup[pos:at])
            out.append(replacement)
            pos = end
            at = markup.find("<", end)
        else:
            at = markup.find("<", at + 1)
    out.append(markup[pos:])
    return "".join(out)


def new_text(body: str) -> str:
    """The lines written by the sender, above the first quoting or signature marker.

    Stops at an attribution line (possibly wrapped over up to three lines), an
    Outlook separator, a header block ("From:" followed within four lines by
    "Sent:"/"Subject:" or their translations), a "-- " signature separator or a
    sign-off line ("Mvh", "Kind regards") after some text (a first line "Takk for
    henvendelsen." or "Thanks!" opens the text rather than signing it). Drops "> " lines, mail-app signatures
    ("Sent from my iPhone") and newsletter footer lines. Returns "" for empty input.
    """
    lines = body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    size = 0            # characters kept so far: counted as lines are kept, not summed again
    for index, line in enumerate(lines):
        text = line.strip()[:MAX_LINE]
        if text.startswith(">"):
            continue
        if _ends_new_text(lines, index, signoff=bool(kept)):
            break
        if phrases("app_signature").any(text) or phrases("footer").any(text) or keyword_instruction(text):
            continue
        kept.append(text)
        size += len(text) + 1       # the newline that joins it: 300,000 empty lines are text too
        if size > MAX_NEW:
            break
    return "\n".join(kept).strip()


def _ends_new_text(lines: list[str], index: int, signoff: bool = True) -> bool:
    text = lines[index].strip()[:MAX_LINE]
    if not text:
        return False
    if text in ("--", "-- ", "—") or lines[index].rstrip("\n") == "-- ":
        return True
    if _UNDERSCORES.match(text) or _DASHES.match(text) or phrases("separator").any(text):
        return True
    if signoff and phrases("signoff").any(text):
        return True
    # An attribution may be wrapped by the client: "On Wed, ..., X <" / "x@y> wrote:".
    window = text
    for extra in range(0, 3):
        if extra:
            # Only a wrapped line continues an attribution: not across a blank line,
            # not after a finished sentence.
            if index + extra >= len(lines) or not lines[index + extra].strip() or window.endswith((".", "!", "?")):
                break
            window = f"{window} {lines[index + extra].strip()[:MAX_LINE]}"
        if len(window) <= 300 and phrases("attribution").any(window) and _looks_like_attribution(window):
            return True
    if phrases("header_block").any(text) and _is_header_block_start(lines, index):
        return True
    return False


def _looks_like_attribution(window: str) -> bool:
    # "wrote:" alone could end a human sentence ("my colleague wrote:"); a real
    # attribution carries a date, a time or an address.
    return bool(re.search(r"\d|@", window))


def _is_header_block_start(lines: list[str], index: int) -> bool:
    from_like = re.compile(r"^(?:from|från|fra|frå|von|lähettäjä|de|van)\s*:", re.IGNORECASE)
    if not from_like.match(lines[index].strip()):
        return False
    following = [line.strip() for line in lines[index + 1:index + 5]]
    return any(phrases("header_block").any(line) and not from_like.match(line) for line in following)


def keyword_instruction(line: str) -> bool:
    """Whether `line` tells the reader to answer with a keyword in capitals ("Reply STOP",
    "svar AVMELD", "Antworten Sie mit ABMELDEN"): a bulk sender's footer (see _ANSWER_VERBS).
    The keyword is a word of refusal of the safety net's classes (handlers.replies.net), so
    "send me the PDF" is no such line. A scan of the line's words: linear."""
    words = _KEYWORD_WORD.findall(line)
    # The keyword stands out in capitals from the instruction around it: a line shouted
    # all in capitals ("SLUTA SKICKA SKRÄPPOST TILL MIG!!!") is the person's own.
    verbs = [i for i, word in enumerate(words) if word.lower() in _ANSWER_VERBS and not word.isupper()]
    if not verbs:
        return False
    for index, word in enumerate(words):
        if len(word) >= 2 and word.isupper() and _refuses(word.lower()):
            # The keyword after the verb ("Reply STOP") or, in German, before it ("mit
            # ABMELDEN antworten"); bisect would do, but a line holds few answer verbs.
            if any(abs(index - verb) <= KEYWORD_REACH for verb in verbs):
                return True
    return False


def _refuses(word: str) -> bool:
    from handlers.replies.net import word_classes

    return any(name in ("strong", "refusal") for name, _entry in word_classes(word))
