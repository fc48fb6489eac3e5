"""The due date of a rights request: one calendar month after receipt (GDPR Art. 12(3)),
and the rights requests read from replies in the seven languages (issue 23, item 6)."""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings, strategies as st

from handlers.replies.rights import RIGHTS_TYPES, item_reason, one_month_after, rights_type
from handlers.state.plan import review_items
from tests.support.reply_samples import NOW, decide, mail

UTC = timezone.utc


@pytest.mark.parametrize("received,due", [
    ("2026-01-31T10:00", "2026-02-28T10:00"),     # no 31 February: the month's last day
    ("2028-01-31T10:00", "2028-02-29T10:00"),     # a leap year
    ("2026-01-30T23:59", "2026-02-28T23:59"),
    ("2026-02-28T08:00", "2026-03-28T08:00"),     # the same day, not the month's end
    ("2026-03-31T00:00", "2026-04-30T00:00"),
    ("2026-04-30T12:00", "2026-05-30T12:00"),
    ("2026-12-31T18:30", "2027-01-31T18:30"),     # into the next year
    ("2026-12-15T09:00", "2027-01-15T09:00"),
])
def test_one_calendar_month(received: str, due: str) -> None:
    start = datetime.fromisoformat(received).replace(tzinfo=UTC)
    assert one_month_after(start) == datetime.fromisoformat(due).replace(tzinfo=UTC)


@settings(max_examples=2000)
@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9998, 11, 30), timezones=st.just(UTC)))
def test_due_date_properties(received: datetime) -> None:
    due = one_month_after(received)
    assert due > received                                       # always after receipt
    assert due - received <= timedelta(days=31)                 # never more than 31 days
    assert due - received >= timedelta(days=28)                 # and a month, not a few days
    assert (due.year * 12 + due.month) - (received.year * 12 + received.month) == 1   # the next month
    assert due.time() == received.time() and due.tzinfo == received.tzinfo
    if received.day <= calendar.monthrange(due.year, due.month)[1]:
        assert due.day == received.day                          # same day of the month when it exists
    else:
        assert due.day == calendar.monthrange(due.year, due.month)[1]   # else the month's last day


def test_not_thirty_days() -> None:
    # 30 days after 1 March is 31 March; one month after it is 1 April.
    assert one_month_after(datetime(2026, 3, 1, tzinfo=UTC)).date().isoformat() == "2026-04-01"
    # 30 days after 31 January is 2 March; one month is 28 February.
    assert one_month_after(datetime(2026, 1, 31, tzinfo=UTC)).date().isoformat() == "2026-02-28"


def test_item_reason_names_its_type() -> None:
    for kind in RIGHTS_TYPES:
        assert rights_type(item_reason(kind, "2026-02-28", "erasure request by email")) == kind
    assert rights_type("opt-out needs review: low confidence") is None
    assert rights_type(None) is None


# --- from the reply's text to its rights requests ---------------------------------------

RECTIFICATION = [
    ("sv", "Hej! Min adress har ändrats till anna@nytt.se."),
    ("sv", "Kan ni rätta mitt efternamn? Det är felstavat."),
    ("sv", "Mitt namn är felstavat i era utskick."),
    ("nb", "Kan dere rette navnet mitt?"),
    ("nb", "Adressen min er endret, vennligst oppdater opplysningene mine."),
    ("nn", "Namnet mitt er feil i registeret dykkar."),
    ("nn", "Kan de endre adressa mi?"),
    ("da", "Ret venligst mit navn, det er stavet forkert."),
    ("da", "Min adresse er ændret til anna@ny.dk."),
    ("fi", "Korjatkaa nimeni, se on kirjoitettu väärin."),
    ("fi", "Osoitteeni on muuttunut."),
    ("de", "Bitte korrigieren Sie meinen Nachnamen."),
    ("de", "Mein Name ist falsch geschrieben."),
    ("de", "Meine Adresse hat sich geändert."),
    ("en", "Please correct my name, it is misspelt."),
    ("en", "My address has changed to anna@new.example."),
    ("en", "Please correct the spelling of my surname."),
    ("en", "Could you update my postal address please?"),
]


@pytest.mark.parametrize("lang,body", RECTIFICATION, ids=[f"{r[0]}-{i}" for i, r in enumerate(RECTIFICATION)])
def test_rectification_requests_per_language(lang: str, body: str) -> None:
    decision = decide(mail(body))
    rights = decision.evidence["rights_request"]
    assert rights["types"] == ["rectification"] and rights["type"] == "rectification"
    assert rights["deadline"] == "2026-04-01"           # NOW is 2026-03-01
    assert decision.actions == ()                       # nothing acted on: a person corrects it
    (item,) = review_items(decision)[-1:]
    assert item.kind == "rights_request" and rights_type(item.reason) == "rectification"


@pytest.mark.parametrize("body", [
    "Thanks, see you at the event! Has the address of the venue changed?",
    "Tack för inbjudan, vilken adress har lokalen?",
    "Please unsubscribe me from the newsletter.",
    "Wie ist die Adresse des Veranstaltungsortes?",
    "Hvad er adressen til arrangementet?",
    "Mikä on tapahtuman osoite?",
    "Hva heter foredragsholderen? Navnet mangler i programmet.",
])
def test_no_rights_request_in_ordinary_mail(body: str) -> None:
    assert "rights_request" not in decide(mail(body)).evidence


def test_an_erasure_request_still_opts_out_of_everything() -> None:
    decision = decide(mail("Radera mina uppgifter, tack."))
    assert decision.kind.value == "optout" and not decision.review
    (action,) = decision.actions
    assert action.units == "all" and action.channels == "all"
    assert decision.evidence["rights_request"]["types"] == ["erasure"]


def test_access_and_erasure_in_one_reply_open_one_item_each_access_first() -> None:
    decision = decide(mail("What data do you hold about me? Please also delete my data afterwards."))
    items = [i for i in review_items(decision) if i.kind == "rights_request"]
    assert [rights_type(i.reason) for i in items] == ["access", "erasure"]
    assert {i.due_at for i in items} == {datetime(2026, 4, 1, tzinfo=UTC)}
    assert all(i.address == "anna.berg@example.se" for i in items)


def test_objection_opens_a_rights_item_and_still_opts_out() -> None:
    decision = decide(mail("Jeg frabeder mig al kontakt fra jeres side."))
    assert decision.evidence.get("objection") is True
    assert decision.evidence["rights_request"]["types"] == ["objection"]
    assert decision.kind.value == "optout" and decision.actions


def test_due_date_follows_the_time_the_reader_is_given() -> None:
    from handlers import Inbound, classify
    from handlers.context import Context
    from tests.support.reply_samples import SETTINGS

    received = datetime(2026, 1, 31, 15, 0, tzinfo=UTC)
    raw = mail("Radera mina uppgifter, tack.")
    decision = classify(Inbound.from_smtp(raw, "x@example.se", ("reply@mail.example.org",), received),
                        Context.from_settings(SETTINGS), received)
    assert decision.evidence["rights_request"]["deadline"] == "2026-02-28"
    assert NOW != received
