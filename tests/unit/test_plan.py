"""plan(): the precedence rule, idempotence, suppression, and per-contact sequences."""

from datetime import datetime, timedelta, timezone

import pytest

from handlers.model import ALL, Action, ActionType, Decision, Kind, State
from handlers.state.plan import (BouncePolicy, ContactState, CurrentState, PreferenceRow, SoftBounceRow, effective_state,
                           plan)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
U, S = State.UNSUBSCRIBED, State.SUBSCRIBED


def rows(*specs):
    """specs: (unit, channel, state, minutes after T0)."""
    return {(u, c): PreferenceRow(u, c, st, T0 + timedelta(minutes=m)) for u, c, st, m in specs}


@pytest.mark.parametrize("prefs, unit, channel, expected", [
    ((), "alumni", "email", S),                                                    # nothing: subscribed
    ((("alumni", "email", U, 0),), "alumni", "email", U),
    ((("alumni", "email", U, 0),), "alumni", "sms", S),                            # other channel untouched
    ((("alumni", "email", U, 0),), "events", "email", S),                          # other unit untouched
    ((("*", "*", U, 0),), "events", "sms", U),                                     # all of everything
    ((("*", "email", U, 0),), "events", "email", U),
    ((("alumni", "*", U, 0),), "alumni", "letter", U),
    ((("*", "*", U, 0), ("alumni", "email", S, 5)), "alumni", "email", S),         # opted back in later
    ((("*", "*", U, 5), ("alumni", "email", S, 0)), "alumni", "email", U),         # newer global opt-out wins
    ((("alumni", "*", S, 9), ("*", "email", U, 3)), "alumni", "email", S),
    ((("alumni", "*", S, 3), ("*", "email", U, 9)), "alumni", "email", U),
    ((("alumni", "email", S, 0), ("*", "*", U, 0)), "alumni", "email", U),         # tie: broader, then opt-out
    ((("alumni", "email", U, 0),), "*", "email", S),                               # a narrow row says nothing of all units
    ((("*", "email", U, 0),), "*", "*", S),
])
def test_precedence_most_recent_matching_row_wins(prefs, unit, channel, expected):
    assert effective_state(rows(*prefs), unit, channel) is expected


def decision(*actions, kind=Kind.OPTOUT, review=False, **kw):
    return Decision(item_id="item-1", kind=kind, actions=tuple(actions), reason="test", review=review, **kw)


def unsub(address="a@example.se", units=ALL, channels=("email",)):
    return Action(ActionType.UNSUBSCRIBE, address, units=units, channels=channels)


def test_unknown_address_gets_a_contact_and_numbered_updates():
    p = plan(decision(unsub(units=("alumni", "events"))), CurrentState(), "ev1", T0)
    assert p.new_contacts == ["a@example.se"]
    assert [(c.unit, c.channel, c.state) for c in p.preferences] == [("alumni", "email", U), ("events", "email", U)]
    assert [u.sequence for u in p.updates] == [1, 2]
    assert [u.routing_key for u in p.updates] == ["preference.alumni.email", "preference.events.email"]
    assert p.updates[0].payload["state"] == "unsubscribed" and p.updates[0].payload["event_id"] == "ev1"


def test_sequences_continue_from_the_contact_and_the_input_state_is_not_mutated():
    state = CurrentState(contacts={"a@example.se": ContactState(contact_id=7, seq=41)})
    p = plan(decision(unsub(units=ALL, channels=ALL)), state, "ev", T0)
    assert [u.sequence for u in p.updates] == [42]
    assert p.updates[0].routing_key == "preference.all.all" and p.new_contacts == []
    assert state.contacts["a@example.se"].seq == 41 and state.contacts["a@example.se"].preferences == {}


def test_an_opt_out_already_in_effect_plans_nothing():
    state = CurrentState(contacts={"a@example.se": ContactState(7, 3, rows(("*", "*", U, 0)))})
    p = plan(decision(unsub(units=("alumni",))), state, "ev", T0 + timedelta(hours=1))
    assert p.empty and p.updates == []


def test_opting_back_in_writes_a_newer_row():
    state = CurrentState(contacts={"a@example.se": ContactState(7, 3, rows(("*", "*", U, 0)))})
    act = Action(ActionType.SUBSCRIBE, "a@example.se", units=("alumni",), channels=("email",))
    p = plan(decision(act, kind=Kind.CLICK, source="page", verified=True), state, "ev", T0 + timedelta(hours=1))
    assert [(c.unit, c.channel, c.state) for c in p.preferences] == [("alumni", "email", S)]
    assert p.updates[0].sequence == 4


@pytest.mark.parametrize("kind, source, verified, operator", [
    (Kind.CLICK, "page", False, None),          # a page save without its signed token
    (Kind.CLICK, "one_click", True, None),      # one-click only ever unsubscribes
    (Kind.CLICK, "queue", True, None),          # a click from the web tier likewise
    (Kind.REPLY, "smtp", False, None),          # an emailed request from an unproven sender
    (Kind.IMPORT, "import", True, "ops"),       # an import is membership, never consent
    (Kind.BOUNCE, "smtp", True, None),
    (Kind.COMPLAINT, "smtp", True, None),
    (Kind.ADMIN, "admin", True, None),          # an operator's action must name the operator
])
def test_only_proof_turns_an_opt_out_back_into_subscribed(kind, source, verified, operator):
    state = CurrentState(contacts={"a@example.se": ContactState(7, 3, rows(("*", "*", U, 0)))})
    act = Action(ActionType.SUBSCRIBE, "a@example.se", units=("alumni",), channels=("email",))
    p = plan(decision(act, kind=kind, source=source, verified=verified, operator=operator), state, "ev",
             T0 + timedelta(hours=1))
    assert p.preferences == [] and p.updates == []
    assert len(p.dropped) == 1 and "a@example.se" in p.dropped[0]


@pytest.mark.parametrize("kind, source, verified, operator", [
    (Kind.CLICK, "page", True, None),
    (Kind.REPLY, "smtp", True, None),
    (Kind.ADMIN, "admin", True, "anna.operator"),
])
def test_proven_opt_ins_are_written(kind, source, verified, operator):
    state = CurrentState(contacts={"a@example.se": ContactState(7, 3, rows(("*", "*", U, 0)))})
    act = Action(ActionType.SUBSCRIBE, "a@example.se", units=("alumni",), channels=("email",))
    p = plan(decision(act, kind=kind, source=source, verified=verified, operator=operator), state, "ev",
             T0 + timedelta(hours=1))
    assert [(c.unit, c.channel, c.state) for c in p.preferences] == [("alumni", "email", S)] and not p.dropped


def test_subscribing_when_already_subscribed_plans_nothing():
    act = Action(ActionType.SUBSCRIBE, "a@example.se", units=("alumni",), channels=("email",))
    assert plan(decision(act), CurrentState(), "ev", T0).empty


def test_hard_bounce_suppresses_once():
    act = Action(ActionType.SUPPRESS, "a@example.se", status="5.1.1", reason="user_unknown", hard=True)
    p = plan(decision(act, act, kind=Kind.BOUNCE), CurrentState(), "ev", T0)
    assert [(s.address, s.reason) for s in p.suppressions] == [("a@example.se", "hard_bounce")]
    assert [u.routing_key for u in p.updates] == ["suppression.hard_bounce"]
    assert p.updates[0].payload["source"] == "bounce" and p.updates[0].payload["unit"] is None
    again = plan(decision(act, kind=Kind.BOUNCE), CurrentState(suppressed={"a@example.se": "hard_bounce"}), "e2", T0)
    assert again.empty


def soft(ref="<m1@mail.example.org>", address="a@example.se"):
    return Action(ActionType.SOFT_BOUNCE, address, status="4.2.2", reason="mailbox_full", hard=False, ref=ref)


def test_one_soft_bounce_is_counted_and_changes_nothing_else():
    p = plan(decision(soft(), kind=Kind.BOUNCE), CurrentState(), "ev", T0)
    assert [(c.address, c.ref) for c in p.soft_bounces] == [("a@example.se", "<m1@mail.example.org>")]
    assert p.suppressions == [] and p.updates == [] and p.new_contacts == []


def test_the_threshold_suppresses_with_its_own_reason():
    state = CurrentState(soft_bounces={"a@example.se": [SoftBounceRow("<m1@x>", T0), SoftBounceRow("<m2@x>", T0)]})
    p = plan(decision(soft("<m3@x>"), kind=Kind.BOUNCE), state, "ev", T0, BouncePolicy(threshold=3))
    assert [(s.address, s.reason) for s in p.suppressions] == [("a@example.se", "soft_bounce_threshold")]
    assert [u.routing_key for u in p.updates] == ["suppression.soft_bounce_threshold"]
    below = plan(decision(soft("<m3@x>"), kind=Kind.BOUNCE), state, "ev", T0, BouncePolicy(threshold=4))
    assert below.suppressions == [] and len(below.soft_bounces) == 1


def test_duplicate_reports_about_one_message_count_once():
    state = CurrentState(soft_bounces={"a@example.se": [SoftBounceRow("<m1@x>", T0), SoftBounceRow("<m2@x>", T0)]})
    p = plan(decision(soft("<m2@x>"), kind=Kind.BOUNCE), state, "ev", T0, BouncePolicy(threshold=3))
    assert p.empty
    twice = plan(decision(soft("<m9@x>"), soft("<m9@x>"), kind=Kind.BOUNCE), CurrentState(), "ev", T0,
                 BouncePolicy(threshold=2))
    assert len(twice.soft_bounces) == 1 and twice.suppressions == []


def test_a_soft_bounce_without_a_known_message_counts_by_event():
    p = plan(decision(soft(ref=None), kind=Kind.BOUNCE), CurrentState(), "ev-7", T0)
    assert p.soft_bounces[0].ref == "event:ev-7"


def test_a_suppressed_address_collects_no_more_soft_bounces():
    p = plan(decision(soft(), kind=Kind.BOUNCE), CurrentState(suppressed={"a@example.se": "hard_bounce"}), "e", T0)
    assert p.empty


def test_a_consent_action_from_the_address_clears_its_count():
    state = CurrentState(soft_bounces={"a@example.se": [SoftBounceRow("<m1@x>", T0)]})
    p = plan(decision(unsub(units=("alumni",))), state, "ev", T0)
    assert p.cleared == ["a@example.se"]


def test_an_operator_release_lifts_the_suppression_and_clears_the_count():
    state = CurrentState(contacts={"a@example.se": ContactState(7, 4)}, suppressed={"a@example.se": "hard_bounce"},
                         soft_bounces={"a@example.se": [SoftBounceRow("<m1@x>", T0)]})
    act = Action(ActionType.RELEASE, "a@example.se", reason="mailbox fixed, confirmed by phone")
    p = plan(Decision(item_id="admin-1", kind=Kind.ADMIN, actions=(act,), reason="t", source="admin"), state, "ev", T0)
    assert p.releases == ["a@example.se"] and p.cleared == ["a@example.se"]
    (u,) = p.updates
    assert u.routing_key == "suppression.released" and u.sequence == 5
    assert u.payload["state"] == "released" and u.payload["source"] == "admin"
    nothing = plan(Decision(item_id="admin-2", kind=Kind.ADMIN, actions=(act,), reason="t"), CurrentState(), "e", T0)
    assert nothing.releases == [] and nothing.updates == []


def test_a_decision_under_review_changes_nothing():
    assert plan(decision(unsub(), review=True), CurrentState(), "ev", T0).empty


def test_complaint_suppression_has_its_own_reason():
    act = Action(ActionType.SUPPRESS, "a@example.se")
    p = plan(decision(act, kind=Kind.COMPLAINT), CurrentState(), "ev", T0)
    assert p.suppressions[0].reason == "complaint"
    assert p.updates[0].routing_key == "suppression.complaint"


def test_a_broad_opt_in_after_a_narrow_opt_out_is_written():
    """Found by tests/integration/test_ledger_machine.py: an opt-in for (*, *) after an opt-out of
    (alumni, *) was taken as already in effect, because no (*, *) row said otherwise."""
    state = CurrentState(contacts={"a@example.se": ContactState(7, 3, rows(("alumni", "*", U, 0)))})
    act = Action(ActionType.SUBSCRIBE, "a@example.se", units=ALL, channels=ALL)
    p = plan(decision(act, kind=Kind.ADMIN, operator="eva", verified=True), state, "ev", T0 + timedelta(hours=1))
    assert [(c.unit, c.channel, c.state) for c in p.preferences] == [("*", "*", S)]
