"""apply() through the SQLAlchemy unit of work, on SQLite and PostgreSQL alike."""

import asyncio
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select

from handlers.context import Context
from handlers.state.apply import apply
from handlers.model import ALL, Action, ActionType, Decision, Kind
from worker.ops.contacts import import_rows, parse_csv
from worker.store.models import Address, Contact, Event, EventAddress, Outbox, Preference, Suppression
from tests.conftest import make_settings

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def bounce(item_id, address="per.ek@kommun-vast.example"):
    act = Action(ActionType.SUPPRESS, address, status="5.1.1", reason="user_unknown", hard=True,
                 diagnostic="550 5.1.1 no such user")
    return Decision(item_id=item_id, kind=Kind.BOUNCE, actions=(act,), reason="dsn: 1 failed (5.1.1)",
                    evidence={"recipients": [{"final_recipient": address, "status": "5.1.1"}]})


async def count(db, model, *where):
    async with db.sessions() as s:
        return await s.scalar(select(func.count()).select_from(model).where(*where))


async def test_a_hard_bounce_writes_event_suppression_and_outbox_in_one_go(database):
    applied = await apply(bounce("item-1"), database.unit_of_work(), T0)
    assert not applied.duplicate and applied.updates == 1
    async with database.sessions() as s:
        sup = (await s.scalars(select(Suppression))).one()
        ev = (await s.scalars(select(Event))).one()
        out = (await s.scalars(select(Outbox))).one()
        contact = (await s.scalars(select(Contact))).one()
    assert (sup.address, sup.reason, sup.active, sup.event_id) == ("per.ek@kommun-vast.example", "hard_bounce",
                                                                   True, ev.id)
    assert ev.item_id == "item-1" and ev.kind == "bounce" and ev.evidence["recipients"][0]["status"] == "5.1.1"
    assert ev.actions[0]["diagnostic"] == "550 5.1.1 no such user"
    assert out.routing_key == "suppression.hard_bounce" and out.sequence == 1 and out.published_at is None
    assert out.payload["contact_id"] == contact.id == sup.contact_id and out.payload["event_id"] == ev.id
    assert contact.seq == 1 and contact.origin == "bounce"
    assert await count(database, EventAddress) == 1


async def test_the_same_item_applied_twice_changes_nothing_twice(database):
    first = await apply(bounce("item-1"), database.unit_of_work(), T0)
    second = await apply(bounce("item-1"), database.unit_of_work(), T0 + timedelta(seconds=5))
    assert not first.duplicate and second.duplicate
    assert await count(database, Event) == 1
    assert await count(database, Outbox) == 1
    assert await count(database, Suppression) == 1


async def test_a_second_bounce_for_a_suppressed_address_is_evidence_only(database):
    await apply(bounce("item-1"), database.unit_of_work(), T0)
    applied = await apply(bounce("item-2"), database.unit_of_work(), T0 + timedelta(minutes=1))
    assert not applied.duplicate and applied.updates == 0
    assert await count(database, Event) == 2 and await count(database, Outbox) == 1


async def test_a_failed_transaction_leaves_nothing_behind(database):
    # An address longer than the column on PostgreSQL, or a forced error on both: the event must go too.
    class Boom(Exception):
        pass

    uow = database.unit_of_work()
    original = uow.record

    async def record_then_fail(*args, **kwargs):
        await original(*args, **kwargs)
        raise Boom()

    uow.record = record_then_fail
    try:
        await apply(bounce("item-x"), uow, T0)
    except Boom:
        pass
    else:
        raise AssertionError("apply should have raised")
    for model in (Event, Suppression, Outbox, Contact, Address):
        assert await count(database, model) == 0, model.__name__


async def test_consent_changes_for_an_imported_contact(database):
    settings = make_settings()
    rows = parse_csv("address,name,units\nAnna@Example.se,Anna,alumni;events\n", settings)
    await import_rows(database, rows, T0, "test.csv")
    act = Action(ActionType.UNSUBSCRIBE, "anna@example.se", units=("alumni",), channels=("email",))
    d = Decision(item_id="click-1", kind=Kind.CLICK, actions=(act,), reason="one-click", source="one_click")
    applied = await apply(d, database.unit_of_work(), T0 + timedelta(minutes=1))
    assert applied.updates == 1
    async with database.sessions() as s:
        pref = (await s.scalars(select(Preference).where(Preference.unit == "alumni",
                                                          Preference.channel == "email"))).one()
        outs = (await s.scalars(select(Outbox).order_by(Outbox.sequence))).all()
    assert pref.state == "unsubscribed" and pref.source == "one_click"
    # The import published its two memberships; the click its one change, next in sequence.
    assert [(o.routing_key, o.sequence) for o in outs] == [
        ("membership.alumni", 1), ("membership.events", 2), ("preference.alumni.email", 3)]
    assert outs[-1].payload["source"] == "one_click"
    assert await count(database, Contact) == 1            # matched the imported contact, case-insensitively


async def test_concurrent_changes_to_one_contact_lose_nothing_and_number_consistently(database):
    settings = make_settings()
    await import_rows(database, parse_csv("address\nbo@example.se\n", settings), T0, "t.csv")
    channels = ["email", "sms", "phone", "letter", "web", "email"]
    decisions = [
        Decision(item_id=f"c{i}", kind=Kind.OPTOUT, reason="t",
                 actions=(Action(ActionType.UNSUBSCRIBE, "bo@example.se", units=(unit,), channels=(ch,)),))
        for i, (unit, ch) in enumerate([(u, c) for u in ("alumni", "events") for c in channels[:5]])
    ]

    async def one(d):
        for attempt in range(5):       # the consumer retries transient conflicts the same way
            try:
                return await apply(d, database.unit_of_work(), T0 + timedelta(seconds=1))
            except Exception:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.05)

    await asyncio.gather(*(one(d) for d in decisions))
    async with database.sessions() as s:
        seqs = sorted((await s.scalars(select(Outbox.sequence))).all())
        contact = (await s.scalars(select(Contact))).one()
    assert seqs == list(range(1, 11))
    assert contact.seq == 10
    assert await count(database, Preference, Preference.state == "unsubscribed") == 10


async def test_all_units_all_channels_is_one_wildcard_row(database):
    act = Action(ActionType.UNSUBSCRIBE, "x@example.no", units=ALL, channels=ALL)
    await apply(Decision(item_id="o1", kind=Kind.OPTOUT, actions=(act,), reason="t"), database.unit_of_work(), T0)
    async with database.sessions() as s:
        pref = (await s.scalars(select(Preference))).one()
        out = (await s.scalars(select(Outbox))).one()
    assert (pref.unit, pref.channel) == ("*", "*") and out.routing_key == "preference.all.all"


def soft_bounce(item_id, ref, address="full@kommun-vast.example"):
    act = Action(ActionType.SOFT_BOUNCE, address, status="4.2.2", reason="mailbox_full", hard=False, ref=ref)
    return Decision(item_id=item_id, kind=Kind.BOUNCE, actions=(act,), reason="dsn: 1 failed (4.2.2)")


async def test_soft_bounces_suppress_at_the_threshold_counting_each_message_once(database):
    from handlers.state.plan import BouncePolicy
    from worker.store.models import SoftBounce

    policy = BouncePolicy(threshold=3, window=timedelta(days=30))
    day = timedelta(days=1)
    await apply(soft_bounce("s1", "<m1@mail.example.org>"), database.unit_of_work(), T0, policy)
    await apply(soft_bounce("s2", "<m1@mail.example.org>"), database.unit_of_work(), T0 + day, policy)  # same message
    await apply(soft_bounce("s3", "<m2@mail.example.org>"), database.unit_of_work(), T0 + 2 * day, policy)
    assert await count(database, Suppression) == 0 and await count(database, SoftBounce) == 2
    applied = await apply(soft_bounce("s4", "<m3@mail.example.org>"), database.unit_of_work(), T0 + 3 * day, policy)
    assert applied.updates == 1
    async with database.sessions() as s:
        sup = (await s.scalars(select(Suppression))).one()
        out = (await s.scalars(select(Outbox))).one()
    assert sup.reason == "soft_bounce_threshold" and out.routing_key == "suppression.soft_bounce_threshold"


async def test_soft_bounces_older_than_the_window_no_longer_count(database):
    from handlers.state.plan import BouncePolicy

    policy = BouncePolicy(threshold=2, window=timedelta(days=7))
    await apply(soft_bounce("w1", "<a@x>"), database.unit_of_work(), T0, policy)
    await apply(soft_bounce("w2", "<b@x>"), database.unit_of_work(), T0 + timedelta(days=10), policy)
    assert await count(database, Suppression) == 0                    # the first one decayed
    await apply(soft_bounce("w3", "<c@x>"), database.unit_of_work(), T0 + timedelta(days=11), policy)
    assert await count(database, Suppression) == 1


async def test_an_operator_release_is_an_event_and_an_update(database):
    from worker.ops.admin import release

    await apply(bounce("item-1"), database.unit_of_work(), T0)
    applied = await release(database, "Per.Ek@kommun-vast.example", "confirmed by phone", T0 + timedelta(hours=1))
    assert applied.updates == 1
    async with database.sessions() as s:
        sup = (await s.scalars(select(Suppression))).one()
        outs = (await s.scalars(select(Outbox).order_by(Outbox.sequence))).all()
        ev = (await s.scalars(select(Event).where(Event.kind == "admin"))).one()
    assert not sup.active and sup.released_at is not None
    assert [o.routing_key for o in outs] == ["suppression.hard_bounce", "suppression.released"]
    assert [o.sequence for o in outs] == [1, 2] and outs[1].payload["source"] == "admin"
    assert ev.actions[0]["reason"] == "confirmed by phone"
    again = await apply(bounce("item-2"), database.unit_of_work(), T0 + timedelta(hours=2))   # bounces again
    assert again.updates == 1 and await count(database, Suppression, Suppression.active.is_(True)) == 1


async def test_one_batch_reads_ahead_and_still_sees_its_own_writes(database):
    """apply_all reads the state of the whole batch at once (read_ahead); a decision
    about an address that an earlier decision of the same batch changed must see that
    change, and one about an address suppressed before the batch must see that."""
    from handlers.state.apply import apply_all
    from handlers.state.plan import BouncePolicy
    from worker.store.models import SoftBounce

    policy = BouncePolicy(threshold=2, window=timedelta(days=30))
    await apply(bounce("before", "old@example.se"), database.unit_of_work(), T0)
    batch = [
        bounce("b1", "old@example.se"),                        # suppressed before: evidence only
        soft_bounce("b2", "<m1@mail.example.org>"),            # first soft bounce of full@
        bounce("b3", "new@example.se"),                        # a new contact, suppressed
        soft_bounce("b4", "<m2@mail.example.org>"),            # second: reaches the threshold
        bounce("b5", "new@example.se"),                        # already suppressed by b3
        soft_bounce("b6", "<m3@mail.example.org>"),            # suppressed by b4 already
    ]
    applied = await apply_all(batch, database.unit_of_work(), T0 + timedelta(hours=1), policy)
    assert [a.updates for a in applied] == [0, 0, 1, 1, 0, 0]
    async with database.sessions() as s:
        sups = {r.address: r.reason for r in await s.scalars(select(Suppression))}
        contacts = await s.scalar(select(func.count()).select_from(Address).where(
            Address.address == "new@example.se"))
        seqs = [r.sequence for r in await s.scalars(select(Outbox).order_by(Outbox.id))]
    assert sups == {"old@example.se": "hard_bounce", "new@example.se": "hard_bounce",
                    "full@kommun-vast.example": "soft_bounce_threshold"}
    assert contacts == 1 and seqs == [1, 1, 1]
    assert await count(database, SoftBounce) == 2 and await count(database, Event) == 7


async def test_one_batch_numbers_a_contact_with_two_addresses_in_order(database):
    """The contact's sequence lives on the contact, not the address: a batch that
    changes one contact through two of its addresses must not read the second from the
    batch's read-ahead (it would reuse a sequence number)."""
    from handlers.state.apply import apply_all

    settings = make_settings()
    await import_rows(database, parse_csv("address,name\nanna@example.se,Anna\n", settings), T0, "t.csv")
    async with database.sessions() as s:
        contact = (await s.scalars(select(Contact))).one()
        s.add(Address(contact_id=contact.id, channel="email", address="anna.work@example.se", created_at=T0))
        await s.commit()
    batch = [
        Decision(item_id="a1", kind=Kind.OPTOUT, reason="t",
                 actions=(Action(ActionType.UNSUBSCRIBE, "anna@example.se", units=("alumni",), channels=("email",)),)),
        Decision(item_id="a2", kind=Kind.OPTOUT, reason="t",
                 actions=(Action(ActionType.UNSUBSCRIBE, "anna.work@example.se", units=("events",),
                                 channels=("email",)),)),
    ]
    applied = await apply_all(batch, database.unit_of_work(), T0 + timedelta(minutes=1))
    assert [a.updates for a in applied] == [1, 1]
    async with database.sessions() as s:
        seqs = sorted((await s.scalars(select(Outbox.sequence))).all())
        contact = (await s.scalars(select(Contact))).one()
    assert seqs == [1, 2] and contact.seq == 2


async def test_a_batch_of_new_addresses_is_written_in_a_few_statements(database):
    """The unit of work holds its writes until a read or the commit and then makes one
    statement per table: a batch read ahead costs a few statements in all, however many
    decisions it has (PostgreSQL reserves the new contacts' ids while reading, and
    writes all the rows in one). Every row must still point at the right contact."""
    from sqlalchemy import event as sa_event

    from handlers.state.apply import apply_all

    addresses = [f"ny{i}@example.se" for i in range(40)]
    statements: list[str] = []

    def note(conn, cursor, statement, *args):
        statements.append(statement)

    sa_event.listen(database.engine.sync_engine, "before_cursor_execute", note)
    try:
        applied = await apply_all([bounce(f"n{i}", a) for i, a in enumerate(addresses)],
                                  database.unit_of_work(), T0)
    finally:
        sa_event.remove(database.engine.sync_engine, "before_cursor_execute", note)
    assert [a.updates for a in applied] == [1] * 40
    # The read-ahead (contacts; marks and existing events), then on PostgreSQL one
    # statement for every row; SQLite (after its BEGIN IMMEDIATE) writes each contact at
    # once, then one statement per table.
    limit = 3 if database.dialect == "postgresql" else 1 + 2 + 40 + 5
    assert len(statements) <= limit, statements
    async with database.sessions() as s:
        contact_of = dict((await s.execute(select(Address.address, Address.contact_id))).all())
        sups = dict((await s.execute(select(Suppression.address, Suppression.contact_id))).all())
        outs = [(o.payload["address"], o.contact_id, o.payload["contact_id"], o.sequence)
                for o in await s.scalars(select(Outbox))]
        contacts = dict((await s.execute(select(Contact.id, Contact.seq))).all())
    assert sorted(contact_of) == sorted(addresses) and len(set(contact_of.values())) == 40
    assert sups == contact_of
    assert sorted(outs) == sorted((a, contact_of[a], contact_of[a], 1) for a in addresses)
    assert set(contacts) == set(contact_of.values()) and set(contacts.values()) == {1}


async def test_one_batch_keeps_the_order_of_changes_to_one_address(database):
    """Held writes are made one table after another; two decisions about one address in
    a batch must still take effect in their order: soft bounces, then a delivery that
    clears them, then a new soft bounce, leave one open soft bounce and no suppression."""
    from handlers.state.apply import apply_all
    from handlers.classify import classify
    from handlers.model import Inbound
    from handlers.state.plan import BouncePolicy
    from tests.integration.test_sign_of_life import report
    from worker.store.models import SoftBounce

    settings = make_settings()
    policy = BouncePolicy(threshold=3, window=timedelta(days=30))

    def decision(action, status, n):
        item = Inbound.from_smtp(report(action, status, n), "", ["bounces@mail.example.org"], T0)
        return classify(item, Context.from_settings(settings), T0)

    batch = [decision("failed", "4.2.2", 1), decision("failed", "4.2.2", 2), decision("delivered", "2.0.0", 3),
             decision("failed", "4.2.2", 4), decision("failed", "4.2.2", 5)]
    await apply_all(batch, database.unit_of_work(), T0 + timedelta(hours=1), policy)
    async with database.sessions() as s:
        rows = (await s.execute(select(SoftBounce.ref, SoftBounce.cleared_at))).all()
    assert sorted((ref, cleared is None) for ref, cleared in rows) == [
        ("<n1@mail.example.org>", False), ("<n2@mail.example.org>", False),
        ("<n4@mail.example.org>", True), ("<n5@mail.example.org>", True)]
    assert await count(database, Suppression) == 0


async def test_nul_characters_from_hostile_mail_are_written_on_both_databases(database):
    """Evidence quotes hostile mail, NUL bytes included. PostgreSQL cannot store U+0000
    in text or jsonb: there each becomes U+FFFD, in every table, instead of failing the
    transaction (and a written backslash-u0000 stays as it was)."""
    from worker.store.models import SoftBounce

    act = Action(ActionType.SOFT_BOUNCE, "nul@kommun-vast.example", status="4.2.2", reason="mailbox_full",
                 hard=False, ref="<m\x00@evil.example>", diagnostic="452 full\x00")
    decision = Decision(item_id="nul-1", kind=Kind.BOUNCE, actions=(act,), reason="dsn: \x00 failed",
                        evidence={"sub\x00ject": "a\x00b", "quoted": "c:\\u0000d", "list": ["\x00"]})
    applied = await apply(decision, database.unit_of_work(), T0)
    assert not applied.duplicate
    nul = "\ufffd" if database.dialect == "postgresql" else "\x00"
    async with database.sessions() as s:
        ev = (await s.scalars(select(Event))).one()
        soft = (await s.scalars(select(SoftBounce))).one()
    assert ev.reason == f"dsn: {nul} failed"
    assert ev.evidence == {f"sub{nul}ject": f"a{nul}b", "quoted": "c:\\u0000d", "list": [nul]}
    assert ev.actions[0]["diagnostic"] == f"452 full{nul}"
    assert soft.ref == f"<m{nul}@evil.example>"
