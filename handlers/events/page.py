"""One-click (RFC 8058) and the preference page: what a person sees, and what a save means.

The page shows one box per (unit, channel) and a "Stop all contact" box. A save makes
the effective state equal what the form says (handlers.state.plan.effective_state), so
what a person sees after saving is what they ticked:

* "Stop all" ticked: (*, *) unsubscribed; the boxes say nothing then.
* "Stop all" shown ticked and now unticked: the stop is undone, (*, *) subscribed,
  and every box left unticked is unsubscribed in the same decision (a tie between
  rows of one moment goes to "unsubscribed": handlers.state.plan.effective_state).
* Otherwise each box whose state differs from what it showed is written.

While "Stop all" is in effect the boxes show the choices beneath it (the state
without the (*, *) row), so undoing it gives back the earlier choices.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from handlers.model import ALL, WILDCARD, Action, ActionType, Channel, Decision, Kind, State, item_key
from handlers.state.plan import PreferenceRow, effective_state

CHANNELS = tuple(c.value for c in Channel)
Rows = Mapping[tuple[str, str], PreferenceRow]


@dataclass(frozen=True)
class PageView:
    """What the page shows: each unit's boxes as (channel, ticked), and the "Stop all" box."""

    boxes: dict[str, list[tuple[str, bool]]]
    stop_all: bool


def stop_all_in_effect(rows: Rows, units: Iterable[str]) -> bool:
    """True when the (*, *) opt-out is in effect and no shown (unit, channel) was opted back in since."""
    if effective_state(rows, WILDCARD, WILDCARD) is not State.UNSUBSCRIBED:
        return False
    return all(effective_state(rows, u, c) is State.UNSUBSCRIBED for u in units for c in CHANNELS)


def view(rows: Rows, units: list[str], token_unit: str, token_channel: str, preselect: bool) -> PageView:
    """The page for `rows` over `units`. With `preselect`, the token's own scope shows unticked
    (the person came to opt out of it; a save confirms), and a token for everything ticks "Stop all"."""
    stop_all = stop_all_in_effect(rows, units)
    beneath = {k: r for k, r in rows.items() if k != (WILDCARD, WILDCARD)} if stop_all else rows
    boxes: dict[str, list[tuple[str, bool]]] = {}
    for unit in units:
        boxes[unit] = []
        for channel in CHANNELS:
            ticked = effective_state(beneath, unit, channel) is State.SUBSCRIBED
            if preselect and token_unit in (WILDCARD, unit) and token_channel in (WILDCARD, channel):
                ticked = False
            boxes[unit].append((channel, ticked))
    if preselect and token_unit == WILDCARD and token_channel == WILDCARD:
        stop_all = True
    return PageView(boxes=boxes, stop_all=stop_all)


def save(address: str, rows: Rows, shown: list[tuple[str, str]], wanted: set[tuple[str, str]], stop_all: bool,
         stop_all_shown: bool, token: str, proof: str, evidence: Mapping[str, Any]) -> Decision | None:
    """The decision of one page save, or None when it changes nothing.

    `shown` are the (unit, channel) boxes the form carried, `wanted` those ticked. The
    signed token and its form proof are the proof that lets a save opt back in
    (handlers.state.rules); the caller has checked both. The item id is the token and
    the proof alone, so a proof is single-use: any second save with it (a resubmitted
    form, a replayed request, other changes under the same proof) is a duplicate that
    apply writes nothing for. A form proof carries a nonce per rendering
    (handlers.tokens.form_proof), so every fresh page can be saved once.
    """
    actions: list[Action] = []
    if stop_all:
        actions.append(Action(ActionType.UNSUBSCRIBE, address, reason="optout", units=ALL, channels=ALL))
    else:
        current = dict(rows)
        if stop_all_shown and effective_state(rows, WILDCARD, WILDCARD) is State.UNSUBSCRIBED:
            actions.append(Action(ActionType.SUBSCRIBE, address, reason="optin", units=ALL, channels=ALL))
            current = {}       # (*, *) subscribed now outranks every older row
        for unit, channel in shown:
            want = (unit, channel) in wanted
            if want == (effective_state(current, unit, channel) is State.SUBSCRIBED):
                continue
            actions.append(Action(ActionType.SUBSCRIBE if want else ActionType.UNSUBSCRIBE, address,
                                  reason="optin" if want else "optout", units=(unit,), channels=(channel,)))
    if not actions:
        return None
    key = item_key("page", token, proof)
    return Decision(item_id=key, kind=Kind.CLICK, actions=tuple(actions), verified=True, source="page",
                    reason=f"preference page: {len(actions)} change(s)", evidence=dict(evidence))


def one_click(address: str, token_unit: str, token_channel: str, token: str,
              evidence: Mapping[str, Any]) -> Decision:
    """RFC 8058 one-click: unsubscribe the token's (unit, channel), '*' meaning all.

    Every POST gets a fresh item id: a repeat is recorded as evidence, and the plan
    finds the opt-out already in effect, so it publishes nothing twice.
    """
    action = Action(ActionType.UNSUBSCRIBE, address, reason="optout",
                    units=ALL if token_unit == WILDCARD else (token_unit,),
                    channels=ALL if token_channel == WILDCARD else (token_channel,))
    return Decision(item_id=item_key("one_click", token, uuid.uuid4().hex), kind=Kind.CLICK, actions=(action,),
                    reason="one-click unsubscribe (RFC 8058)", verified=True, source="one_click",
                    evidence=dict(evidence))
