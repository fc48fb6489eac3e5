"""Human replies: opt-out intent, its scope, and whose address it is.

`read_reply` accepts any readable message (it is the last reader) and returns a
`ReplyReport`: the strict sender (handlers.mail.from_header), the Subject when it is
the sender's own words, and the newly written text (handlers.replies.quotes).
`decide_optout` reads the intent (handlers.replies.intent) and returns a Decision:

* kind OPTOUT with one UNSUBSCRIBE action for the sender when the request is clear;
* kind OPTOUT with review=True when it is not safe to act (From unreadable or
  ambiguous, someone writing for another person, an address named in the text,
  an address change in the same message), the proposed action kept only when the
  target shares the sender's domain, and never an action we cannot attribute;
* kind REPLY otherwise, with review=True when a person should answer (questions
  about unsubscribing, re-subscribe requests, access requests, address changes);
* never a silent drop (issue 21): text with request-like words that were not read as
  a request with confidence (handlers.replies.intent `cues`), or, in a language
  unsubd does not read (handlers.replies.language.identify), words that look like a
  request in another language (`foreign_cues`), goes to review with that reason and
  no action. A forward goes to review only when the sender's own words above it look
  like a request; a plain "have a look at this" forward is an ordinary reply.

An erasure request, or removal from the register altogether (GDPR art. 17), is an
opt-out of every unit and channel and carries `evidence["erasure"] = True`; an
objection to all contact or processing for marketing carries `evidence["objection"] = True`.
Access, erasure, rectification and objection requests carry `evidence["rights_request"]`
(handlers.replies.rights: the types and the due date, one calendar month after receipt),
from which handlers.state.plan opens a rights item per type.
`evidence["language"]` is what identify() said of the sender's own words.

A message sent to our List-Unsubscribe mailto address (`unsubscribe+TOKEN@`,
RFC 2369 section 3.2) is an opt-out whatever its text says: the mail client sent it
because the person pressed "unsubscribe". The token is kept as evidence.

A reply to a tagged reply address (`reply+TOKEN@`, or a unit's `alumni+TOKEN@`;
RFC 5233 subaddress) whose tag is one of our signed tokens proves that the mail
reached the token's contact: the request is then `verified` and acts on that
contact (Action.contact_id; apply finds the address), whatever address it came
from, since the From may be another address of theirs or a forwarder. The scope
still comes from the text: a reply is not a click. The token's claims (never the
token itself, which is a bearer credential) are kept as evidence. With a verified
sender (such a token, or our MTA's Authentication-Results), a clear request to be
subscribed again is acted on too (a SUBSCRIBE action, kind REPLY).

Every decision has a confidence (handlers.model.Decision): an opt-out's comes from
handlers.replies.intent, and one below REVIEW_BELOW goes to review with its doubts as the
reason, its proposed action kept for the reviewer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from email.message import Message
from typing import Any

from handlers.mail.from_header import Sender, parse_mailbox, read_sender
from handlers.replies.intent import Intent, read_intent
from handlers.replies.language import READ, UNKNOWN, Identified, identify
from handlers.mail.message import content_type, header_text, is_unreadable, raw_items
from handlers.model import ALL, CERTAIN, HIGH, LOW, MEDIUM, REVIEW_BELOW, Action, ActionType, Decision, Inbound, Kind
from handlers.replies.quotes import body_text, new_text
from handlers.replies.rights import rights_request
from handlers.routing import Route
from handlers.tokens import Claims, verify
from handlers.tokens import scope as token_scope
from handlers.replies.trust import verify_sender
from handlers.context import Context

# Subject prefixes of replies and forwards in the languages we read (and Outlook's
# localised ones): what follows is the subject of the message replied to, not the
# sender's words.
REPLY_PREFIX = re.compile(r"^\s*(?:(?:re|sv|vs|aw|antw|vl|ynt|r|ref|odp|rif)\s*(?:\[\d+\])?\s*:\s*)+", re.IGNORECASE)
FORWARD_PREFIX = re.compile(r"^\s*(?:fwd?|vs|wg|tr|vb|vid|doorst|i)\s*:", re.IGNORECASE)
FORWARD_ONLY = re.compile(r"^\s*(?:fwd?|wg|tr|vb|vid|doorst)\s*:", re.IGNORECASE)
SYSTEM_LOCALS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon", "no-reply", "noreply",
                           "do-not-reply", "donotreply"})


MAX_AUTH_RESULTS = 20     # Authentication-Results headers read; more is noise, or an attack


@dataclass(frozen=True)
class ReplyReport:
    sender: Sender
    subject: str
    own_subject: str | None          # the subject when it is the sender's own words
    forwarded: bool
    text: str                        # newly written text
    to: tuple[str, ...]              # addresses in To, as fallback routing for files without an envelope
    auth_results: tuple[str, ...] = ()   # raw Authentication-Results values (handlers.replies.trust reads them)


def read_reply(msg: Message) -> ReplyReport | None:
    """Read a human message; None when there is nothing readable or it is a multipart/report.

    Odd input: no From gives a report whose sender has `problem` set; no text part
    gives text ""; a reply prefix ("Re:", "SV:", "AW:") makes the Subject not the
    sender's own words, a forward prefix marks the message as forwarded. Never raises.
    """
    try:
        if is_unreadable(msg) or content_type(msg) == "multipart/report":
            # RFC 6522 reports are machine mail (DSNs, MDNs, ARF): never a person's reply.
            return None
        subject = header_text(msg, "Subject") or ""
        subject = " ".join(subject.split())[:500]
        forwarded = bool(FORWARD_ONLY.match(subject)) or content_type(msg) in ("message/rfc822", "message/global")
        own = None if (REPLY_PREFIX.match(subject) or FORWARD_PREFIX.match(subject)) else subject
        text = new_text(body_text(msg))
        to = []
        for value in (header_text(msg, "To") or "").split(",")[:20]:
            address = parse_mailbox(value.strip()).address if value.strip() else None
            if address:
                to.append(address)
        auth = tuple(v for k, v in raw_items(msg) if k.lower() == "authentication-results")[:MAX_AUTH_RESULTS]
        return ReplyReport(sender=read_sender(msg), subject=subject, own_subject=own, forwarded=forwarded,
                           text=text, to=tuple(to), auth_results=auth)
    except RecursionError:
        return None


def reply_route(item: Inbound, report: ReplyReport, ctx: Context) -> Route | None:
    """Which of our mailboxes the reply reached: an envelope recipient, else a To address."""
    for address in (*item.rcpt_tos, *report.to):
        found = ctx.router(address)
        if found is not None:
            return found
    return None


def decide_optout(item: Inbound, report: ReplyReport, ctx: Context, now: datetime) -> Decision:
    """Decide a human message; see the module docstring. Never raises on odd input.

    A decision that acts on the sender's own address is `verified` when our own MTA's
    Authentication-Results prove the sender (handlers.replies.trust, RFC 8601); unverified
    opt-outs are still honoured (the safe direction), and flagged as such.
    """
    decision = _decide(item, report, ctx, now)
    if decision.verified or not decision.actions or report.sender.address is None:
        return decision
    if any(a.type is not ActionType.UNSUBSCRIBE for a in decision.actions):
        return decision     # an opt-in was only proposed when already verified (see _optin)
    if any(a.address != report.sender.address for a in decision.actions):
        return decision
    verdict = verify_sender(report.auth_results, report.sender.address,
                            ctx.trusted_authserv_ids)
    evidence = {**decision.evidence, "sender_verified": verdict.why}
    return replace(decision, verified=verdict.verified, evidence=evidence)


def _decide(item: Inbound, report: ReplyReport, ctx: Context, now: datetime) -> Decision:
    route = reply_route(item, report, ctx)
    mailbox = getattr(getattr(route, "mailbox", None), "value", None)
    sender = report.sender
    texts = [t for t in (report.own_subject, report.text) if t]
    intent = read_intent(texts, ctx.unit_names, subject_first=bool(report.own_subject))
    evidence: dict[str, Any] = {
        "from": sender.address, "from_problem": sender.problem, "mailbox": mailbox,
        "unit_mailbox": getattr(route, "unit", None), "subject": report.subject[:200],
        "matched": intent.matched[:5], "languages": list(intent.languages),
        "named_addresses": list(intent.addresses[:5]), "kept_units": list(intent.kept_units),
        "kept_channels": list(intent.kept_channels),
    }
    base = dict(item_id=item.id, evidence=evidence, source=item.source)
    reply_claims = _reply_claims(route, mailbox, ctx, evidence)

    if mailbox == "unsubscribe":
        tag = getattr(route, "tag", None)
        claims = _token_claims(tag, ctx)
        # A valid token is a bearer credential: only its claims are kept (below). A tag
        # that does not verify is kept as evidence of what was tried.
        evidence["token"] = None if claims is not None else (tag[:80] if tag else None)
        if claims is not None:
            # A valid signed token says exactly whose preferences and which scope: no text
            # analysis, and it holds whoever the mail client sent it from (issue 5, item 5).
            units, channels = token_scope(claims)
            evidence["token_claims"] = {"contact_id": claims.contact_id, "unit": claims.unit,
                                        "channel": claims.channel, "key_id": claims.key_id}
            action = Action(ActionType.UNSUBSCRIBE, "", reason="optout", units=units, channels=channels,
                            contact_id=claims.contact_id)
            return Decision(kind=Kind.OPTOUT, actions=(action,), verified=True, confidence=CERTAIN,
                            reason="List-Unsubscribe mailto request with a valid token", **{**base, "source": "mailto"})
        if sender.address is None:
            return Decision(kind=Kind.OPTOUT, review=True, confidence=LOW, reason=f"unsubscribe mailto request, "
                                                                                 f"but From: {sender.problem}", **base)
        # The mail client sent it for the person (high), but the address is only From's.
        action = Action(ActionType.UNSUBSCRIBE, sender.address, reason="optout", units=ALL, channels=("email",))
        return Decision(kind=Kind.OPTOUT, actions=(action,), confidence=0.9, reason="List-Unsubscribe mailto request",
                        **base)

    if item.mail_from == "" or (sender.address and sender.address.split("@")[0] in SYSTEM_LOCALS):
        # A null reverse path (RFC 5321 section 4.5.5) or a mail-system sender: not a person.
        return Decision(kind=Kind.REPLY, review=intent.optout, confidence=0.9 if not intent.optout else MEDIUM,
                        reason="from a mail system, not a person", **base)

    identified = identify(" ".join(texts))
    evidence["language"] = identified.lang
    if intent.cues or intent.foreign_cues:
        evidence["cues"] = list(dict.fromkeys(intent.cues + intent.foreign_cues))[:5]
    if intent.erasure:
        # Erasure, or removal from the register altogether (GDPR art. 17): no contact on
        # any channel, and a rights item for a person (another issue reads this marker).
        evidence["erasure"] = True
    if intent.objection:
        evidence["objection"] = True

    if report.forwarded:
        if not (intent.optout or intent.erasure or intent.cues or intent.foreign_cues or intent.question
                or intent.third_party or intent.net):
            # Nothing request-like in the sender's own words ("have a look at item two"):
            # an ordinary forward, recorded, not queued.
            return Decision(kind=Kind.REPLY, confidence=MEDIUM,
                            reason="forwarded message, no request in the sender's own words", **base)
        return Decision(kind=Kind.REPLY, review=True, confidence=LOW,
                        reason="forwarded message: the request above the forward needs a person "
                               "(it may concern the forwarded address)", **base)

    rights = rights_request(intent, now)
    if rights is not None:
        # A rights item per request, due one calendar month after receipt (handlers.replies.rights).
        evidence["rights_request"] = rights

    if not intent.optout:
        optin = _optin(intent, report, route, reply_claims, ctx, base)
        return optin if optin is not None else _not_optout(intent, base, identified)

    evidence["confidence_doubts"] = list(intent.doubts)
    if sender.address is None:
        # With a valid reply token the contact is known: proposed for the reviewer.
        proposed = (_unsubscribe_contact(reply_claims, intent),) if reply_claims else ()
        return Decision(kind=Kind.OPTOUT, actions=proposed, review=True, verified=reply_claims is not None,
                        confidence=min(intent.confidence, LOW), reason=f"opt-out request, but From: {sender.problem}",
                        **base)

    # Our own addresses (a unit's, reply@) named in the text say nothing about whose
    # opt-out it is.
    others = [a for a in intent.addresses if a != sender.address and not _ours(a, ctx)]
    target = sender.address
    reasons = []
    if intent.third_party:
        reasons.append("written on behalf of someone else")
    if others:
        reasons.append(f"names {'an address' if len(others) == 1 else 'addresses'} other than the sender")
    if intent.address_change:
        reasons.append("also mentions an address change")
    if reasons:
        from handlers.mail.addresses import normalise
        proposed = normalise(others[0]) if len(others) == 1 else None
        actions: tuple[Action, ...] = ()
        if proposed is None and not others:
            proposed = sender.address
        # A proposal for a person to confirm, only where the sender plausibly speaks for
        # the address (same domain); a stranger's address stays in evidence only.
        if proposed and proposed.split("@")[-1] == sender.address.split("@")[-1]:
            actions = (_unsubscribe(proposed, intent),)
        return Decision(kind=Kind.OPTOUT, actions=actions, review=True, confidence=min(intent.confidence, LOW),
                        reason="opt-out needs review: " + "; ".join(reasons), **base)

    scope = f"units {_fmt(intent.units)}, channels {_fmt(intent.channels)}"
    what = "erasure request (all channels)" if intent.erasure else "opt-out"
    if reply_claims is not None:
        # The token proves the mail reached its contact: act on that contact, verified.
        action = _unsubscribe_contact(reply_claims, intent)
        why = f"{what} by email, verified by the reply address's token: {scope}"
    else:
        action = _unsubscribe(target, intent)
        why = f"{what} by email: {scope}"
    if intent.confidence < REVIEW_BELOW:
        return Decision(kind=Kind.OPTOUT, actions=(action,), review=True, verified=reply_claims is not None,
                        confidence=intent.confidence,
                        reason=f"opt-out needs review: low confidence {intent.confidence:.2f} "
                               f"({'; '.join(intent.doubts)}); proposed {scope}", **base)
    return Decision(kind=Kind.OPTOUT, actions=(action,), verified=reply_claims is not None,
                    confidence=intent.confidence, reason=why, **base)


def _ours(address: str, ctx: Context) -> bool:
    return ctx.router(address) is not None


def _token_claims(token: str | None, ctx: Context) -> Claims | None:
    keyring = ctx.keyring
    if not token or keyring is None:
        return None
    return verify(token, keyring)


def _unsubscribe(address: str, intent: Intent) -> Action:
    return Action(ActionType.UNSUBSCRIBE, address, reason="optout", units=intent.units, channels=intent.channels)


def _unsubscribe_contact(claims: Claims, intent: Intent) -> Action:
    return Action(ActionType.UNSUBSCRIBE, "", reason="optout", units=intent.units, channels=intent.channels,
                  contact_id=claims.contact_id)


def _reply_claims(route: Any, mailbox: str | None, ctx: Context, evidence: dict[str, Any]) -> Claims | None:
    """The claims of a signed token in the tag of our reply address (reply+TOKEN@, unit+TOKEN@), or None.

    Only the claims go into evidence: the token itself would let anyone who reads the
    event change the contact's preferences.
    """
    tag = getattr(route, "tag", None)
    if mailbox not in ("reply", "unit") or not tag:
        return None
    claims = _token_claims(tag, ctx)
    evidence["reply_token"] = (_claims_json(claims) if claims is not None
                               else {"valid": False, "why": "the reply address's tag does not verify"})
    return claims


def _claims_json(claims: Claims) -> dict[str, Any]:
    return {"valid": True, "contact_id": claims.contact_id, "unit": claims.unit, "channel": claims.channel,
            "key_id": claims.key_id}


def _optin(intent: Intent, report: ReplyReport, route: Any, claims: Claims | None, ctx: Context,
           base: dict[str, Any]) -> Decision | None:
    """A SUBSCRIBE decision for a clear request to be subscribed again from a verified sender, else None.

    Opting in needs proof (DESIGN.md promise 6): a valid token in the reply address
    (acting on its contact), or our MTA's Authentication-Results for the From address
    (acting on that address). Never for a request that also concerns rights, another
    person or address, or asks a question, and never with a negation in it. The scope
    is narrow, the safe side for an opt-in: units and channels named in the request,
    else the token's unit and channel, else the unit whose address was written to;
    with none of these (and no all-units token) a person decides.
    """
    sender = report.sender.address
    if (sender is None or not intent.resubscribe or not intent.optin_clear or intent.access or intent.erasure
            or intent.third_party or intent.address_change or intent.question):
        return None
    if any(a != sender and not _ours(a, ctx) for a in intent.addresses):
        return None
    evidence = base["evidence"]
    if claims is None:
        verdict = verify_sender(report.auth_results, sender, ctx.trusted_authserv_ids)
        evidence["sender_verified"] = verdict.why
        if not verdict.verified:
            return None
    units: Any = intent.optin_units or None
    channels: Any = intent.optin_channels or None
    if claims is not None:
        token_units, token_channels = token_scope(claims)
        units = units or token_units
        channels = channels or token_channels
    unit_route = getattr(route, "unit", None)
    units = units or ((unit_route,) if unit_route else None)
    if units is None:
        return None
    channels = channels or ("email",)
    action = Action(ActionType.SUBSCRIBE, "" if claims is not None else sender, reason="optin", units=units,
                    channels=channels, contact_id=claims.contact_id if claims is not None else None)
    how = "the reply address's token" if claims is not None else "our MTA's Authentication-Results"
    return Decision(kind=Kind.REPLY, actions=(action,), verified=True, confidence=HIGH,
                    reason=f"opt-in by email, verified by {how}: units {_fmt(units)}, channels {_fmt(channels)}",
                    **base)


def _fmt(scope: Any) -> str:
    return scope if scope == ALL else ",".join(scope)


def _not_optout(intent: Intent, base: dict[str, Any], identified: Identified | None = None) -> Decision:
    # Confidence here is that the message asks for no opt-out: lower where it comes near one.
    if intent.access:
        return Decision(kind=Kind.REPLY, review=True, confidence=0.9, reason="request for access to personal data",
                        **base)
    if intent.address_change:
        return Decision(kind=Kind.REPLY, review=True, confidence=MEDIUM, reason="address change", **base)
    if intent.question:
        return Decision(kind=Kind.REPLY, review=True, confidence=MEDIUM, reason="asks how to unsubscribe", **base)
    if intent.resubscribe:
        return Decision(kind=Kind.REPLY, review=True, confidence=MEDIUM,
                        reason="asks to be subscribed (needs a verified sender)", **base)
    if intent.net:
        # The safety net (handlers.replies.net): words of refusal beside words for what
        # we send, read by class, not by phrase. Not read with confidence: a person reads it.
        return Decision(kind=Kind.REPLY, review=True, confidence=LOW,
                        reason=f"may be a request: {', '.join(intent.net[:3])}", **base)
    if intent.negated:
        return Decision(kind=Kind.REPLY, confidence=MEDIUM, reason="mentions unsubscribing but does not ask for it",
                        **base)
    # No silent drops (issue 21): request-like words that were not read as a request
    # with confidence go to a person, with the reason; so does a request-like text in a
    # language unsubd does not read. Nothing is acted on by guess.
    lang = identified.lang if identified is not None else UNKNOWN
    if intent.cues:
        return Decision(kind=Kind.REPLY, review=True, confidence=LOW,
                        reason=f"may be a request (request-like words: {', '.join(intent.cues[:3])}), "
                               "not read with confidence", **base)
    if intent.foreign_cues and lang not in READ:
        where = "a language unsubd does not read" if lang == UNKNOWN else f"{lang}, a language unsubd does not read"
        return Decision(kind=Kind.REPLY, review=True, confidence=LOW,
                        reason=f"may be a request in {where} (request-like words: "
                               f"{', '.join(intent.foreign_cues[:3])})", **base)
    if intent.lookalike:
        return Decision(kind=Kind.REPLY, confidence=MEDIUM, reason="ordinary reply, no opt-out (a look-alike phrase)",
                        **base)
    return Decision(kind=Kind.REPLY, confidence=0.9, reason="ordinary reply, no opt-out", **base)
