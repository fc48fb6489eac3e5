"""Amazon SES notifications that arrive by mail: JSON bounce and delivery reports.

SES tells a sender about bounces, complaints and deliveries with a JSON object
(`notificationType` Bounce, Complaint or Delivery), sent as the text of a mail,
either bare or wrapped in an SNS envelope whose `Message` field holds it as a
string. Complaints are read by handlers.complaints.arf; this module reads the other two:

* Bounce: one recipient group per `bouncedRecipients` entry, read as an RFC 3464
  group (handlers.bounces.dsn.structured_row on its `status` and `diagnosticCode`). `bounceType`
  Transient or Undetermined never suppresses; Permanent follows the status.
  Without a status, the `bounceSubType` gives one (NoEmail 5.1.1, MailboxFull
  4.2.2/5.2.2, MessageTooLarge 5.3.4, ContentRejected 5.7.1, ...).
* Delivery: each recipient was delivered to, a sign of life.

The envelope rules of handlers.bounces.envelope apply as to any bounce. Never raises.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from typing import Any

from handlers.mail.addresses import normalise
from handlers.bounces.envelope import actions_from_rows, apply_envelope, null_sender
from handlers.bounces.dsn import structured_row
from handlers.mail.message import content_type, decode_bytes, payload_bytes
from handlers.model import Decision, Inbound, Kind
from handlers.context import Context

MAX_TEXT = 256 * 1024
MAX_RECIPIENTS = 100
# Mail systems break lines longer than 998 octets; Sendmail marks such a break with
# "!" at the end of the piece (sisimai lhost-amazonses-10). Undone before parsing.
_WRAPPED = re.compile(r"!\r?\n ")
_SUBTYPE_STATUS = {
    ("permanent", "noemail"): "5.1.1",
    ("permanent", "suppressed"): "5.1.1",
    ("permanent", "onaccountsuppressionlist"): "5.1.1",
    ("permanent", "general"): "5.0.0",
    ("transient", "general"): "4.0.0",
    ("transient", "mailboxfull"): "4.2.2",
    ("transient", "messagetoolarge"): "5.3.4",
    ("transient", "contentrejected"): "5.7.1",
    ("transient", "attachmentrejected"): "5.7.1",
}


@dataclass(frozen=True)
class SesReport:
    """A Bounce or Delivery notification: the rows to decide and what identifies the mail."""

    kind: str                                  # "bounce" or "delivery"
    rows: tuple[dict[str, Any], ...]
    message_id: str | None
    original: dict[str, Any]
    bounce_type: str | None = None


_ASCII_SPACE = bytes(c for c in range(128) if chr(c).isspace())


def notification(msg: Message) -> dict[str, Any] | None:
    """The SES notification object in a mail's text (bare or inside an SNS envelope), or None."""
    if content_type(msg) != "text/plain":
        return None
    data = payload_bytes(msg)[:MAX_TEXT]
    # Every text/plain message is asked (the complaint and bounce readers both look for
    # SES): a body whose first character is plainly not "{" is no JSON, without decoding
    # it. Exact: decode_bytes (UTF-8, else Latin-1) keeps ASCII bytes as they are, and
    # these bytes are the ASCII characters str.strip removes.
    head = data.lstrip(_ASCII_SPACE)[:1]
    if not head or (head < b"\x80" and head != b"{"):
        return None
    text = decode_bytes(data).strip()
    if not text.startswith("{") or "notificationType" not in text[:4000] and '"Message"' not in text[:4000]:
        return None
    data = _json(text)
    if isinstance(data, dict) and data.get("Type") == "Notification" and isinstance(data.get("Message"), str):
        data = _json(data["Message"])
    return data if isinstance(data, dict) and isinstance(data.get("notificationType"), str) else None


def _json(text: str) -> Any:
    decoder = json.JSONDecoder(strict=False)     # SNS may leave raw line breaks inside strings
    for candidate in (text, _WRAPPED.sub("", text)):
        try:
            return decoder.raw_decode(candidate)[0]
        except ValueError:
            continue
    return None


def read_ses(msg: Message) -> SesReport | None:
    """Read an SES Bounce or Delivery notification, or return None. Never raises."""
    try:
        data = notification(msg)
    except (RecursionError, ValueError):
        return None
    if data is None:
        return None
    kind = data["notificationType"].lower()
    mail = data.get("mail") if isinstance(data.get("mail"), dict) else {}
    if kind == "bounce" and isinstance(data.get("bounce"), dict):
        rows, bounce_type = _bounce_rows(data["bounce"])
    elif kind == "delivery" and isinstance(data.get("delivery"), dict):
        rows, bounce_type = _delivery_rows(data["delivery"]), None
    else:
        return None
    if not rows:
        return None
    message_id = mail.get("messageId") if isinstance(mail.get("messageId"), str) else None
    return SesReport(kind=kind, rows=tuple(rows), message_id=message_id, original=_original(mail),
                     bounce_type=bounce_type)


def _bounce_rows(bounce: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    bounce_type = str(bounce.get("bounceType") or "Undetermined").lower()
    subtype = str(bounce.get("bounceSubType") or "").lower()
    rows = []
    for entry in (bounce.get("bouncedRecipients") or [])[:MAX_RECIPIENTS]:
        if not isinstance(entry, dict):
            continue
        address = normalise(entry.get("emailAddress") if isinstance(entry.get("emailAddress"), str) else None)
        if address is None:
            continue
        status = entry.get("status") if isinstance(entry.get("status"), str) else None
        status = status or _SUBTYPE_STATUS.get((bounce_type, subtype))
        diagnostic = entry.get("diagnosticCode") if isinstance(entry.get("diagnosticCode"), str) else None
        row = structured_row(address, "failed", status, diagnostic, temporary=bounce_type != "permanent")
        rows.append({**row, "via": f"ses {bounce_type}/{subtype or '-'}"})
    return rows, bounce_type


def _delivery_rows(delivery: dict[str, Any]) -> list[dict[str, Any]]:
    response = delivery.get("smtpResponse") if isinstance(delivery.get("smtpResponse"), str) else None
    rows = []
    for raw in (delivery.get("recipients") or [])[:MAX_RECIPIENTS]:
        address = normalise(raw if isinstance(raw, str) else None)
        if address is not None:
            rows.append({**structured_row(address, "delivered", None, response), "via": "ses delivery"})
    return rows


def _original(mail: dict[str, Any]) -> dict[str, Any]:
    """The headers of the sent mail that attribute it (From, List-Id, List-Unsubscribe)."""
    wanted = {"from": "from", "list-id": "list_id", "list-unsubscribe": "list_unsubscribe"}
    out: dict[str, Any] = {}
    for header in mail.get("headers") or []:
        if isinstance(header, dict) and isinstance(header.get("name"), str) and isinstance(header.get("value"), str):
            key = wanted.get(header["name"].lower())
            if key and key not in out:
                out[key] = header["value"][:1000]
    return out


def decide_ses(item: Inbound, report: SesReport, ctx: Context, now: datetime) -> Decision:
    """A BOUNCE decision: hard failures suppress, others count, deliveries are a sign of life."""
    del now
    rows, envelope, certain = apply_envelope(item, [dict(r) for r in report.rows], report.original, ctx)
    ref = f"ses:{report.message_id}" if report.message_id else None
    actions = actions_from_rows(rows, ref=ref)
    failed = [r for r in rows if r["action"] == "failed"]
    words = ", ".join(sorted({f"{r['status']} {r['reason']}" for r in failed})[:3])
    reason = (f"amazon ses {report.bounce_type} bounce: {len(failed)} failed ({words})" if report.kind == "bounce"
              else f"amazon ses delivery: {len(rows)} delivered")
    evidence = {"report_type": f"ses-{report.kind}", "recipients": rows, "original": report.original,
                "ses_message_id": report.message_id, "null_sender": null_sender(item), **envelope}
    return Decision(item_id=item.id, kind=Kind.BOUNCE, actions=actions, reason=reason, verified=certain,
                    source=item.source, evidence=evidence)
