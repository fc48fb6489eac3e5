"""Data for reading bounces that are not RFC 3464 reports, and for naming why mail bounced.

Nothing here runs: these are tables that `handlers.bounces.text` (and `handlers.bounces.dsn` for the
reason words) walk in order. Adding an MTA's text form or a phrase in another language
means adding a row. Every pattern is our own, written from what the formats say; the
corpus sample that shows a form is named next to its row.

All patterns are case-insensitive and searched in *notice text*: the human-readable
part of a bounce, cut before the returned copy of the original. Those that run over
whole texts (reason words, failure phrases, MTA signatures) are `Words`: written in
lower case, compiled without re.IGNORECASE and matched against lower-cased text,
which CPython's `re` runs about five times faster. The patterns that locate
addresses keep re.IGNORECASE, because their match positions index the original text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from handlers.bounces.status import BounceReason
from handlers.mail.needles import required_literals

I = re.IGNORECASE | re.MULTILINE
# What a pattern source may contain besides lower-case text: escapes ("\\S", "\\b") and
# the ranges of address classes ("A-Z").
_NOT_TEXT = re.compile(r"\\.|A-Z|\(\?P<[^>]*>")


class Words:
    """A case-insensitive pattern for long texts: lower-case source, lower-cased input.

    `search` lower-cases its argument; `search_lowered` is for callers that lower a
    text once and run many patterns over it. Match positions refer to the lower-cased
    text. A source with an upper-case letter raises ValueError at import, because it
    could never match.
    """

    __slots__ = ("pattern", "needles", "_scan")

    def __init__(self, source: str) -> None:
        if any(c.isupper() for c in _NOT_TEXT.sub("", source)):
            raise ValueError(f"Words pattern must be lower case: {source[:60]!r}")
        self.pattern = re.compile(source, re.MULTILINE)
        # Strings one of which every match contains (see _needles): when none is in
        # the text, the pattern cannot match and the regex scan is skipped.
        self.needles = _needles(source)
        # The same language with every alternative starting with a literal (see
        # _literal_led), which lets the regex engine skip to candidate positions.
        self._scan = _literal_led(source) or self.pattern

    def search(self, text: str) -> re.Match[str] | None:
        return self.search_lowered(text.lower())

    def search_lowered(self, lowered: str) -> re.Match[str] | None:
        needles = self.needles
        # map() over the bound method keeps the loop in C (a generator expression costs
        # a Python frame step per needle, and most texts are tested against every needle).
        if needles is not None and not any(map(lowered.__contains__, needles)):
            return None
        return self._scan.search(lowered)

    def gate_and_scan(self) -> tuple[tuple[str, ...] | None, re.Pattern[str]]:
        """(needles, the pattern to scan with): `search_lowered` in two parts, for a caller
        that walks a long table in one loop (handlers.bounces.reasons)."""
        return self.needles, self._scan


def _literal_led(source: str) -> re.Pattern[str] | None:
    """`source` compiled with leading groups distributed over the alternation, or None.

    "(?:user|mailbox) unknown|no such user" is searched as "user unknown|mailbox
    unknown|no such user": the same matches at the same start positions, but when
    every alternative starts with a literal character the engine scans for those
    characters first instead of trying every alternative at every position (about
    twice as fast on the longest rows). None when an alternative cannot be rewritten
    so; the pattern is then used as written.
    """
    try:
        from re import _compiler, _constants, _parser  # the standard library's own pattern compiler
        parsed = _parser.parse(source, re.MULTILINE)
        items = list(parsed)
        if len(items) == 1 and items[0][0] is _constants.BRANCH:
            alternatives = [list(a) for a in items[0][1][1]]
        else:
            alternatives = [items]
        expanded: list[list[object]] = []
        for alternative in alternatives:
            led = _lead_with_literal(alternative, _constants, 0)
            if led is None:
                return None
            expanded += led
        if len(expanded) > 400:
            return None
        tree = _parser.SubPattern(parsed.state, [(_constants.BRANCH, (None, [
            _parser.SubPattern(parsed.state, alt) for alt in expanded]))])
        return _compiler.compile(tree, re.MULTILINE)
    except Exception:  # noqa: BLE001 - the pattern as written is always right
        return None


def _lead_with_literal(alternative: list, constants: object, depth: int) -> list[list] | None:
    if not alternative or depth > 4:
        return None
    op, arg = alternative[0]
    if op is constants.LITERAL:  # type: ignore[attr-defined]
        return [alternative]
    if op is constants.SUBPATTERN and arg[0] is None and not arg[1] and not arg[2]:  # type: ignore[attr-defined]
        return _lead_with_literal(list(arg[3]) + alternative[1:], constants, depth + 1)
    if op is constants.BRANCH:  # type: ignore[attr-defined]
        out: list[list] = []
        for branch in arg[1]:
            led = _lead_with_literal(list(branch) + alternative[1:], constants, depth + 1)
            if led is None:
                return None
            out += led
        return out
    return None


def _needles(source: str) -> tuple[str, ...] | None:
    """Literal strings, one of which occurs in every match of `source`, or None
    (handlers.mail.needles.required_literals: None when some branch requires no literal
    of at least three characters). Plain substring tests are far cheaper than a regex
    scan of a long alternation, so most rows are ruled out at once."""
    return required_literals(source, re.MULTILINE)

# One address as MTAs write it in text (RFC 5322 dot-atom, no quoted local parts):
# surrounding <>, quotes or "rfc822;" are outside the group, and so is a leading
# apostrophe ("'kijitora@..." quoted with single quotes in sisimai rfc3464-35).
# The look-behind lets a match start only where a word starts and the repeats are
# bounded (RFC 5321 section 4.5.3.1: 64-octet local part, 63-octet labels), so a long
# run of address characters costs linear time, not quadratic.
# RFC 6531 section 3.3 (SMTPUTF8) lets both parts carry UTF-8: the letters of the
# scripts unsubd's recipients write (Latin with diacritics, Greek, Cyrillic, Hebrew,
# Arabic, Devanagari, Thai, Japanese kana, CJK, Hangul) are address characters too, so
# `åsa.nyström@kustmail.example` is read whole, never as `m@kustmail.example`.
# Latin-1's × and ÷ are not letters and stay out.
_UTF8_LETTERS = ("\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u0370-\u03ff\u0400-\u052f\u0590-\u05ff"
                 "\u0600-\u06ff\u0900-\u097f\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af")
ADDRESS = (rf"(?<![A-Za-z0-9!#$%&*+/=?^_`{{|}}~.{_UTF8_LETTERS}-])"
           rf"[A-Za-z0-9!#$%&*+/=?^_`{{|}}~{_UTF8_LETTERS}-][A-Za-z0-9!#$%&'*+/=?^_`{{|}}~{_UTF8_LETTERS}-]{{0,63}}"
           rf"(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~{_UTF8_LETTERS}-]{{1,64}}){{0,16}}"
           rf"@[A-Za-z0-9{_UTF8_LETTERS}](?:[A-Za-z0-9{_UTF8_LETTERS}-]{{0,61}}[A-Za-z0-9{_UTF8_LETTERS}])?"
           rf"(?:\.[A-Za-z0-9{_UTF8_LETTERS}](?:[A-Za-z0-9{_UTF8_LETTERS}-]{{0,61}}[A-Za-z0-9{_UTF8_LETTERS}])?){{1,16}}")
ADDRESS_RE = re.compile(ADDRESS)

# ----------------------------------------------------------------- is it a bounce?

# Who sends bounces (RFC 5321 section 4.5.5 names no sender; these are the
# conventional mailboxes and display names). Matched against the From header.
BOUNCE_FROM = re.compile(
    r"mailer-daemon|mail-daemon|mailer_daemon|\bpostmaster@|\bmail delivery (?:system|subsystem)\b|"
    r"\bmail administrator\b|\bsystem administrator\b|\bmail ?deliver(?:y)? system\b|\bmaildaemon\b|"
    r"\bmail system\b|\bmailer\b@|\bmdaemon\b|\bnobody@|\bmailmaster@|\bmail router\b|"
    r"\bmicrosoft outlook\b|\bdelivery ?(?:status )?notification\b", I)

# Subjects bounce notices use, in the languages of our recipients (sv, no, da, de, fr)
# and the MTA defaults seen in the corpus.
BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|not delivered|non[- ]?deliver|delivery (?:status )?notification|"
    r"delivery fail|delivery problem|failure notice|returned mail|return(?:ed|ing) message|"
    r"mail delivery failed|mail system error|could not be delivered|couldn't be delivered|"
    r"message (?:not )?(?:delivered|rejected)|delivery report|mail failure|rejected:|"
    r"unzustellbar|nicht zustellbar|unzustellbare|r[üu]ckl[äa]ufer|fehlgeschlagen|"
    r"ej levererbart|kunde inte levereras|olevererbar|levereringsfel|"
    r"ikke levert|kunne ikke leveres|ikke leverbar|ikke afleveret|kunne ikke afleveres|"
    r"non remis|non distribu|[ée]chec de (?:la )?(?:remise|distribution)|"
    r"notificaci[óo]n de estado|no se puede entregar|"
    r"ei voitu toimittaa|toimitus ep[äa]onnistui|onbestelbaar|niet afgeleverd|non recapitabile|"
    r"impossibile recapitare|n[ãa]o (?:[ée] poss[íi]vel|foi poss[íi]vel) entregar|nie mo[żz]na dostarczy[ćc]|"
    r"warning: could not send|delayed mail|delivery delayed|delivery (?:has been )?delayed|delivery warning|"
    r"mail could not be delivered|error sending message|nondeliverable|failed mail|mail failed|"
    r"\bdsn\b|mail error|returned to sender|bounce", I)

# Auto-replies are another reader's business (RFC 3834). A bounce never carries these;
# when they are present we leave the message alone (sisimai rfc3834-* samples).
AUTOREPLY_SUBJECT = re.compile(
    r"out of (?:the )?office|auto(?:matic|matisk|matiskt)?[ -]?(?:reply|svar|antwort|respon|r[ée]ponse)|"
    r"\bvacation\b|\babwesen|\bfr[åa]nvaro|\bferie|\bon leave\b|\babsence\b|\bcong[ée]s?\b|"
    r"\baway from\b|\bi am away\b|\bautosvar\b|\brisposta automatica\b", I)

# Phrases that say delivery failed or is delayed. A message with a bounce-like From or
# Subject must also contain one of these in its notice before we read it as a bounce.
FAILURE_PHRASE = Words(
    r"could not be delivered|couldn't be delivered|not be delivered|was not delivered|"
    r"wasn't delivered|undeliverable|undelivered|delivery (?:has )?failed|delivery to the following|"
    r"failed permanently|permanent(?:ly)? (?:error|failure|fatal)|fatal errors?|"
    r"unable to deliver|could not deliver|couldn't deliver|cannot be delivered|can't be delivered|"
    r"did not reach|error delivering|delivery errors|following address(?:es)? failed|"
    r"failed recipients?|rejected|returned|user unknown|unknown user|no such user|"
    r"mailbox (?:is )?(?:full|unavailable|not found)|over quota|not listed|"
    r"has been delayed|delivery (?:is )?delayed|(?:message|mail) is delayed|host unknown|will (?:continue to )?(?:be )?retr|"
    r"error occurred while trying to deliver|an error has occurred|delivery attempts|"
    r"could not be sent|failed to deliver|non remis|n'a pas pu [eê]tre (?:remis|distribu)|"
    r"nicht zugestellt|konnte nicht zugestellt|unzustellbar|"
    r"kunde inte levereras|inte levererats|kunne ikke leveres|ikke levert|kunne ikke afleveres|"
    # Finnish, Dutch, Spanish, Italian, Portuguese, Polish: "could not be delivered" and
    # "delivery failed" as those languages' servers (and localised Exchange) write it.
    r"ei voitu toimittaa|ei voida toimittaa|toimitus ep[äa]onnistui|"
    r"niet (?:worden )?afgeleverd|kon niet worden (?:afgeleverd|bezorgd)|onbestelbaar|"
    r"no se (?:ha )?(?:pudo|puede|podido) entregar|no pudo ser entregado|"
    r"non [èe] stato possibile recapitare|impossibile recapitare|non recapitabile|"
    r"n[ãa]o (?:foi|[ée]) poss[íi]vel entregar|n[ãa]o p[ôo]de ser entregue|"
    r"nie (?:mo[żz]na|mog[łl]a zosta[ćc]) dostarcz|nie zosta[łl]a dostarczona|"
    r"exceeds (?:allowed|allocated)|not able to be delivered|delivery problems|sorry,? (?:we|i) (?:were|was)n?'?t able|i'm afraid|mail delivery failed|"
    r"smtp error|said:|remote host said|recipient address rejected|does not exist|"
    r"address (?:not found|rejected)|invalid (?:recipient|address|mailbox)|"
    r"(?:were|was|are|is) not able to deliver|(?:wasn't|weren't) able to deliver|"
    r"не может быть доставлено|не доставлено|невозможно доставить|配信|届|送信に失敗|送信できません|"
    # Chinese (simplified and traditional): "cannot be sent/delivered", "delivery failed".
    r"无法发送|无法送达|无法投递|投递失败|发送失败|無法傳送|無法送達|傳送失敗")

# A line that starts the returned copy of the original in a text notice. Everything
# from it on is someone else's mail and is not searched for recipients. (Lower case:
# handlers.bounces.text matches it on the lower-cased notice, whose positions are the same.)
ORIGINAL_MARKERS = Words(
    r"^[ \t]*(?:"
    r"-+ ?(?:this is a copy of (?:the|your) message|original message|the header of the original message|"
    r"below this line is a copy|message text follows|returned message|the following is a copy|"
    r"start of returned message|original message header)[^\n]*|"
    r"-+ ?(?:unsent|undelivered|returned) message(?: follows)?[^\n]*|"
    r"--- below this line is a copy of the message\.?|"
    r"original message follows\.?|message headers follow\.?|"
    r"-+ ?original mail info|"
    r"below is a copy of the original message:?|"
    r"the original message headers:?|original message headers:?|"
    r"return-path: ?<[^\n]*|received: (?:from|by) [^\n]*|"
    r"-+ ?forwarded message ?-+|"
    r"headers of the original message:?|-+ ?ursprüngliche nachricht ?-+|-+ ?message d'origine ?-+|"
    r"-+ ?ursprungligt meddelande ?-+|-+ ?opprinnelig melding ?-+|-+ ?oprindelig meddelelse ?-+|"
    r"content-type: message/rfc822"
    r")[ \t]*$")

# ----------------------------------------------------------------- per-MTA readers


@dataclass(frozen=True)
class MtaForm:
    """One MTA's text notice: how to know it, and where it writes the failed recipients.

    `detect` is searched in the notice text (and Subject/From, joined on top of it);
    `recipients` is searched in the notice text and whichever of its `addrN` groups
    matched is one failed address. `temporary` says the notice is a delay warning when it matches.
    """

    name: str
    detect: Words
    recipients: re.Pattern[str]
    temporary: Words | None = None


def _form(name: str, detect: str, recipients: str, temporary: str | None = None) -> MtaForm:
    # Each ADDR becomes its own named group (addr0, addr1, ...): alternatives may
    # each name one, and a regex cannot reuse a group name.
    pieces = recipients.split("ADDR")
    pattern = pieces[0] + "".join(f"(?P<addr{i}>{ADDRESS})" + rest for i, rest in enumerate(pieces[1:]))
    return MtaForm(name, Words(detect), re.compile(pattern, I), Words(temporary) if temporary else None)


# Ordered, most specific first; the first form whose `detect` matches and whose
# `recipients` finds an address wins. The generic reader runs when none does.
MTA_FORMS: tuple[MtaForm, ...] = (
    # Trend Micro InterScan Messaging Security Suite (lhost-trendmicro-*): "Unable to deliver
    # message to <addr> (and other recipients in the same domain)", or the SMTP dialogue
    # "Sent <<< RCPT TO:<addr>" / "Received >>> 550 ...".
    _form("interscan", r"interscan messaging security suite|interscan notification",
          r"unable to deliver message to <ADDR>|^[ \t]*sent <<< rcpt to:[ \t]*<ADDR>"),
    # qmail (lhost-qmail-*, Yahoo's qmail-derived form lhost-yahoo-*): "<addr>:" alone on a line.
    _form("qmail", r"qmail-send program|\bqmail\b|unable to deliver your message to the following address",
          r"^[ \t]*<ADDR>:?[ \t]*$",
          temporary=r"not (?:been )?able to deliver .{0,40}yet|still trying|will keep trying"),
    # Exim and its descendants (lhost-exim-*, MailRu, GMX, 1&1): the failed address indented
    # alone on a line, optionally quoted and followed by a colon, after "address(es) failed".
    _form("exim", r"created automatically by mail delivery software|following address(?:\(es\)|es)? failed|"
                  r"could not be delivered to one or more of\s+its\s+recipients",
          r"^[ \t]*\"?ADDR\"?:?[ \t]*(?:\n|$)|^[ \t]*ADDR[ \t]*<[^>\n]*>:?[ \t]*$",
          temporary=r"has not yet been delivered|delivery attempts .{0,20}delay|message has been frozen|"
                    r"this is (?:just )?a warning|no action is required|will continue to be retried"),
    # Exim names an address it expanded from an alias "(generated from <alias>)" under the
    # failed one; when the failed one is withheld ("an undisclosed address"), the alias is
    # the only address left, and it is the one that was mailed (flufl simple_16).
    _form("exim-generated", r"created automatically by mail delivery software|following address(?:\(es\)|es)? failed",
          r"^[ \t]+\(generated from ADDR\)[ \t]*$"),
    # Postfix text (lhost-postfix-* without a report part): "<addr>: host ... said: ...",
    # "<addr> (expanded from <alias>): ...".
    _form("postfix", r"this is the mail system at host|\bthe mail system\b|postfix",
          r"^[ \t]*<ADDR>(?:[ \t]+\(expanded from[^)\n]*\))?:[ \t]",
          temporary=r"delayed mail|delivery to the following recipients? (?:was|has been) delayed|"
                    r"this is a warning|will continue to try"),
    # Gmail (lhost-gmail-*): "Delivery to the following recipient failed permanently:" then
    # the address indented on its own line; the delayed variant says "has been delayed".
    _form("gmail", r"delivery to the following recipients? (?:failed|has been delayed)|google tried to deliver",
          r"delivery to the following recipients? (?:failed permanently|has been delayed|failed)[^\n]*:\s*\n\s*ADDR",
          temporary=r"has been delayed|will retry|will continue trying"),
    # DragonFly Mail Agent (lhost-dragonfly-*): one sentence names the recipient.
    _form("dragonfly", r"dragonfly mail agent|there was an error delivering your mail to",
          r"error delivering your mail to <?ADDR>?"),
    # Novell GroupWise's Internet agent: "The message that you sent was undeliverable to
    # the following:", then each recipient indented with its reason in parentheses,
    # "user@host (user not found)"; "Possible causes:" follows.
    _form("groupwise", r"was undeliverable to the following",
          r"^[ \t]*<?ADDR>?[ \t]+\([^()\n]{1,200}\)[ \t]*$"),
    # OpenSMTPD (lhost-opensmtpd-*): "addr: 550 ..." lines after the recipients list heading.
    _form("opensmtpd", r"this is the mailer-daemon, please do not reply|following\s+list\s+of\s+recipients",
          r"^[ \t]*<?ADDR>?:[ \t]",
          temporary=r"only a temporary failure|message is delayed|kept in the queue"),
    # Exchange 2003 (lhost-exchange2003-*): "did not reach the following recipient(s):" then
    # "addr on DATE".
    _form("exchange2003", r"did not reach the following recipient",
          r"^[ \t]*ADDR[ \t]+on[ \t]"),
    # Exchange 2007+/Office 365/Outlook (lhost-exchange2007-*, lhost-office365-*):
    # "Delivery has failed to these recipients or groups:" then "Name (addr)" or
    # "addr<mailto:addr>" or just the address.
    _form("exchange", r"delivery has failed to these recipients|your message (?:to|couldn't be delivered)|"
                      r"couldn't be delivered to|generating server:",
          r"(?:delivery has failed to these recipients or groups:\s*\n\s*(?:[^\n]*?[(<\[])?ADDR)|"
          r"^[ \t]*ADDR(?:<mailto:[^>\n]*>)?[ \t]*$|"
          r"^[ \t]*[^\n()@]{1,80}\(ADDR\)[ \t]*$",
          temporary=r"delivery (?:is|has been) delayed|hasn't been delivered yet|will continue to try"),
    # Lotus Domino/Notes (lhost-domino-*, lhost-notes-*): "was not delivered to:" then the
    # address on the next line (sometimes "Name <addr>").
    _form("domino", r"was not delivered to:|domino directory|lotus",
          r"was not delivered to:\s*\n\s*(?:[^\n<]*<)?ADDR"),
    # Sun/Oracle Messaging Server (lhost-messagingserver-*): "Recipient address:" may be a
    # source route or local mailbox; "Original address:" is the one that was mailed.
    _form("messagingserver", r"this report relates to a message you sent with the following header fields",
          r"^[ \t]*original address:[ \t]*<?ADDR|^[ \t]*recipient address:[ \t]*<?ADDR>?[ \t]*$"),
    # Amazon SES and WorkMail text forms (lhost-amazonses-*, lhost-amazonworkmail-*).
    _form("amazon", r"an error occurred while trying to deliver the mail to the following recipients",
          r"following recipients:\s*\n\s*(?:<)?ADDR"),
    # Exim's notice about a recipient it could not even parse (lhost-exim-52): "a <b>:
    # malformed address: ..." under "recipient addresses that were incorrectly constructed".
    _form("exim-malformed", r"recipient addresses that were\s+incorrectly constructed",
          r"^[ \t]*(?:[^\n<]*<)?ADDR>?:[ \t]*malformed address"),
    # Postfix's report of an SMTP session it refused (lhost-postfix-75): the client's
    # "In:  RCPT TO:<addr>" lines in the transcript.
    _form("postfix-transcript", r"^ ?in: +rcpt to:",
          r"^[ \t]*In:[ \t]+RCPT TO:[ \t]*<ADDR>"),
    # Smail-style notices (rfc3464-37): "Failed addresses follow:" then "addr ... reason".
    _form("smail", r"failed addresses follow",
          r"^[ \t]*<?ADDR>?[ \t]+\.\.\."),
    # A bulleted list under "Delivery to the following recipients failed permanently" or
    # "... was aborted after N hour(s)" (lhost-x3-*).
    _form("bullets", r"delivery status notification|(?:delivery|delevery) to the following recipients",
          r"^[ \t]*\*[ \t]*ADDR[ \t]*$"),
    # Lotus Notes (lhost-notes-*): a "Failure Reasons" box, the reason, then the address
    # alone on a line (the reason is often in the recipient's own language).
    _form("notes", r"^-+ *failure reasons *-+",
          r"^[ \t]*<?ADDR>?[ \t]*$"),
    # Sendmail text forms (lhost-sendmail-*, lhost-v5sendmail-*, activehunter, x1):
    # a "following addresses had ... errors" heading, then addresses one a line.
    # The transcript names the recipient in the failing reply: "554 <addr>... 550 Host
    # unknown" (lhost-v5sendmail-02).
    _form("sendmail", r"following addresses had (?:permanent |transient )?(?:fatal |delivery )?(?:errors|problems)|"
                      r"transcript of session follows|the original message was received at",
          r"(?:(?:errors?|problems)\s*-*\s*\n(?:[ \t]*(?:>>>)?[ \t]*<?[^\n@]*>?\n)*?[ \t]*(?:>>>[ \t]*)?<?ADDR)|"
          r"^[ \t]*<ADDR>(?:\.\.\.|[ \t]*\(|:)|^[ \t]*ADDR[ \t]+[\[(]|^[ \t]*[45]\d\d[ -]<ADDR>\.\.\.",
          temporary=r"following addresses had transient|warning: could not send|will keep trying|"
                    r"will be retried|still undelivered"),
    # SendGrid (lhost-sendgrid-*): "local:code:<addr> : reason".
    _form("sendgrid", r"automatically generated message from sendgrid", r"^[^\n<@]*<ADDR>[ \t]*:"),
    # IMail and similar one-liners (lhost-imailserver-*): "Unknown user: addr".
    _form("oneliner", r"^[ \t]*(?:unknown user|user mailbox exceeds|mail server (?:temporarily )?rejected|"
                      r"user not found|requested action not taken|mailbox (?:full|unavailable)|"
                      r"invalid final delivery userid)[^\n:]*:",
          r"^[ \t]*[A-Za-z][^\n:@]{2,60}:[ \t]*<?ADDR>?[ \t]*$"),
    # Zoho (lhost-zoho-*): "addr Invalid Address, ERROR_CODE :550".
    _form("zoho", r"error_code ?:", r"^[ \t]*<?ADDR>?[ \t]+[^\n]*error_code"),
)

# ----------------------------------------------------------------- why it bounced

R = BounceReason

# (reason, pattern) in order: the first pattern found in a recipient's diagnostic text
# names the reason. Order matters where texts say two things: "mailbox full" beats
# "mailbox unavailable", a disabled account is not an unknown one, and the specific
# recipient phrases ("user unknown", "no such mailbox") come before the sender-side
# words, because servers wrap them in generic ones ("Recipient address rejected:
# User unknown. See .../#filtered" in lhost-dragonfly-09; "not listed in Domino
# Directory" in lhost-domino-01 is not a block list). Postfix's "Recipient address
# rejected:" prefix is any RCPT restriction, so it names no reason on its own.
def _alternatives(source: str) -> list[str]:
    """The top-level alternatives of a pattern source (split at "|" outside groups,
    classes and escapes)."""
    out, depth, start, i, in_class = [], 0, 0, 0, False
    while i < len(source):
        c = source[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if source[i + 1:i + 2] == "]":
                i += 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            out.append(source[start:i])
            start = i + 1
        i += 1
    out.append(source[start:])
    return out


CHUNK = 8   # alternatives per Words of a long reason row


def _rows(reason: BounceReason, source: str) -> list[tuple[BounceReason, Words]]:
    """One reason row as consecutive Words of at most CHUNK alternatives each: the first
    row that matches still names the reason (the pieces name the same one), and each
    piece's needles rule it out on its own, so a text that has one of a long row's
    needles is searched for a few alternatives, not for all of them."""
    parts = _alternatives(source)
    return [(reason, Words("|".join(parts[i:i + CHUNK]))) for i in range(0, len(parts), CHUNK)]


# An account, mailbox or address that was disabled, deactivated, closed or discontinued
# (issue 21: a permanent problem with the address itself), in the languages the other
# rows read: the noun, at most three short words (a copula: "was", "has been", "er",
# "wurde", "a été", "on"; no dots, so no host name or IP address), then the participle.
# Nouns and participles are each language's own; "blocked" and "locked" words are not
# here, because a site says them of our sender too ("Ihre Adresse wurde gesperrt").
_BOX_NOUNS = (r"\b(?:account|mailbox|mail box|inbox|(?:e-?mail )?address|konto|kontot|kontoen|"
              r"(?:e-post)?brevlådan?|postlådan?|(?:e-post)?adressen?|e-postadressa|adressa|postkassen?|"
              r"postboksen?|e-?mail-?adressen?|postfach|(?:sähkö)?postilaatikko|tili|(?:sähköposti)?osoite|"
              r"compte|boîte aux lettres|boîte|cuenta|buzón|casella(?: di posta)?|conta|caixa(?: de correio)?|"
              r"skrzynka|adres|postbus|dirección|indirizzo|endereço)")
_GAP = r"(?:\s+[^\s.,;:<>@()]{1,20}){0,3}\s+"
_DISABLED = (r"(?:disabled|deactivated|suspended|inactive|discontinued|"
             r"inaktiverad|inaktiverat|avaktiverad|avaktiverat|avstängd|avstängt|stängd|stängts?|nedlagd|nedlagt|"
             r"avslutad|avslutats?|upphört|deaktivert|stengt|stengd|avsluttet|avslutta|opphørt|inaktiv|"
             r"deaktiveret|lukket|ophørt|afsluttet|stillgelegt|geschlossen|aufgelöst|gekündigt|"
             r"suljettu|lakkautettu|poistettu käytöstä|passivoitu|deaktivoitu|"
             r"désactivée?|suspendue?|fermée?|clôturée?|résiliée?|gedeactiveerd|uitgeschakeld|opgeheven|"
             r"gesloten|inactief|desactivad[ao]|deshabilitad[ao]|suspendid[ao]|cerrad[ao]|dad[ao] de baja|"
             r"disattivat[ao]|disabilitat[ao]|sospes[ao]|chius[ao]|cessat[ao]|desativad[ao]|desabilitad[ao]|"
             r"encerrad[ao]|inativ[ao]|wyłączon[eay]|dezaktywowan[eay]|zawieszon[eay]|nieaktywn[eay]|"
             r"zamknięt[eay]|zlikwidowan[eay])\b")
# "No longer active" as the languages say it: the address was in use and is not now.
_NO_LONGER_ACTIVE = (r"no longer (?:active|enabled|in service)|inte längre (?:aktiv|i bruk)|"
                     r"ikke lenger (?:aktiv|i bruk)|ikkje lenger (?:aktiv|i bruk)|ikke længere (?:aktiv|i brug)|"
                     r"nicht mehr (?:aktiv|in betrieb|vorhanden)|ei ole enää (?:aktiivinen|käytössä)|ei enää käytössä|"
                     r"n'est plus (?:active?|utilisée?|en service)|niet (?:meer|langer) actief|"
                     r"ya no está activ[ao]|non è più (?:attiv[ao]|in uso)|não está mais ativ[ao]|"
                     r"já não está ativ[ao]|nie jest już aktywn")

REASON_PATTERNS: tuple[tuple[BounceReason, Words], ...] = tuple(row for reason, p in (
    (R.EXPIRED, r"retry (?:time|timeout) (?:not reached|exceeded)|message (?:has been )?expired|"
                r"delivery time ?out|too long in (?:the )?queue|was not delivered within|"
                r"could not be delivered within|delivery attempts? (?:will continue|have been failing)|"
                r"timed? ?out (?:waiting|while)|queue ?(?:time|life)|"
                r"unable to deliver .{0,30}for \d+ (?:days|hours)|could not deliver for the last \d+ (?:seconds|minutes|hours)|"
                r"expired|message (?:is|was) older than|zustellung .{0,20}abgelaufen"),
    (R.MAILBOX_FULL, r"mailbox (?:is )?full|mail ?box (?:size )?(?:limit )?exceeded|over ?quota|quota (?:exceeded|full)|"
                     r"exceed(?:ed|s|ing)? (?:the |their |his |her )?(?:storage|quota|mailbox)|"
                     r"insufficient (?:disk )?(?:space|storage)|disk quota|mailbox has exceeded|"
                     r"not enough (?:storage|space)|user(?:'s)? (?:mailbox|disk) (?:is )?full|"
                     r"exceeds allocated storage|inbox is full|mailfolder is full|full mailbox|"
                     r"postfach (?:ist )?voll|speicherplatz|brevlådan är full|postkassen er full|postkassen er fuld|"
                     r"postilaatikko (?:on )?täynnä|(?:mailbox|postvak|postbus) is vol|buz[óo]n (?:est[áa] )?lleno|"
                     r"casella (?:di posta )?(?:è )?piena|caixa (?:de correio )?(?:est[áa] )?cheia|skrzynka (?:jest )?pe[łl]na|"
                     r"boîte (?:aux lettres |mail )?(?:est )?pleine|quota d[ée]pass[ée]|storage limit"),
    (R.MESSAGE_TOO_BIG, r"message (?:is )?too (?:big|large)|message size exceeds|size limit|exceeds? (?:the )?(?:maximum|max)"
                        r"[^\n]{0,20}size|message length exceeds|mail size|too large|taille maximale"),
    (R.SUSPENDED, r"account (?:is |has been )?(?:disabled|suspended|inactive|deactivated|locked|expired|closed|"
                  r"temporarily (?:unavailable|disabled|suspended))|"
                  r"mailbox (?:is |has been )?(?:disabled|suspended|inactive|deactivated|locked|closed)|"
                  r"user (?:account )?(?:is )?(?:suspended|inactive|deactivated|disabled)|"
                  r"(?:inactive|suspended|disabled|deactivated|frozen|blocked) (?:user|account|mailbox|recipient)|"
                  r"account that you tried to reach (?:is|has been) (?:disabled|inactive|suspended)|"
                  r"temporar(?:y|ily) (?:locked|blocked|disabled|suspended)|"
                  r"has been disabled|not active|unavailable due to inactivity|konto (?:ist )?gesperrt|"
                  r"(?:address|account|mailbox|service) (?:has been |was |is )?discontinued|"
                  r"(?:account|mailbox|address) (?:is |has been )?(?:terminated|cancell?ed)|"
                  r"deaktivert|deaktiverad|avstängd|suljettu|deaktiviert|désactivée?|"
                  r"kontot är (?:spärrat|avstängt)|kontoen er (?:sperret|deaktivert)|"
                  r"(?:account|mailbox) (?:was|had been|is now|has now been|got) (?:permanently )?closed|"
                  + _BOX_NOUNS + _GAP + _DISABLED + "|" + _NO_LONGER_ACTIVE),
    (R.HAS_MOVED, r"has moved|no longer (?:at|with|valid|in use|used|available|here|exists?)|"
                  r"user has (?:moved|changed)|address (?:has )?changed|changed (?:his|her|their) address|"
                  r"forwarding address|is now at|has left|no longer works? here|moved to"),
    # Postfix's "Host not found, try again" is the resolver's TRY_AGAIN, and a malformed
    # name server reply is a DNS failure, not an answer (lhost-postfix-17, -34).
    (R.NETWORK_ERROR, r"not found, try again|malformed or unexpected name server reply"),
    # A local delivery agent that failed (procmail, a pipe) says nothing about the address,
    # whatever words it passes on (lhost-postfix-01: 'procmail: Couldn't create ...').
    (R.SYSTEM_ERROR, r"\bprocmail:|couldn't create \"|could not create \""),
    # Refusals by the recipient's own filter or list, worded like an unknown user: the
    # address exists. Facebook's "RCP-P2 ... Refused due to recipient preferences"
    # (rhost-facebook-03); qmail's badrcptto list (err/make-test-29); au/KDDI's reply
    # that names no address, "550 : User unknown", which it gives when the recipient's
    # reception settings refuse the sender (lhost-messagingserver-08, rfc3464-57), while
    # its unknown users get "550 <address>: User unknown" (lhost-messagingserver-09).
    (R.POLICY, r"recipient preferences|badrcptto|\b5\d\d:? : user unknown"),
    # Exchange Online's directory-based edge blocking and its imitators answer RCPT for
    # a mailbox that does not exist with "Recipient address rejected: Access denied"
    # (rhost-microsoft-02 with 5.4.1, lhost-exim-30 with 5.7.1): not a block list.
    (R.USER_UNKNOWN, r"recipient address rejected: access denied"),
    (R.USER_UNKNOWN, r"user unknown|unknown user|no such (?:user|mailbox|recipient|address|account|local user)|"
                     r"(?:user|recipient|mailbox|address|account)(?: name| address)? (?:does not|doesn't|do not) exist|"
                     r"not an active (?:e-?mail )?address|(?:address|mailbox|account) [^.\n]{0,40}(?:does not|doesn't) exist|"
                     r"(?:user|recipient|mailbox|address|account) (?:is )?(?:not found|unknown|invalid)|"
                     r"(?:invalid|unknown|bad|non-?existent) (?:recipient|mailbox|address|user|account|destination)|"
                     r"rejected recipient|"
                     r"not listed in (?:the )?(?:public )?(?:domino )?(?:directory|(?:name (?:&|and) )?address book)|"
                     r"user (?:not|doesn't|does not) (?:found|exist|have an account)|"
                     r"no mailbox|mailbox unavailable|mailbox not available|not our customer|"
                     r"address (?:not found|unknown)|was not found|wasn't found|"
                     r"(?:address|recipient) (?:couldn't|could not|can't|cannot) be found|"
                     r"please check if (?:the )?address is correct|"
                     r"recipient name is not recognized|unknown recipient|undeliverable address|"
                     r"is not a valid (?:mailbox|user|recipient)|no such person|not a known user|"
                     r"unknown local[- ]part|unknown address|recipient not found|no user|"
                     r"invalid (?:final delivery )?user ?id|"
                     r"addressee unknown|(?:does not|doesn't) have an? (?:[\w.-]+ )?account|invalid address|"
                     r"unbekannt|existiert nicht|gibt es nicht|ungültige (?:adresse|empfänger)|"
                     r"finns inte|okänd (?:mottagare|användare)|ukjent (?:mottaker|bruker)|finnes ikke|"
                     r"findes ikke|ukendt (?:modtager|bruger)|"
                     r"utilisateur inconnu|destinataire inconnu|n'existe pas|adresse (?:invalide|inconnue)|"
                     r"tuntematon (?:vastaanottaja|käyttäjä|osoite)|ei ole olemassa|"
                     r"onbekende (?:ontvanger|gebruiker)|bestaat niet|usuario desconocido|destinatario desconocido|"
                     r"utente sconosciuto|destinatario sconosciuto|non esiste|usu[áa]rio desconhecido|"
                     r"destinat[áa]rio desconhecido|n[ãa]o existe|nieznany (?:odbiorca|u[żz]ytkownik)|nie istnieje|"
                     r"introuvable|"
                     # "Does not exist", "no mailbox here" and "not an active address" in the
                     # languages above that the rows before did not yet say it in (issue 21).
                     r"finst ikkje|eksisterer ikke|eksisterer ikkje|existerar inte|"
                     r"ingen (?:sådan |slik |slik ein |sådan en )?(?:e-post)?(?:brevlåda|postlåda|postkasse)|"
                     r"kein(?:e)? (?:solches )?postfach|postilaatikkoa ei (?:ole|löydy)|ei postilaatikkoa|"
                     r"aucune boîte|pas de boîte aux lettres|geen (?:mailbox|postbus)|no hay (?:ningún )?buzón|"
                     r"ningún buzón|nessuna casella|nenhuma caixa|brak skrzynki|"
                     r"(?:inte|ikke|ikkje) (?:en|ei|ein) aktiv (?:e-post|e-?mail)?-?adress|keine aktive (?:e-mail-)?adresse|"
                     r"ei ole aktiivinen (?:sähköposti)?osoite|n'est pas une adresse active|geen actief (?:e-?mail)?adres|"
                     r"no es una dirección activa|non è un indirizzo attivo|não é um endereço ativo|"
                     r"nie jest aktywnym adresem|"
                     # Lotus Domino/Notes in Japanese: "not found in the (Domino) directory",
                     # "not in the directory's list".
                     r"ディレクトリ(?:に|には)見つかりません|ディレクトリのリストにありません"),
    (R.HOST_UNKNOWN, r"name service error|host [a-z0-9.-]+ not found|"
                     r"no smtp service|domain is not reachable|host (?:or domain name )?not found|host unknown|"
                     r"unknown host|domain (?:name )?not found|"
                     r"no such domain|unrouteable address|unroutable address|domain (?:does not|doesn't) exist|"
                     r"unroute?able (?:mail )?domain|mx records? points? to non-?existent hosts?|"
                     r"(?:name|domain) (?:or service )?not known|no mx|no mail exchanger|"
                     r"nxdomain|dns (?:error|lookup failed)|domain (?:is )?(?:invalid|unknown)|"
                     r"unknown (?:domain|mail domain)|recipient domain (?:not found|does not exist|unknown)|"
                     r"no route to host|"
                     r"(?:illegal|invalid) host|hostname (?:lookup|not found)|host (?:name )?lookup|"
                     r"domain .{0,30} (?:does not|doesn't) accept mail|null mx|"
                     r"domäne (?:existiert|nicht)|domaine (?:inexistant|introuvable)|"
                     # An unknown or unroutable domain in the other languages (issue 21).
                     r"okänd domän|ukjent domene|ukendt domæne|unbekannte domain|"
                     r"tuntematon (?:verkkotunnus|toimialue)|domaine inconnu|onbekend domein|dominio desconocido|"
                     r"dominio (?:sconosciuto|inesistente)|dom[íi]nio (?:desconhecido|inexistente)|nieznana domena"),
    # RFC 7504: reply code 521 "host does not accept mail" with 5.3.2, and 556 "domain does
    # not accept mail" with 5.1.10 (a null MX, RFC 7505), are answers about the destination
    # itself, whatever words follow (lhost-dragonfly-16: "521 5.3.2"). A 521 with another
    # code is some site's refusal of us (lhost-amazonses-16: "521 5.7.1 ... dnsbl").
    (R.NOT_ACCEPTING, r"521[ -]5\.3\.2\b|556[ -]5\.1\.10\b|"
                      r"does not accept (?:e-?)?mail|not accepting (?:e-?)?mail|accepts no mail|no longer accepts? (?:e-?)?mail|"
                      r"doesn't accept mail|not receiving mail|recipient (?:does not|doesn't) accept"),
    (R.RATE_LIMITED, r"too many (?:messages|connections|recipients|mails|emails)|rate ?limit|"
                     r"(?:sending|receiving|inbound|outbound) rate|try (?:again )?later|throttl|"
                     r"exceed(?:ed|s)? .{0,20}(?:rate|limit of|connection)|temporarily deferred|"
                     r"has been temporarily rate limited|unusual rate|too many concurrent|"
                     r"receiving mail at a rate"),
    (R.REPUTATION, r"poor reputation|bad reputation|low reputation|reputation|senderscore|sender score"),
    # The rows below are searched in every notice that names no earlier reason: each
    # alternative starts with a letter (no leading \b), so that the engine can skip to
    # candidate positions (Words._scan); "spam\b" also finds "antispam", as it should.
    (R.SPAM, r"spam\b|junk mail|unsolicited|content (?:was )?rejected|looks like spam|bulk mail|"
             r"message (?:content )?(?:was )?(?:classified|identified|detected) as|"
             r"virus|malware|infected|phish"),
    (R.BLOCKED, r"blacklist|blocklist|block ?list|black ?list|listed (?:on|in|at) |rbl\b|dnsbl|spamhaus|"
                r"spamcop|sorbs|barracuda ?(?:central|reputation)|blocked|client host rejected|"
                r"connection refused|access denied|not allowed to send|refused to talk|"
                r"reverse (?:dns|lookup)|ptr\b|rdns|no reverse|banned|"
                r"ip address .{0,40}(?:rejected|not permitted)|sender ip|your ip"),
    (R.POLICY, r"spf\b|dkim\b|dmarc\b|authentication (?:failed|required)|unauthenticated|"
               r"policy|relay(?:ing)? (?:denied|not permitted|access denied|prohibited)|"
               r"not permitted to relay|we do not relay|relay not permitted|"
               r"sender (?:address )?(?:rejected|denied|verify failed)|domain of sender|"
               r"sender domain|"
               r"message (?:was )?(?:refused|rejected) by|not compliant|rfc ?5322|rfc ?2822|"
               r"tls required|encryption required|tls is required|"
               r"header (?:is )?(?:missing|invalid)|invalid header|"
               r"syntax error|bad sequence|command unrecognized|"
               r"filter|filtered|content filter|mail from .{0,40}not accepted"),
    (R.NETWORK_ERROR, r"connection (?:timed out|reset|lost|closed)|network (?:is )?unreachable|"
                      r"could not connect|couldn't connect|unable to connect|lost connection|"
                      r"no route|conversation with|connect to .{0,60}(?:failed|refused)|"
                      r"name server|temporary (?:dns )?lookup failure|dns (?:temporary )?failure"),
    (R.SYSTEM_ERROR, r"system (?:error|failure|not available)|internal (?:server )?error|"
                     r"local error|server (?:error|busy|unavailable)|service (?:not available|unavailable)|"
                     r"temporary (?:failure|problem|error)|mail system (?:error|full)|"
                     r"insufficient system (?:storage|resources)|system (?:is )?(?:full|busy)|"
                     r"too many hops|loop detected|mail loop|routing loop|i/o error|"
                     r"(?:mailer|program|pipe) (?:error|failed)|delivery to (?:a )?(?:pipe|program|file) failed"),
) for row in _rows(reason, p))
del R

# The remote server accepted the recipient at RCPT and refused the message after DATA
# (Exim's "after end of data", Postfix's "in reply to end of DATA command"). Sendmail's
# ">>> DATA" transcript line is not such a sign: with pipelining it reports refused
# RCPTs there too (lhost-sendmail-01).
# whatever words it uses ("user unknown"), the address existed a moment earlier, so the
# refusal is about the content (a filter), not the address (lhost-mailru-07).
AFTER_DATA = Words(r"after end of data|after data\b|in reply to end of data|smtp command\s*-*\s*data\b|"
                        r"did not like our (?:final )?data|after (?:the )?message (?:was )?(?:sent|transmitted)|"
                        r"after sending (?:the )?message")

# A transcript whose refusal answers our DATA command (Sendmail's ">>> DATA" followed by
# the "<<< 5xx" reply, lhost-sendmail-19). With pipelining, refused RCPTs are reported
# after ">>> DATA" too (lhost-sendmail-01), so this only counts when the code itself
# does not say the address is bad.
DATA_REPLY = Words(r"^(?:> ?)?>>> ?data\s*\n(?:> ?)?<<< ?5\d\d\b")

# The notice says the recipient was refused in reply to RCPT: the address itself was
# judged ("in reply to RCPT TO command", ">>> RCPT TO:", "after RCPT TO:").
AT_RCPT = Words(r"\brcpt\b")

# The remote server refused our MAIL FROM: nothing was said about the recipient at all
# (lhost-mailru-09 "after MAIL FROM: ... 501 5.1.8 Sender address rejected").
BEFORE_RCPT = Words(r"after mail from|in reply to mail from|sender address rejected|"
                         r"after (?:initial )?connection|after (?:ehlo|helo)|in reply to (?:ehlo|helo)")

# A recipient's text that says the problem is temporary (a class 4 reading when no
# code says otherwise) or permanent (class 5).
TEMPORARY_WORDS = Words(
    r"temporar(?:y|ily) (?:error|failure|problem)|has been delayed|delivery (?:is )?delayed|"
    r"will (?:continue to )?(?:retry|be retried|try again|keep trying)|still trying|"
    r"not yet been delivered|warning: message|this is a warning|try again later|"
    r"endast en varning|bara en varning|kun en advarsel|nur eine warnung|vain varoitus|seulement un avertissement")
# A notice that says it is only a warning: the delivery is still being tried (RFC 3464
# `Action: delayed` in words), in the languages unsubd's recipients' servers write.
DELAY_WARNING = Words(
    r"warning only|only a warning|just a warning|endast en varning|bara en varning|"
    r"kun en advarsel|kun et varsel|bare en advarsel|nur eine warnung|lediglich eine warnung|"
    r"vain varoitus|ainoastaan varoitus|seulement un avertissement|simple avertissement|"
    r"du behöver inte skicka om|du trenger ikke sende|sie müssen die nachricht nicht erneut senden|"
    # In English too: the sender need not send again, because the delivery is retried
    # (Sendmail's "THIS IS A WARNING MESSAGE ONLY", Postfix's and OpenSMTPD's "do not need
    # to re-send", a notice that says the message "will be retried").
    r"warning message only|(?:do not|don't|not) need to (?:re-?send|send (?:it|this|the message|your message) again)|"
    r"(?:delivery|message|it) will be retried|will be retried (?:for|until|automatically)|"
    r"(?:will|shall) continue (?:to try|trying|to attempt) (?:to deliver|delivery)|has been postponed|"
    r"delivery attempts will continue|do not resend (?:your|the) (?:original )?message|"
    # "Not delivered yet" and "keeps trying" (Exim's delay warning, Gmail's "Delivery
    # incomplete ... will keep trying"), in each language unsubd's recipients' servers write.
    r"(?:has|have) not yet been delivered|(?:has|have)n't been delivered yet|not been delivered yet|"
    r"delivery incomplete|keeps (?:on )?trying|will keep (?:on )?trying|will (?:retry|try again) for|"
    r"har (?:ännu|än) inte levererats|försöker (?:igen|fortfarande)|fortsätter att försöka|"
    r"er ennå ikke levert|prøver (?:igjen|fortsatt)|fortsetter å prøve|er endnu ikke (?:blevet )?leveret|"
    r"forsøger (?:igen|fortsat)|fortsætter med at forsøge|noch nicht zugestellt|"
    r"wird (?:weiterhin|erneut) versucht|ei ole vielä toimitettu|yritetään uudelleen|"
    r"n'a pas encore été (?:remis|distribu)|nog niet (?:afgeleverd|bezorgd)|"
    r"wordt opnieuw geprobeerd|(?:aún|todavía) no se ha entregado|"
    r"non è ancora stato recapitato|ainda não foi entregue|nie została jeszcze dostarczona")
PERMANENT_WORDS = Words(
    r"permanent(?:ly)?|fatal error|given up|gave up|could not be delivered|couldn't be delivered|"
    r"did not reach|was not delivered|undeliverable|failed")

# Words that state the address does not exist (not that a user is "unknown" to a filter,
# sisimai's "filtered"): a notice with no code and no SMTP stage is believed when it says
# this, in the languages of unsubd's recipients (handlers.bounces.text.assess_text).
EXISTENCE_WORDS = Words(
    r"(?:address|mailbox|user|recipient|account|adress|adressen|adresse)[^.\n]{0,40}(?:does not|doesn't|do not) exist|"
    r"finns inte|finnes ikke|findes ikke|existiert nicht|n'existe pas|ei ole olemassa|no longer exists?|"
    r"bestaat niet|no existe|non esiste|n[ãa]o existe|nie istnieje|"
    r"not an active (?:e-?mail )?address|no mailbox here|finst ikkje|eksisterer ikke|eksisterer ikkje|"
    r"existerar inte|(?:inte|ikke|ikkje) (?:en|ei|ein) aktiv (?:e-post|e-?mail)?-?adress|"
    r"keine aktive (?:e-mail-)?adresse|ei ole aktiivinen (?:sähköposti)?osoite|n'est pas une adresse active|"
    r"geen actief (?:e-?mail)?adres|no es una dirección activa|non è un indirizzo attivo|"
    r"não é um endereço ativo|nie jest aktywnym adresem")

# Words that state the account or mailbox was disabled, deactivated, closed or
# discontinued, or is no longer active (issue 21): a fact about the address when the
# receiving server says it in its own 5xx reply (handlers.bounces.text.assess_text); in a
# notice with no reply code at all they may be a relay's or a filter's paraphrase
# (sisimai's "suspend", lhost-x2-02), and are not believed on their own.
ACCOUNT_STATE_WORDS = Words(_BOX_NOUNS + _GAP + _DISABLED + "|" + _NO_LONGER_ACTIVE)

# An account that is disabled, deactivated, closed or suspended, with a permanent
# failure, is a permanent problem with the address itself (issue 21), unless the text
# says it is temporary.
TEMPORARILY = Words(r"temporar(?:y|ily)|midlertidig|tillfälligt|vorübergehend|temporairement|väliaikaisesti")

# Recipient-side: a hard bounce when the class is 5 (RFC 3463 section 3.2 / 3.3 codes
# that concern the address itself).
HARD_REASONS = frozenset({BounceReason.USER_UNKNOWN, BounceReason.HOST_UNKNOWN,
                          BounceReason.HAS_MOVED, BounceReason.NOT_ACCEPTING})

# The RFC 3463 code written when a notice gives a reason in words but no code; the
# class comes from the notice (TEMPORARY_WORDS / PERMANENT_WORDS, reply code).
REASON_STATUS: dict[BounceReason, str] = {
    BounceReason.USER_UNKNOWN: "1.1",
    BounceReason.HOST_UNKNOWN: "1.2",
    BounceReason.HAS_MOVED: "1.6",
    BounceReason.NOT_ACCEPTING: "1.10",
    BounceReason.MAILBOX_FULL: "2.2",
    BounceReason.MESSAGE_TOO_BIG: "3.4",
    BounceReason.RATE_LIMITED: "7.1",
    BounceReason.EXPIRED: "4.7",
    BounceReason.SYSTEM_ERROR: "3.0",
    BounceReason.NETWORK_ERROR: "4.1",
    BounceReason.SUSPENDED: "2.1",
    BounceReason.BLOCKED: "7.1",
    BounceReason.POLICY: "7.1",
    BounceReason.SPAM: "7.1",
    BounceReason.REPUTATION: "7.1",
    BounceReason.OTHER: "0.0",
}
