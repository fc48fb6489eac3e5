"""Retention periods and settings (issue 23, item 5), and the pure rules of handlers.events.retention."""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

import config
from config.periods import LIMITS, Period, PeriodError, parse_period
from handlers.events.retention import (ContactSeen, Policy, due_contacts, erase_contacts, event_fates, kind_of,
                                       remove_rows)
from handlers.model import Decision, Kind
from handlers.state.plan import CurrentState, plan, plan_retention
from handlers.tokens import Keyring
from tests.conftest import make_settings

NOW = datetime(2032, 3, 31, 12, 0, tzinfo=timezone.utc)


@given(st.sampled_from("dwmy"), st.integers(min_value=1, max_value=73000))
def test_every_well_formed_period_parses_back_to_itself(unit, count):
    if count > LIMITS[unit]:
        with pytest.raises(PeriodError, match="too long"):
            parse_period(f"{count}{unit}")
        return
    period = parse_period(f"{count}{unit}")
    assert period == Period(count, unit) and period.text == f"{count}{unit}"


@given(st.text(max_size=12))
def test_anything_else_is_refused_with_a_clear_message(text):
    ok = text == "keep" or (len(text) >= 2 and text[-1] in "dwmy" and text[:-1].isascii() and text[:-1].isdigit()
                            and not text.startswith("0") and int(text[:-1]) <= LIMITS[text[-1]])
    if ok:
        parse_period(text)
        return
    with pytest.raises(PeriodError) as exc:
        parse_period(text)
    assert "keep" in str(exc.value) or "too long" in str(exc.value)


@pytest.mark.parametrize("text", ["0d", "5", "y", "5Y", " 5y", "5y ", "5 y", "1.5y", "-1d", "5yr", "KEEP", "forever",
                                  "", "+5d", "٥y", "05d"])
def test_near_misses_are_refused(text):
    with pytest.raises(PeriodError):
        parse_period(text)


def test_keep_means_none():
    assert parse_period("keep") is None


@given(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2200, 12, 31),
                    timezones=st.just(timezone.utc)),
       st.integers(min_value=1, max_value=1200))
def test_months_are_calendar_months_clamped_to_the_month_end(now, months):
    before = Period(months, "m").before(now)
    assert before < now and before.time() == now.time()
    assert (now.year * 12 + now.month) - (before.year * 12 + before.month) == months
    assert before.day == min(now.day, calendar.monthrange(before.year, before.month)[1])


def test_days_weeks_and_years():
    assert Period(30, "d").before(NOW) == NOW - timedelta(days=30)
    assert Period(2, "w").before(NOW) == NOW - timedelta(days=14)
    assert Period(5, "y").before(NOW) == datetime(2027, 3, 31, 12, 0, tzinfo=timezone.utc)
    assert Period(1, "m").before(NOW) == datetime(2032, 2, 29, 12, 0, tzinfo=timezone.utc)   # a leap year


def test_defaults_keep_the_notice_and_surprise_nobody():
    r = make_settings().retention
    assert (r.contacts.non_alumni, r.contacts.alumni) == ("5y", "keep")
    assert (r.raw_mail, r.evidence, r.events, r.review_items) == ("6m", "5y", "keep", "2y")
    assert r.enabled and r.run_at == "03:30" and r.alumni_units == ("alumni",) and r.batch == 500


@pytest.mark.parametrize("env, named", [
    ({"UNSUBD_RETENTION__RAW_MAIL": "6 months"}, "retention.raw_mail"),
    ({"UNSUBD_RETENTION__EVIDENCE": "0d"}, "retention.evidence"),
    ({"UNSUBD_RETENTION__EVENTS": "forever"}, "retention.events"),
    ({"UNSUBD_RETENTION__REVIEW_ITEMS": "2Y"}, "retention.review_items"),
    ({"UNSUBD_RETENTION__CONTACTS__NON_ALUMNI": "5"}, "retention.contacts.non_alumni"),
    ({"UNSUBD_RETENTION__CONTACTS__ALUMNI": "1.5y"}, "retention.contacts.alumni"),
    ({"UNSUBD_RETENTION__RUN_AT": "3:30"}, "retention.run_at"),
    ({"UNSUBD_RETENTION__BATCH": "0"}, "retention.batch"),
    ({"UNSUBD_RETENTION__ALUMNI_UNITS": '["old-boys"]'}, "retention.alumni_units"),
])
def test_bad_settings_name_the_setting(env, named):
    with pytest.raises(config.ConfigError) as exc:
        make_settings(**env)
    assert named in str(exc.value)


def test_keep_is_valid_for_every_class():
    env = {f"UNSUBD_RETENTION__{k}": "keep" for k in ("RAW_MAIL", "EVIDENCE", "EVENTS", "REVIEW_ITEMS",
                                                      "CONTACTS__NON_ALUMNI", "CONTACTS__ALUMNI")}
    policy = Policy.from_settings(make_settings(**env).retention)
    for name in ("raw_mail", "evidence", "events", "review_items", "alumni", "non_alumni"):
        assert policy.cutoff(name, NOW) is None and policy.describe(name) == "keep"


def test_a_contacts_kind_and_whether_it_is_due():
    policy = Policy.from_settings(make_settings(UNSUBD_RETENTION__CONTACTS__ALUMNI="10y").retention)
    seen = [ContactSeen(1, NOW - timedelta(days=6 * 365), frozenset()),               # non-alumni, 6 years
            ContactSeen(2, NOW - timedelta(days=6 * 365), frozenset({"alumni"})),     # alumni, 6 years: kept
            ContactSeen(3, NOW - timedelta(days=11 * 365), frozenset({"alumni"})),    # alumni, 11 years
            ContactSeen(4, NOW - timedelta(days=4 * 365), frozenset({"events"})),     # non-alumni, 4 years
            ContactSeen(5, NOW + timedelta(days=3), frozenset())]                     # clock ahead: never due
    assert [kind_of(c, policy) for c in seen[:2]] == ["non_alumni", "alumni"]
    assert due_contacts(reversed(seen), policy, NOW) == [1, 3]


def test_an_event_something_refers_to_is_emptied_never_deleted():
    assert event_fates([("a", False), ("b", True), ("c", False)]) == (["a", "c"], ["b"])


def test_only_a_retention_command_plans_row_changes():
    command = remove_rows("raw_mail", "6m", blank=["item-1", "item-2"])
    assert command.kind is Kind.ADMIN and command.operator == "retention" and command.source == "retention"
    changes = plan(command, CurrentState(), "ev", NOW).retention
    assert [(c.table, c.rule, c.ids) for c in changes] == [("inbound_item", "blank", ("item-1", "item-2"))]
    # The same evidence on anything else (an upstream item could carry any JSON) plans nothing.
    smuggled = Decision(item_id="x", kind=Kind.BOUNCE, source="retention", verified=True, reason="x",
                        evidence=command.evidence)
    assert plan_retention(smuggled) == []
    with pytest.raises(ValueError):
        remove_rows("raw_mail", "6m", delete=["item-1"])
    with pytest.raises(ValueError):
        remove_rows("contacts", "5y", delete=[1])


def test_contacts_are_erased_with_tombstones_and_named_nowhere():
    ring = Keyring({"k1": b"k" * 32}, "k1")
    command = erase_contacts(["anna@example.se", "anna@work.example"], 1, "non-alumni 5y", ring)
    assert [a.reason for a in command.actions] == ["retention", "retention"]
    assert all(a.ref and a.ref.startswith("k1:") for a in command.actions)
    assert "anna" not in command.reason and "anna" not in str(command.evidence)
    assert command.item_id != erase_contacts(["anna@example.se"], 1, "5y", ring).item_id
    updates = plan(command, CurrentState(), "ev", NOW).updates
    assert updates == []                   # no contact known here: tombstones only, nothing to publish
