"""DKIM public keys from DNS, for the sandboxed classifier.

handlers.complaints.arf verifies a feedback report's DKIM signature but does no DNS itself: it
asks a lookup function for the key record. This module is that function for `unsubd
serve`. It runs inside the parser processes (worker.pipeline.pool), and only for a report
signed in the name of a configured feedback-loop source (`complaints.fbl_sources`), so
ordinary mail never causes a lookup. `unsubd classify` runs offline, without it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

TIMEOUT = 3.0      # seconds for one TXT lookup; the parser's wall-clock limit is the backstop


def txt_record(name: str) -> bytes | None:
    """The TXT record at `name` ("selector._domainkey.domain."), or None when there is
    none or DNS fails (the report then goes to review)."""
    try:
        from dkim.dnsplug import get_txt

        answer = get_txt(name.encode("ascii", "replace"), timeout=TIMEOUT)
    except Exception:  # noqa: BLE001 - no key: the signature is not verified
        return None
    return answer or None


def classify_with_dns(item: Any, ctx: Any, now: datetime) -> Any:
    """handlers.classify.classify with DKIM keys looked up in DNS (a ClassifyPool classify_fn)."""
    from handlers.classify import classify     # in the parser process only

    return classify(item, ctx, now, dkim_lookup=txt_record)
