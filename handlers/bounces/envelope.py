"""Envelope evidence for bounces: the null reverse path and the VERP recipient.

RFC 5321 section 4.5.5: a delivery notification is sent with a null reverse path
(`MAIL FROM:<>`), so `item.mail_from == ""` is a sign that a message is a bounce.
RFC 3464 section 2 leaves it to the original sender to tell which recipient a
notification is about; the classic way is VERP, a return path that names the
recipient: `bounces+local=domain@<bounce domain>`. That form is unsigned, so it is
a hint of whom we sent to, never proof. unsubd's own senders use signed return
paths, `bounces+TOKEN@<bounce domain>` (handlers.tokens.sign_return_path): a bounce
to one of those answers mail we sent to one contact's address, with certainty.

The rule (issue 3 item 4): only a bounce attributed with certainty suppresses on its
own. A bounce to the unsigned form is recorded and counted as a soft bounce (so
repeated ones still reach the soft-bounce threshold), and a bounce that names an
address other than the one we sent to never suppresses that other address. A bounce to
the plain bounce address (no tag at all) suppresses unless
`bounces.require_signed_return_path` is set.

Issue 22: a bounce to a `bounces+TAG@` whose TAG is neither a valid token nor an
address is evidence of forgery: it is recorded (and counted in the metrics, through
`suspect` in its evidence) but never counts toward the soft-bounce threshold. And one
message of ours goes to one recipient, so a bounce that names more addresses to act on
than `bounces.max_recipients_per_report`, besides the one a signed return path names,
acts on none of them and goes to review (`limit_recipients`, `hold_implausible`).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace
from typing import Any

from handlers.bounces.patterns import BOUNCE_FROM
from handlers.mail.addresses import normalise
from handlers.model import WILDCARD, Action, ActionType, Decision, Inbound, Kind
from handlers.routing import Mailbox
from handlers.tokens import ReturnPathClaims, verify, verify_return_path
from handlers.context import Context


class EnvelopeForm(enum.StrEnum):
    """The form of a bounce's envelope recipient (its return path)."""

    SIGNED = "signed"       # a return path whose token verifies: `claims` names contact, unit, address
    FORGED = "forged"       # a `bounces+TAG@` return path whose TAG is neither a valid token nor an address
    UNSIGNED = "unsigned"   # the classic `bounces+local=domain@` form: `hint` is that address
    PLAIN = "plain"         # our bounce address without a tag
    NONE = "none"           # no envelope (a file) or no recipient at our bounce address


@dataclass(frozen=True)
class Envelope:
    """What the envelope recipient says about a bounce (see EnvelopeForm)."""

    form: EnvelopeForm
    claims: ReturnPathClaims | None = None
    hint: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"form": self.form.value}
        if self.claims is not None:
            out.update(contact_id=self.claims.contact_id, unit=self.claims.unit, key_id=self.claims.key_id)
        if self.hint is not None:
            out["hint"] = self.hint
        return out


def bounce_tag(value: str | None, ctx: Context) -> str | None:
    """What follows `+` when `value` is our bounce address (`bounces+TAG@` at the bounce or
    mail domain, where the SMTP listener accepts it): "" for the plain address, None
    when `value` is not our bounce address."""
    if not value:
        return None
    local, at, domain = str(value).strip().strip("<>").strip().rpartition("@")
    domains = {ctx.effective_bounce_domain, ctx.mail_domain}
    if not at or domain.lower().rstrip(".") not in {str(d).lower() for d in domains if d}:
        return None
    base, plus, tag = local.partition("+")
    return tag if base.lower() == ctx.bounce_local.lower() else None


@dataclass(frozen=True)
class TokenMark:
    """A signed token of ours found in a returned or reported message: whose, and where."""

    contact_id: int
    unit: str | None
    where: str
    names: Any = None        # ReturnPathClaims.names for a return path; None for a link token


def find_token(return_paths: Any, list_unsubscribe: str | None, ctx: Context) -> TokenMark | None:
    """The first signed return path among `return_paths` ((value, where) pairs), else the
    signed token in a `List-Unsubscribe` value; None when there is neither or no key."""
    keyring = ctx.keyring
    if keyring is None:
        return None
    units = tuple(ctx.units)
    for value, where in return_paths:
        tag = bounce_tag(value, ctx)
        claims = verify_return_path(tag, keyring, units) if tag else None
        if claims is not None:
            return TokenMark(claims.contact_id, claims.unit, where, claims.names)
    for match in LINK_TOKEN.finditer(list_unsubscribe or ""):
        link = verify(match.group(1) or match.group(2), keyring)
        if link is not None:
            return TokenMark(link.contact_id, link.unit, "List-Unsubscribe token of the original")
    return None


def read_envelope(item: Inbound, ctx: Context) -> Envelope:
    """Read the envelope recipient of a bounce (see Envelope). Never raises."""
    tags = [tag or None for tag in (bounce_tag(r, ctx) for r in item.rcpt_tos or ()) if tag is not None]
    keyring, units = ctx.keyring, tuple(ctx.units)
    if not tags:
        return Envelope(EnvelopeForm.NONE)
    for tag in tags:
        if tag and keyring is not None and (claims := verify_return_path(tag, keyring, units)) is not None:
            return Envelope(EnvelopeForm.SIGNED, claims=claims)
    for tag in tags:
        if tag and (hint := unsigned_verp(tag)) is not None:
            return Envelope(EnvelopeForm.UNSIGNED, hint=hint)
    if any(tags):
        return Envelope(EnvelopeForm.FORGED)
    return Envelope(EnvelopeForm.PLAIN)


def unsigned_verp(tag: str) -> str | None:
    """The address in a classic VERP tag `local=domain` (the last "=" separates), or None."""
    user, eq, user_domain = tag.rpartition("=")
    if not eq or not user or not user_domain:
        return None
    return normalise(f"{user}@{user_domain}")


def verp_recipient(item: Inbound, ctx: Context) -> str | None:
    """The address named by an unsigned VERP envelope recipient, or None. Never raises."""
    return read_envelope(item, ctx).hint


def null_sender(item: Inbound) -> bool | None:
    """True for an SMTP null reverse path, False for another sender, None when unknown (a file)."""
    if item.mail_from is None:
        return None
    return item.mail_from.strip() in ("", "<>")


def guard_rows(rows: list[dict[str, Any]], envelope: Envelope, ctx: Context | None = None) -> list[dict[str, Any]]:
    """Apply the rule of the module docstring to evidence rows, in place, and return them.

    A row that would suppress becomes SOFT_BOUNCE (counted) with `why_not_suppressed`
    when the bounce is not attributed with certainty, or when the row names another
    address than the one we sent to. A row naming the address a signed return path
    was issued for gets `sent_to: true`. Under a forged return path no row keeps an
    outcome: what it would have been is kept as `proposed`, with `why_none`.
    """
    require_signed = ctx is not None and ctx.bounces.require_signed_return_path
    for row in rows:
        address = row.get("address")
        why = None
        if envelope.form is EnvelopeForm.SIGNED and envelope.claims is not None:
            if envelope.claims.names(address):
                row["sent_to"] = True
            else:
                why = "names an address other than the one the signed return path was issued for"
        elif envelope.form is EnvelopeForm.UNSIGNED:
            why = ("names an address other than the VERP recipient" if address != envelope.hint
                   else "unsigned VERP return path: counted, never suppresses on its own")
        elif envelope.form is EnvelopeForm.FORGED:
            if row.get("outcome") in (ActionType.SUPPRESS.value, ActionType.SOFT_BOUNCE.value):
                row["proposed"], row["outcome"] = row["outcome"], None
                row["why_none"] = FORGED_TAG
            continue
        elif envelope.form is EnvelopeForm.PLAIN and require_signed:
            why = "no signed return path (bounces.require_signed_return_path): counted, never suppresses on its own"
        if why and address and row.get("outcome") == ActionType.SUPPRESS.value:
            row["outcome"] = ActionType.SOFT_BOUNCE.value
            row["why_not_suppressed"] = why
        elif (address and row.get("action") == "delivered" and not row.get("outcome")
              and envelope.form is not EnvelopeForm.FORGED and not (why and "other than" in why)):
            # A delivery report (RFC 3464 Action: delivered) is a sign of life: the
            # address's soft bounces stop counting. Not from a forged return path, and
            # not for an address other than the one we sent to.
            row["outcome"] = ActionType.DELIVERED.value
    return rows


DEFAULT_MAX_RECIPIENTS = 5
FORGED_TAG = ("return path tag that does not verify: evidence of forgery, recorded, "
              "never counted toward the soft-bounce threshold")


def limit_recipients(rows: list[dict[str, Any]], ctx: Context | None = None) -> str | None:
    """Keep a bounce from acting on more addresses than one message of ours had.

    Counts the distinct addresses of rows with an outcome (suppress, soft bounce,
    delivered) that a signed return path does not name (`sent_to`). Beyond
    `bounces.max_recipients_per_report` (default 5) those rows lose their outcome, in
    place: it is kept as `proposed`, with `why_none`. Returns the reason in words, or
    None when the count is plausible. Settings of another shape give the default.
    """
    limit = ctx.bounces.max_recipients_per_report if ctx is not None else DEFAULT_MAX_RECIPIENTS
    limit = limit if isinstance(limit, int) and limit >= 1 else DEFAULT_MAX_RECIPIENTS
    loose = [row for row in rows if row.get("address") and row.get("outcome") and not row.get("sent_to")]
    count = len({row["address"] for row in loose})
    if count <= limit:
        return None
    why = (f"names {count} recipients to act on, more than one message of ours has "
           f"(bounces.max_recipients_per_report = {limit})")
    for row in loose:
        row["proposed"], row["outcome"], row["why_none"] = row["outcome"], None, why
    return why


def hold_implausible(decision: Decision) -> Decision:
    """A bounce decision whose evidence says it named too many recipients (see
    `limit_recipients`), sent to review when nothing certain is left to act on.

    Returns `decision` unchanged for other kinds, for a plausible bounce, for one
    already under review, and when actions remain (a signed return path named the
    address we sent to: that one is acted on, the rest stay recorded). Otherwise
    review=True, with the count in the reason and the recipients kept in evidence.
    """
    why = decision.evidence.get("implausible") if decision.kind is Kind.BOUNCE else None
    if not why or decision.review or decision.actions:
        return decision
    notes = [n for n in decision.evidence.get("notes") or () if str(n).startswith("only the first")]
    more = f" ({'; '.join(notes)})" if notes else ""
    return replace(decision, review=True, reason=f"{decision.reason}; not acted on: it {why}{more}")


def attributed(rows: list[dict[str, Any]]) -> bool:
    """Whether a signed return path names one of the rows' addresses (certain attribution)."""
    return any(row.get("sent_to") for row in rows)


_LIST_ID = re.compile(r"<([^<>\s]{1,255})>")
# Our token in a List-Unsubscribe URI: https://.../u/TOKEN or mailto:unsubscribe+TOKEN@...
LINK_TOKEN = re.compile(r"/u/([A-Za-z0-9_-]{20,256})|[+]([A-Za-z0-9_-]{20,64})@")


def attribute_unit(envelope: Envelope, original: dict[str, Any] | None, item: Inbound | None,
                   ctx: Context) -> tuple[str | None, str | None]:
    """(unit key, how it was found) for the message a bounce or complaint answers.

    In order: the signed return path's unit; the returned original's List-Id (RFC 2919)
    against the units' `list_ids`; its From against their `from_addresses`; the signed
    token in its List-Unsubscribe or in its Return-Path; the envelope recipient when it
    is a unit's own address. (None, None) when nothing names a configured unit.
    """
    try:
        return _attribute_unit(envelope, original or {}, item, ctx)
    except Exception:  # noqa: BLE001 - attribution is evidence; odd input gives none
        return None, None


def _attribute_unit(envelope: Envelope, original: dict[str, Any], item: Inbound | None,
                    ctx: Context) -> tuple[str | None, str | None]:
    units = ctx.units
    if envelope.claims is not None and envelope.claims.unit not in (None, WILDCARD):
        return envelope.claims.unit, "signed return path"
    if list_id := original.get("list_id"):
        found = _LIST_ID.search(list_id)
        value = (found.group(1) if found else list_id).strip().lower()
        for key, unit in units.items():
            if value in (x.lower() for x in unit.list_ids):
                return key, "List-Id of the original"
    sender = normalise(_mailbox(original.get("from")))
    for key, unit in units.items():
        if sender and sender in unit.from_addresses:
            return key, "From of the original"
    mark = find_token([(original.get("return_path"), "signed Return-Path of the original")],
                      original.get("list_unsubscribe"), ctx)
    if mark is not None and mark.unit in units:
        return mark.unit, mark.where
    if item is not None:
        for rcpt in item.rcpt_tos or ():
            route = ctx.router(rcpt)
            if route is not None and route.mailbox is Mailbox.UNIT and route.unit:
                return route.unit, "envelope recipient"
    return None, None


_RANK = {ActionType.SUPPRESS.value: 3, ActionType.SOFT_BOUNCE.value: 2, ActionType.DELIVERED.value: 1}


def actions_from_rows(rows: list[dict[str, Any]], ref: str | None = None) -> tuple[Action, ...]:
    """One email-channel Action per distinct address with an outcome; the strongest outcome wins.

    Rows are evidence rows (`address`, `outcome`, `status`, `reason`, `hard`,
    `diagnostic`); rows without an address or outcome give nothing. For one address,
    a suppression outranks a soft bounce, which outranks a delivery. `hard` is the
    row's reading (a permanent problem with the address itself), also when the
    envelope rules keep it from suppressing. `ref` names the bounced message (its
    Message-ID), so that two reports about it count once.
    """
    by_address: dict[str, Action] = {}
    for row in rows:
        address, outcome = row.get("address"), row.get("outcome")
        if not address or outcome not in _RANK:
            continue
        previous = by_address.get(address)
        if previous is not None and _RANK[previous.type.value] >= _RANK[outcome]:
            continue
        by_address[address] = Action(
            type=ActionType(outcome), address=address, status=row.get("status"), reason=row.get("reason"),
            hard=bool(row.get("hard")) and outcome != ActionType.DELIVERED.value, channels=("email",),
            diagnostic=row.get("diagnostic") or None, ref=ref,
        )
    return tuple(by_address.values())


def original_ref(original: dict[str, Any] | None, envelope_id: str | None = None) -> str | None:
    """What identifies the bounced message: its Message-ID, else the DSN's Original-Envelope-Id."""
    mid = (original or {}).get("message_id")
    if mid and mid.strip():
        return mid.strip()[:300]
    return f"envid:{envelope_id.strip()[:200]}" if envelope_id and envelope_id.strip() else None


def _domain_of(text: str | None) -> str | None:
    """The domain of the last `@` in an address or Message-ID, lowercased, without brackets."""
    if not text or "@" not in text:
        return None
    return text.strip().rstrip(">").rsplit("@", 1)[1].strip().rstrip(".").lower() or None


def _under(domain: str | None, ours: set[str]) -> bool:
    return domain is not None and any(domain == d or domain.endswith("." + d) for d in ours)


def forged_original(original: dict[str, Any] | None, ctx: Context) -> str | None:
    """Why a returned original that claims to be ours cannot be ours, or None.

    A bounce answers a message; when it returns that message's headers (RFC 3464
    section 2, third part) and they claim our sender (a From address at our mail or
    bounce domain, or a unit's own address) while the Message-ID was not made under
    our domains, the message was not sent by us: the bounce is forged or answers a
    spoofed message (mail corpus m003: From nyhetsbrev@ at our domain, Message-ID at
    evil.example). Acting on it would let anyone suppress any address. An original
    that does not claim to be ours, or is absent, returns None: attribution by signed
    return paths is the stronger check (issue 3, step 2).
    """
    if not original:
        return None
    ours = {d for d in (ctx.mail_domain, ctx.effective_bounce_domain) if d}
    unit_addresses: set[str] = set()
    for unit in ctx.units.values():
        unit_addresses.update(unit.from_addresses)
    ours |= {a.rsplit("@", 1)[1] for a in unit_addresses}
    sender = normalise(_mailbox(original.get("from")))
    claims_ours = sender is not None and (sender in unit_addresses or _under(_domain_of(sender), ours))
    if not claims_ours:
        return None
    mid_domain = _domain_of(original.get("message_id"))
    if _under(mid_domain, ours):
        return None
    return (f"the returned message claims our sender {sender} but its Message-ID is from "
            f"{mid_domain or 'nowhere'}: not sent by us (forged or spoofed)")


def _mailbox(raw_from: str | None) -> str | None:
    """The address inside `Name <addr>`, or the text itself; only for comparison with ours."""
    if not raw_from:
        return None
    if "<" in raw_from and ">" in raw_from:
        return raw_from[raw_from.rfind("<") + 1:raw_from.rfind(">")]
    return raw_from.strip()


def apply_envelope(item: Inbound, rows: list[dict[str, Any]], original: dict[str, Any] | None,
                   ctx: Context) -> tuple[list[dict[str, Any]], dict[str, Any], bool]:
    """Read the envelope, guard the rows and attribute the unit, for a bounce decider.

    Returns (rows, evidence fields, attributed with certainty). The evidence fields are
    `return_path` (the Envelope), `verp_recipient` (the unsigned hint), `unit` and
    `unit_source`; with `implausible` (see `limit_recipients`) and `suspect` (names of
    what makes the bounce suspect, counted in the metrics) when they apply.
    """
    envelope = read_envelope(item, ctx)
    rows = guard_rows(rows, envelope, ctx)
    implausible = limit_recipients(rows, ctx)
    unit, how = attribute_unit(envelope, original, item, ctx)
    evidence: dict[str, Any] = {"return_path": envelope.to_json(), "verp_recipient": envelope.hint, "unit": unit,
                                "unit_source": how}
    suspect = (["bounce_forged_return_path"] if envelope.form is EnvelopeForm.FORGED else []) + (
        ["bounce_implausible_recipients"] if implausible else [])
    if implausible:
        evidence["implausible"] = implausible
    if suspect:
        evidence["suspect"] = suspect
    return rows, evidence, attributed(rows)


# An address in a header value, for reading the returned original's To and our VERP
# address out of the bounce's own headers (bounded repeats: linear time).
_HEADER_ADDRESS = re.compile(r"[^\s<>()\[\]\",;:@]{1,64}@[^\s<>()\[\]\",;:@]{1,255}")


def verp_hints(values: Any, ctx: Context) -> list[str]:
    """The addresses named by unsigned VERP forms of our bounce address (`bounces+local=
    domain@`) among header values or envelope recipients, in order, without repeats."""
    found: list[str] = []
    for value in values or ():
        value = str(value)
        if "+" not in value or "=" not in value:     # no VERP tag: most bounces
            continue
        for raw in _HEADER_ADDRESS.findall(value):
            tag = bounce_tag(raw, ctx)
            hint = unsigned_verp(tag) if tag else None
            if hint and hint not in found:
                found.append(hint)
    return found


def sent_to_addresses(original: Any, verp: Any, ctx: Context) -> tuple[str, ...]:
    """The addresses a bounce shows we sent to, in order: the returned original's
    X-Original-To and To (RFC 5322 section 3.6.3; group syntax gives none), then `verp`,
    the addresses our VERP return path names (see `verp_hints`: from the envelope or,
    for a file, the bounce's own To/Delivered-To/X-Original-To). Our own addresses are
    left out. Never raises."""
    ours = {d.lower() for d in (ctx.effective_bounce_domain, ctx.mail_domain) if d}
    found: list[str] = []
    values = [getattr(original, "x_original_to", None), getattr(original, "to", None)] if original else []
    for value in values:
        for raw in _HEADER_ADDRESS.findall(value or "")[:5]:
            address = normalise(raw)
            if address and address not in found and address.rsplit("@", 1)[1] not in ours:
                found.append(address)
    for hint in verp or ():
        if hint not in found:
            found.append(hint)
    return tuple(found)


def relation(item: Inbound, original: dict[str, Any] | None, addressed_to: Any, envelope_form: str,
             unit: str | None, ctx: Context, *, raw_return_path: str | None = None,
             raw_from: str | None = None) -> tuple[bool, str]:
    """(related, why): whether a bounce may be about mail we sent (issue 21), in words.

    Tied to us by any of: a signed or VERP return path (the envelope, or our VERP
    address in the bounce's own To/Delivered-To); a returned original whose Message-ID
    was made under our domains, that names a unit (List-Id, From, a signed token:
    `unit`), carries X-NV-Recipient-Id, or has our From (a foreign Message-ID under our
    From is forged_original's to judge). Without a tie, it is *unrelated* (never acted
    on) when something says it answers someone else's mail:

    * the returned original used our bounce address as its return path but is not
      ours: backscatter, a real report about spam that forged our bounce address;
    * no original is returned and the notice comes from a mailbox, not a mail system:
      a non-null envelope sender (RFC 5321 section 4.5.5 and RFC 3464 section 2 send
      every delivery report from `<>`) and a From that is no mailer daemon.

    Anything else (a report that returns a stranger's original without claiming our
    addresses, or none at all from `<>`) is read as before: the plain bounce address
    receives real reports that keep nothing of ours.
    """
    if envelope_form in (EnvelopeForm.SIGNED.value, EnvelopeForm.UNSIGNED.value):
        return True, f"{envelope_form} return path"
    if verp_hints(addressed_to, ctx):
        return True, "sent to our VERP address"
    ours = {str(d).lower() for d in (ctx.mail_domain, ctx.effective_bounce_domain) if d}
    identifying = original and any(original.get(k) for k in ("message_id", "from", "list_id", "recipient_id"))
    if identifying:
        if _under(_domain_of(original.get("message_id")), ours):
            return True, "the returned original's Message-ID is ours"
        if unit:
            return True, "the returned original names our unit"
        if original.get("recipient_id"):
            return True, "the returned original carries our X-NV-Recipient-Id"
        sender = normalise(_mailbox(original.get("from")))
        if sender and (_under(_domain_of(sender), ours)
                       or any(sender in u.from_addresses for u in ctx.units.values())):
            return True, "the returned original's From is ours"
        if bounce_tag(_mailbox(original.get("return_path")), ctx) is not None:
            return False, ("backscatter: the returned message used our bounce address as its return path, "
                           "but nothing else in it is ours")
        return True, "no tie to mail we sent, and nothing says it answers someone else's"
    sender = item.mail_from if item.mail_from is not None else raw_return_path
    if sender is not None:
        sender = sender.strip().strip("<>").strip()
        if sender and not BOUNCE_FROM.search(_mailbox(raw_from) or "") and not BOUNCE_FROM.search(sender):
            return False, "no original returned, and sent by a mailbox, not a mail system (not from <>)"
    return True, "no original returned"


UNRELATED = "no relation to mail we sent (no Message-ID, token, VERP address or unit of ours)"


def drop_unrelated(rows: list[dict[str, Any]], why: str) -> None:
    """Take the outcome off every row (kept as `proposed`), in place, with why."""
    for row in rows:
        if row.get("outcome"):
            row["proposed"], row["outcome"] = row["outcome"], None
        if row.get("action") in ("failed", "delayed", "delivered"):
            row["why_none"] = f"{UNRELATED}: {why}; recorded, not acted on"


def drop_forged(rows: list[dict[str, Any]], evidence: dict[str, Any], why: str) -> None:
    """Record a bounce whose returned original is forged (see `forged_original`) as not
    about mail we sent, in place: every row loses its outcome (kept as `proposed`) with
    `why_none`, and the evidence says `related: false` with the reason. The message the
    bounce answers was not sent by us, so none of its recipients is one of ours: the rows
    are the reading, kept for the reviewer, not a report of our recipients."""
    for row in rows:
        if row.get("outcome"):
            row["proposed"], row["outcome"] = row["outcome"], None
        if row.get("action") in ("failed", "delayed", "delivered"):
            row["why_none"] = f"{why}; recorded, not acted on"
    evidence["related"], evidence["relation"] = False, why
