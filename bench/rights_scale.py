"""Retention and erasure on 100,000 contacts with history (issue 23): how long they take.

Builds a database of --contacts contacts (default 100,000) with a history: imports in
blocks of 1,000 (memberships; 30 % on the alumni unit), an event of their own for most
(emailed opt-outs with the received message kept, link clicks, bounces with a
suppression), the preference rows and published updates those made, and review items.
The history is written with bulk inserts (a fixture, not a product path). A fifth of the
contacts are non-alumni whose last interaction was six to seven years ago: due under the
default `contacts.non_alumni = "5y"`.

Then it times, on that database:

* `contacts erase` of single addresses (worker.ops.rights.erase, as the CLI calls it),
  median and p95 over --erasures (default 50) contacts that are not due;
* `retention run --dry-run` (worker.ops.retention.due: the reads alone) and
  `retention run` with the default periods (worker.ops.retention.run);
* baselines in the same run: `contacts export` of single addresses (median, p95), and a
  `contacts import` (worker.ops.contacts.import_rows) of as many new contacts as
  retention erased.

    .venv/bin/python -m bench.rights_scale [--backend sqlite|postgresql] [--contacts 100000] [--erasures 50]

Prints the figures and writes bench/results/rights_scale_<backend>.json. --backend
postgresql creates a database on 127.0.0.1:5432 and drops it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, text

import config
from bench.pipeline import PG, drop_pg_database, make_pg_database, pct
from handlers.events.operator import ImportRow
from worker.app import prepare_database
from worker.ops import retention
from worker.ops.contacts import import_rows
from worker.ops.rights import erase, export
from worker.store import migrate
from worker.store.db import Database
from worker.store.models import (Address, Contact, Event, EventAddress, InboundItem, Membership, Outbox, Preference,
                                 ReviewItem, Suppression)

REPO = Path(__file__).resolve().parents[1]
SECRET = "bench-rights-scale-secret-0123456789"
UNITS = ("research-news", "student-comms", "events")
CHUNK = 5000


def address_of(i: int) -> str:
    return f"person{i}@example{i % 50}.se"


def raw_reply(address: str, i: int) -> bytes:
    body = ("Hej,\n\njag vill inte längre få nyhetsbrevet. Avregistrera mig, tack.\n\n"
            f"Med vänliga hälsningar\nPerson {i}\n{address}\n\n> Nyhetsbrev från Forskningsnytt, nummer {i % 40}\n"
            + "> " + "Läs mer om forskningen vid universitetet. " * 20 + "\n")
    return (f"From: Person {i} <{address}>\r\nTo: forskning@mail.example.org\r\nSubject: Re: Forskningsnytt\r\n"
            f"Message-ID: <{i}.reply@example.se>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}").encode()


def history(n: int, now: datetime) -> dict[str, list[dict[str, Any]]]:
    """The rows of the fixture. Contact i is due (non-alumni, quiet for six years) when i % 100 < 20,
    alumni when i % 100 >= 70 (those from 90 up quiet as long, and kept)."""
    rng = random.Random(7)
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in (
        "contact", "address", "membership", "event", "event_address", "inbound_item", "preference", "suppression",
        "outbox", "review_item")}
    imported = now - timedelta(days=7 * 365)
    seq: dict[int, int] = {}

    def publish(cid: int, event_id: str, key: str, payload: dict[str, Any], at: datetime) -> None:
        seq[cid] = seq.get(cid, 0) + 1
        rows["outbox"].append({"event_id": event_id, "contact_id": cid, "sequence": seq[cid], "routing_key": key,
                               "payload": {**payload, "contact_id": cid, "sequence": seq[cid]}, "created_at": at,
                               "published_at": at, "claimed_until": None})

    for block in range(0, n, 1000):
        ids = range(block + 1, min(n, block + 1000) + 1)
        event_id = str(uuid.uuid4())
        units_of = {i: (("alumni",) if i % 100 >= 70 else ()) + (UNITS[i % 3],) for i in ids}
        rows["event"].append({"id": event_id, "item_id": f"import:{event_id}", "kind": "import", "source": "import",
                              "reason": f"contacts import of {len(ids)} rows from list{block}.csv", "review": False,
                              "verified": True, "occurred_at": imported, "evidence": {"rows": len(ids)},
                              "actions": [{"type": "join", "address": address_of(i), "units": list(units_of[i])}
                                          for i in ids]})
        for i in ids:
            rows["contact"].append({"id": i, "name": f"Person {i}", "origin": "import", "seq": 0,
                                    "created_at": imported, "updated_at": imported, "recipient_id": None})
            rows["address"].append({"contact_id": i, "channel": "email", "address": address_of(i),
                                    "created_at": imported})
            rows["event_address"].append({"event_id": event_id, "address": address_of(i), "contact_id": i})
            for unit in units_of[i]:
                rows["membership"].append({"contact_id": i, "unit": unit, "source": "import", "event_id": event_id,
                                           "joined_at": imported})
                publish(i, event_id, f"membership.{unit}", {"unit": unit, "state": "joined"}, imported)
    for i in range(1, n + 1):
        quiet = i % 100 < 20 or i % 100 >= 90
        if quiet and i % 2:
            continue                                        # half the quiet ones never did anything after the import
        at = (now - timedelta(days=rng.uniform(6 * 365, 7 * 365)) if quiet
              else now - timedelta(days=rng.uniform(1, 4 * 365)))
        address, event_id = address_of(i), str(uuid.uuid4())
        kind = ("optout", "bounce", "click")[i % 3] if i % 3 else "optout"
        item_id = f"item-{i}"
        evidence: dict[str, Any] = {"from": address}
        if kind == "optout":
            rows["inbound_item"].append({"id": item_id, "raw": raw_reply(address, i), "mail_from": address,
                                         "rcpt_tos": ["forskning@mail.example.org"], "source": "smtp",
                                         "received_at": at, "status": "done", "attempts": 1, "last_error": None,
                                         "available_at": at, "updated_at": at, "claimed_by": None, "crashed": False})
            evidence["text"] = "jag vill inte längre få nyhetsbrevet"
            rows["preference"].append({"contact_id": i, "unit": "research-news", "channel": "email",
                                       "state": "unsubscribed", "reason": "reply", "source": "reply",
                                       "event_id": event_id, "changed_at": at})
            publish(i, event_id, "preference.research-news.email", {"address": address, "state": "unsubscribed"}, at)
        elif kind == "bounce" and i % 4 == 0:
            rows["suppression"].append({"address": address, "contact_id": i, "reason": "hard_bounce", "active": True,
                                        "event_id": event_id, "created_at": at, "released_at": None})
            publish(i, event_id, "suppression.hard_bounce", {"address": address, "state": "suppressed"}, at)
        rows["event"].append({"id": event_id, "item_id": item_id, "kind": kind, "source": "smtp",
                              "reason": f"{kind} for {address}", "review": False, "verified": True,
                              "occurred_at": at, "evidence": evidence,
                              "actions": [{"type": "unsubscribe" if kind != "bounce" else "suppress",
                                           "address": address}]})
        rows["event_address"].append({"event_id": event_id, "address": address, "contact_id": i})
        if i % 200 == 0:                                    # some went to review: half settled three years ago
            settled = now - timedelta(days=3 * 365) if i % 400 == 0 else None
            rows["review_item"].append({"event_id": event_id, "kind": "decision", "reason": f"unclear: {address}",
                                        "address": address, "created_at": at, "due_at": None,
                                        "resolved_at": settled, "resolution": "ignore" if settled else None,
                                        "resolution_event_id": None})
    for row in rows["contact"]:
        row["seq"] = seq.get(row["id"], 0)
    return rows


async def build(db: Database, n: int, now: datetime) -> dict[str, int]:
    rows = history(n, now)
    tables = {"contact": Contact, "address": Address, "event": Event, "membership": Membership,
              "event_address": EventAddress, "inbound_item": InboundItem, "preference": Preference,
              "suppression": Suppression, "outbox": Outbox, "review_item": ReviewItem}
    for name, model in tables.items():
        for start in range(0, len(rows[name]), CHUNK):
            chunk = rows[name][start:start + CHUNK]
            async with db.transaction() as s:
                await s.execute(insert(model), chunk)
    if db.dialect == "postgresql":                          # ids were given: move the sequence past them
        async with db.transaction() as s:
            await s.execute(text("SELECT setval(pg_get_serial_sequence('contact', 'id'), :n)"), {"n": n})
            await s.execute(text("ANALYZE"))
    else:
        async with db.transaction() as s:
            await s.execute(text("ANALYZE"))
    return {name: len(value) for name, value in rows.items()}


def timed(values: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(values), 1), "p95_ms": round(pct(values, 95), 1),
            "max_ms": round(max(values), 1), "n": len(values)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    pg_name = None
    if args.backend == "postgresql":
        pg_name = make_pg_database()
        url = PG + pg_name
    else:
        url = f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp(prefix='unsubd-rights-')) / 'rights.db'}"
    settings = config.load({"UNSUBD_DATABASE_URL": url, "UNSUBD_TOKENS__KEYS": f'{{"k1": "{SECRET}"}}'},
                           REPO / "config" / "example.toml")
    db = Database.connect(url)
    out: dict[str, Any] = {"backend": args.backend, "contacts": args.contacts,
                           "periods": settings.retention.model_dump()}
    try:
        if args.backend == "sqlite":
            await migrate.upgrade(db.engine)
        await prepare_database(settings, db)
        now = datetime.now(timezone.utc)
        started = time.perf_counter()
        out["fixture_rows"] = await build(db, args.contacts, now)
        out["fixture_build_s"] = round(time.perf_counter() - started, 1)
        print(f"fixture: {out['fixture_rows']} in {out['fixture_build_s']} s", flush=True)

        rng = random.Random(11)
        active = [i for i in range(1, args.contacts + 1) if 30 <= i % 100 < 90]
        picked = rng.sample(active, args.erasures * 2)
        exports = []
        for i in picked[args.erasures:]:
            started = time.perf_counter()
            assert await export(db, settings, address_of(i)) is not None
            exports.append((time.perf_counter() - started) * 1000)
        out["baseline_export_single"] = timed(exports)
        erasures = []
        for i in picked[:args.erasures]:
            started = time.perf_counter()
            result = await erase(db, settings, address_of(i), "bench: asked by mail", now, operator="bench")
            erasures.append((time.perf_counter() - started) * 1000)
            assert result is not None and result.applied is not None
        out["erase_single"] = timed(erasures)
        print(f"contacts erase (single address, {args.erasures}): {out['erase_single']}", flush=True)
        print(f"contacts export (baseline, {args.erasures}):     {out['baseline_export_single']}", flush=True)

        started = time.perf_counter()
        due = await retention.due(db, settings, now)
        out["retention_dry_run_s"] = round(time.perf_counter() - started, 2)
        out["due"] = due
        print(f"retention run --dry-run: {out['retention_dry_run_s']} s, due {due}", flush=True)
        started = time.perf_counter()
        result = await retention.run(db, settings, now)
        out["retention_run_s"] = round(time.perf_counter() - started, 2)
        out["retention_done"], out["retention_batches"] = result.done, result.batches
        print(f"retention run: {out['retention_run_s']} s, done {result.done} in {result.batches} batches",
              flush=True)

        count = result.done.get("contacts", 0) or 1000
        rows = [ImportRow(line=k + 2, address=f"new{k}@example.org", name=None, units=("research-news",))
                for k in range(count)]
        started = time.perf_counter()
        await import_rows(db, rows, now, "baseline.csv", operator="bench")
        out["baseline_import"] = {"contacts": count, "s": round(time.perf_counter() - started, 2)}
        print(f"contacts import (baseline, {count} new contacts): {out['baseline_import']['s']} s", flush=True)
        async with db.sessions() as s:
            out["contacts_with_addresses_after"] = await s.scalar(select(func.count(func.distinct(Address.contact_id))))
    finally:
        await db.close()
        if pg_name is not None:
            drop_pg_database(pg_name)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--contacts", type=int, default=100_000)
    ap.add_argument("--erasures", type=int, default=50)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = asyncio.run(main_async(args))
    path = args.out or REPO / "bench" / "results" / f"rights_scale_{args.backend}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
