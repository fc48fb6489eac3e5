"""A signed token in the reply address verifies an emailed request (issue 4, item 6).

Messages are written here; tokens are made with handlers.tokens.sign.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from handlers.context import Context
from handlers.state.apply import apply
from handlers.classify import classify
from handlers.model import ALL, ActionType, Inbound, Kind
from handlers.tokens import keyring_from_settings, sign
from worker.ops.contacts import import_rows, parse_csv
from worker.store.models import Address, Outbox
from tests.conftest import make_settings
from tests.support.reply_samples import NOW, mail

KEYS = json.dumps({"k1": "a-reply-token-test-key-that-is-long-enough-42"})


@pytest.fixture(scope="module")
def settings():
    return make_settings(UNSUBD_TOKENS__KEYS=KEYS)


def token(settings, contact_id: int = 7, unit: str = "alumni", channel: str = "email") -> str:
    return sign(contact_id, unit, channel, keyring_from_settings(settings))


def tampered(tok: str) -> str:
    return tok[:-3] + ("A" if tok[-3] != "A" else "B") + tok[-2:]


def reply(settings, body: str, rcpt: str, subject: str = "Re: Alumninytt",
          sender: str = "Anna Berg <anna.berg@example.se>", extra: str = ""):
    raw = mail(body, subject=subject, sender=sender, to=rcpt, extra=extra)
    return classify(Inbound.from_smtp(raw, "anna.berg@example.se", [rcpt], NOW), Context.from_settings(settings), NOW)


def test_valid_token_in_the_reply_address_verifies_the_opt_out_for_its_contact(settings):
    tok = token(settings, 7, "alumni", "email")
    d = reply(settings, "Inga fler sms, tack.", f"reply+{tok}@mail.example.org")
    assert d.kind is Kind.OPTOUT and d.verified and not d.review
    (a,) = d.actions
    # the token's contact, found at apply time; the scope is the text's (sms), not the token's
    assert (a.type, a.address, a.contact_id, a.units, a.channels) == (ActionType.UNSUBSCRIBE, "", 7, ALL, ("sms",))
    assert d.evidence["reply_token"] == {"valid": True, "contact_id": 7, "unit": "alumni", "channel": "email",
                                         "key_id": "k1"}
    assert tok not in json.dumps(d.evidence)          # a bearer credential is not kept


def test_a_bare_request_with_a_unit_token_still_covers_every_unit(settings):
    d = reply(settings, "Avregistrera mig, tack.", f"reply+{token(settings, 7, 'research-news')}@mail.example.org")
    (a,) = d.actions
    assert d.verified and a.contact_id == 7 and a.units == ALL and a.channels == ("email",)


def test_a_units_own_reply_address_with_a_token_verifies_too(settings):
    d = reply(settings, "Meld meg av nyhetsbrevet.", f"alumni+{token(settings, 12)}@mail.example.org")
    assert d.kind is Kind.OPTOUT and d.verified and [a.contact_id for a in d.actions] == [12]
    assert d.evidence["unit_mailbox"] == "alumni"


def test_another_from_address_acts_on_the_token_contact_not_on_from(settings):
    d = reply(settings, "Please unsubscribe me from your newsletter.", f"reply+{token(settings, 7)}@mail.example.org",
              sender="Forwarded Box <anna.private@example.no>")
    assert d.verified and [(a.address, a.contact_id) for a in d.actions] == [("", 7)]
    assert d.evidence["from"] == "anna.private@example.no"


def test_a_tampered_token_is_unverified_and_acts_on_from_as_before(settings):
    d = reply(settings, "Avregistrera mig, tack.", f"reply+{tampered(token(settings))}@mail.example.org")
    assert d.kind is Kind.OPTOUT and not d.verified and not d.review
    assert [(a.address, a.contact_id) for a in d.actions] == [("anna.berg@example.se", None)]
    assert d.evidence["reply_token"]["valid"] is False


def test_without_a_token_nothing_changes(settings):
    d = reply(settings, "Avregistrera mig, tack.", "reply@mail.example.org")
    assert not d.verified and [(a.address, a.contact_id) for a in d.actions] == [("anna.berg@example.se", None)]
    assert "reply_token" not in d.evidence


def test_a_token_does_not_make_an_unclear_request_clear(settings):
    d = reply(settings, "I am writing on behalf of my manager: please remove him from your lists.",
              f"reply+{token(settings)}@mail.example.org")
    assert d.review and not any(a.type is ActionType.SUBSCRIBE for a in d.actions)


OPTIN_SV = 'Jag råkade klicka på "avregistrera" – kan ni lägga tillbaka mig?'


def test_a_token_honours_an_opt_in_by_email_for_its_contact_and_unit(settings):
    d = reply(settings, OPTIN_SV, f"reply+{token(settings, 7, 'alumni', 'email')}@mail.example.org")
    assert d.kind is Kind.REPLY and d.verified and not d.review
    (a,) = d.actions
    assert (a.type, a.address, a.contact_id, a.units, a.channels) == (
        ActionType.SUBSCRIBE, "", 7, ("alumni",), ("email",))
    assert "opt-in" in d.reason


def test_an_opt_in_naming_a_unit_takes_that_unit(settings):
    d = reply(settings, "Please add me back to Research News.",
              f"reply+{token(settings, 7, 'alumni')}@mail.example.org")
    (a,) = d.actions
    assert a.type is ActionType.SUBSCRIBE and a.units == ("research-news",) and d.verified


@pytest.mark.parametrize("rcpt", ["reply@mail.example.org", "TAMPERED"])
def test_an_opt_in_without_a_valid_token_stays_for_review(settings, rcpt):
    address = f"reply+{tampered(token(settings))}@mail.example.org" if rcpt == "TAMPERED" else rcpt
    d = reply(settings, OPTIN_SV, address)
    assert d.kind is Kind.REPLY and d.review and d.actions == () and not d.verified


def test_a_negated_opt_in_is_never_acted_on(settings):
    d = reply(settings, "Please do not add me back, I left on purpose.", f"reply+{token(settings)}@mail.example.org")
    assert not any(a.type is ActionType.SUBSCRIBE for a in d.actions)


def test_our_mtas_authentication_results_also_allow_an_opt_in_for_the_sender():
    settings = make_settings(UNSUBD_TRUSTED_AUTHSERV_IDS='["mx1.mail.example.org"]')
    auth = "Authentication-Results: mx1.mail.example.org; dmarc=pass header.from=example.se\n"
    d = reply(settings, "Please add me back to Research News.", "reply@mail.example.org", extra=auth)
    assert d.verified and [(a.type, a.address, a.units) for a in d.actions] == [
        (ActionType.SUBSCRIBE, "anna.berg@example.se", ("research-news",))]
    forged = reply(settings, "Please add me back to Research News.", "reply@mail.example.org",
                   extra=auth.replace("mx1.mail.example.org", "mx.evil.example"))
    assert forged.review and forged.actions == ()


async def test_applied_it_changes_the_token_contacts_address(database):
    settings = make_settings(UNSUBD_TOKENS__KEYS=KEYS)
    await import_rows(database, parse_csv("address\nolle@example.se\n", settings), NOW, "t.csv")
    async with database.sessions() as s:
        contact_id = (await s.scalars(select(Address.contact_id))).one()
    d = reply(settings, "Avregistrera mig.", f"reply+{token(settings, contact_id)}@mail.example.org",
              sender="someone.else@example.no")
    applied = await apply(d, database.unit_of_work(), NOW)
    assert applied.updates == 1
    async with database.sessions() as s:
        payload = (await s.scalars(select(Outbox.payload))).one()
    assert (payload["address"], payload["verified"], payload["state"]) == ("olle@example.se", True, "unsubscribed")
