"""Whether a message's sender is proven: Authentication-Results from our own MTA (RFC 8601).

Only headers whose authserv-id is one of ours count; anyone can write such a header,
and RFC 8601 section 5 says a receiver must ignore those it did not add. A sender is
verified when our MTA reports dmarc=pass for the From domain, or dkim=pass with a
signing domain aligned with it, or spf=pass with an aligned MAIL FROM domain
(relaxed alignment, RFC 7489 section 3.1: the same domain or one a subdomain of the other).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

MAX_HEADERS = 20
MAX_VALUE = 4000


@dataclass(frozen=True)
class Verdict:
    verified: bool
    why: str


def _strip_comments(text: str) -> str:
    """Remove (nested) RFC 5322 comments in one pass; linear in the length."""
    out, depth, escaped = [], 0, False
    for ch in text:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(ch)
            continue
        if ch == "\\":
            escaped = True
            if depth == 0:
                out.append(ch)
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def _aligned(domain: str | None, sender_domain: str) -> bool:
    if not domain:
        return False
    d = domain.strip().strip(".").lower().rsplit("@", 1)[-1]
    return d == sender_domain or d.endswith("." + sender_domain) or sender_domain.endswith("." + d)


def _passes(values: Iterable[str], ours: set[str]) -> Iterator[tuple[str, str, dict[str, str]]]:
    """(authserv-id, method, properties) of each `pass` result in headers of our own MTA."""
    for raw in list(values)[:MAX_HEADERS]:
        parts = [p.strip() for p in _strip_comments(str(raw)[:MAX_VALUE]).split(";")]
        if not parts or not parts[0]:
            continue
        authserv = parts[0].split()[0].lower()
        if authserv not in ours:
            continue
        for result in parts[1:]:
            tokens = result.split()
            if not tokens or "=" not in tokens[0]:
                continue
            method, _, outcome = tokens[0].lower().partition("=")
            props = dict(t.split("=", 1) for t in tokens[1:] if "=" in t)
            props = {k.lower(): v.strip('"') for k, v in props.items()}
            if outcome == "pass":
                yield authserv, method, props


def verify_sender(values: Iterable[str], sender: str | None, trusted: Iterable[str]) -> Verdict:
    """Read Authentication-Results values; never raises.

    `values` are raw header values; `sender` the normalised From address. With no
    trusted authserv-ids configured, or no sender, nothing is verified.
    """
    ours = {t.strip().lower() for t in trusted if t.strip()}
    if not ours or not sender or "@" not in sender:
        return Verdict(False, "no trusted Authentication-Results")
    sender_domain = sender.rsplit("@", 1)[1].lower()
    for authserv, method, props in _passes(values, ours):
        if method == "dmarc" and _aligned(props.get("header.from"), sender_domain):
            return Verdict(True, f"dmarc=pass by {authserv}")
        if method == "dkim" and _aligned(props.get("header.d") or props.get("header.i"), sender_domain):
            return Verdict(True, f"dkim=pass aligned, by {authserv}")
        if method == "spf" and _aligned(props.get("smtp.mailfrom"), sender_domain):
            return Verdict(True, f"spf=pass aligned, by {authserv}")
    return Verdict(False, "no passing, aligned result from our own MTA")


def passing_domains(values: Iterable[str], trusted: Iterable[str]) -> list[tuple[str, str, str]]:
    """(method, domain, authserv-id) of each dkim=pass (its `header.d`, else the domain of
    `header.i`) and dmarc=pass (its `header.from`) that our own MTA reports (RFC 8601
    section 2.7.1 and RFC 7489 section 11.2). Never raises.

    Odd input: headers of other authserv-ids, results other than `pass`, and a pass
    without a domain give nothing; with no trusted authserv-ids the list is empty.
    Domains are lowercased, without a trailing dot.
    """
    ours = {t.strip().lower() for t in trusted if t.strip()}
    found: list[tuple[str, str, str]] = []
    if not ours:
        return found
    for authserv, method, props in _passes(values, ours):
        value = (props.get("header.d") or props.get("header.i")) if method == "dkim" else (
            props.get("header.from") if method == "dmarc" else None)
        domain = (value or "").strip().rsplit("@", 1)[-1].strip().rstrip(".").lower()
        if domain and (method, domain, authserv) not in found:
            found.append((method, domain, authserv))
    return found
