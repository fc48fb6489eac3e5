"""Trust: Authentication-Results from our own MTA verify a sender; the unverified opt-out guard."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from handlers.context import Context
from handlers.state.apply import apply
from handlers.classify import classify
from handlers.model import Action, ActionType, Decision, Inbound, Kind
from handlers.replies.trust import verify_sender
from worker.store.models import Preference, ReviewItem
from tests.conftest import make_settings

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
OURS = ["mx1.mail.example.org"]


@pytest.mark.parametrize("value, verified", [
    ("mx1.mail.example.org; dmarc=pass (p=none) header.from=example.se", True),
    ("mx1.mail.example.org 1; dkim=pass header.d=example.se header.s=s1; spf=fail", True),
    ("mx1.mail.example.org; dkim=pass header.d=mail.example.se", True),               # aligned subdomain
    ("mx1.mail.example.org; spf=pass smtp.mailfrom=anna@example.se", True),
    ("mx1.mail.example.org; dkim=pass header.d=evil.example", False),                 # not aligned
    ("mx1.mail.example.org; dmarc=fail header.from=example.se", False),
    ("mx.evil.example; dmarc=pass header.from=example.se", False),                    # not our MTA: ignored
    ("MX1.MAIL.EXAMPLE.ORG; (comment; dmarc=pass) dmarc=pass header.from=example.se", True),
    ("mx1.mail.example.org; dmarc=pass (unclosed header.from=example.se", False),
    ("", False),
    ("(" * 5000 + "mx1.mail.example.org; dmarc=pass header.from=example.se", False),
])
def test_only_our_mtas_passing_aligned_results_verify(value, verified):
    assert verify_sender([value], "anna@example.se", OURS).verified is verified


def test_without_configured_authserv_ids_nothing_verifies():
    assert not verify_sender(["mx1.mail.example.org; dmarc=pass header.from=example.se"], "anna@example.se", []).verified


def optout_mail(auth: str | None) -> Inbound:
    lines = ["From: Anna Berg <anna@example.se>", "To: reply@mail.example.org", "Subject: Avregistrera mig",
             "Message-ID: <t1@example.se>", "Date: Mon, 02 Mar 2026 10:00:00 +0100"]
    if auth:
        lines.insert(0, f"Authentication-Results: {auth}")
    raw = ("\r\n".join(lines) + "\r\n\r\nAvregistrera mig från era utskick, tack.\r\n").encode()
    return Inbound.from_smtp(raw, "anna@example.se", ["reply@mail.example.org"], T0)


def test_an_emailed_opt_out_is_verified_by_our_mta_and_honoured_either_way():
    settings = make_settings(UNSUBD_TRUSTED_AUTHSERV_IDS='["mx1.mail.example.org"]')
    proven = classify(optout_mail("mx1.mail.example.org; dmarc=pass header.from=example.se"), Context.from_settings(settings), T0)
    assert proven.kind is Kind.OPTOUT and proven.actions and proven.verified
    forged = classify(optout_mail("mx1.evil.example; dmarc=pass header.from=example.se"), Context.from_settings(settings), T0)
    assert forged.kind is Kind.OPTOUT and forged.actions and not forged.verified     # still honoured


def optout(i: int, verified: bool = False) -> Decision:
    act = Action(ActionType.UNSUBSCRIBE, f"p{i}@example.se", units="all", channels=("email",))
    return Decision(item_id=f"o{i}", kind=Kind.OPTOUT, actions=(act,), reason="avregistrera", verified=verified,
                    evidence={"from": f"p{i}@example.se"})


async def test_beyond_the_rate_unverified_opt_outs_are_held_for_review(database):
    for i in range(3):
        await apply(optout(i), database.unit_of_work(), T0 + timedelta(minutes=i), unverified_per_hour=3)
    held = await apply(optout(3), database.unit_of_work(), T0 + timedelta(minutes=4), unverified_per_hour=3)
    verified = await apply(optout(4, verified=True), database.unit_of_work(), T0 + timedelta(minutes=5),
                           unverified_per_hour=3)
    later = await apply(optout(5), database.unit_of_work(), T0 + timedelta(hours=2), unverified_per_hour=3)
    assert held.updates == 0 and verified.updates == 1 and later.updates == 1
    async with database.sessions() as s:
        addresses = set((await s.scalars(select(ReviewItem.address))).all())
        prefs = await s.scalar(select(func.count()).select_from(Preference))
    assert addresses == {"p3@example.se"} and prefs == 5
