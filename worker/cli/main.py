"""The `unsubd` command line. Exit status: 0 ok, 1 not found, 2 bad input or settings, 3 a service is unreachable."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

from config import ConfigError, Settings, load
from worker.errors import DatabaseUnavailable, QueueUnavailable

EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
MAX_CLASSIFY_BYTES = 64 * 1024 * 1024


def _settings(args: argparse.Namespace) -> Settings:
    return load(os.environ, args.config)


def _operator(args: argparse.Namespace) -> str:
    """Who runs an operator command: --operator, else the login name (kept in the event)."""
    given = (getattr(args, "operator", None) or "").strip()
    if given:
        return given[:64]
    try:
        return getpass.getuser()[:64] or "unknown"
    except (OSError, KeyError):
        return "unknown"


def _files(paths: Sequence[str]) -> Iterator[Path]:
    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        else:
            yield p


EFFECTS = {"suppress": "suppress", "soft_bounce": "soft_bounce"}


def classify_record(file: str, decision: Any) -> dict[str, Any]:
    """One `classify --json` line: the decision's fields, and `recipients` (issue 21 item 4).

    `recipients` lists every recipient the reading found (a bounce's failed, delayed and
    delivered groups; a complaint's complained-about addresses; any other action's
    address), each with `address`, `action` (failed, delayed, delivered, relayed,
    expanded, complained, ... as read), `status`, `reason`, `hard`, `effect` (what the
    decision does to it: suppress, soft_bounce or none) and, when the effect is none,
    `why`.
    """
    record = {"file": file, **decision.to_json(), "recipients": recipient_records(decision)}
    return record


def recipient_records(decision: Any) -> list[dict[str, Any]]:
    """The `recipients` of a `classify --json` line (see `classify_record`)."""
    acted = {a.address: a for a in decision.actions if a.address}
    out: list[dict[str, Any]] = []
    seen: set[tuple[str | None, str | None]] = set()

    def add(address: Any, action: str | None, status: Any, reason: Any, hard: Any, why: str | None) -> None:
        if not isinstance(address, str) or not address or (address, action) in seen:
            return
        seen.add((address, action))
        act = acted.get(address)
        effect = EFFECTS.get(act.type.value, "none") if act is not None else "none"
        entry: dict[str, Any] = {"address": address, "action": action, "status": status, "reason": reason,
                                 "hard": hard, "effect": effect}
        if effect == "none":
            entry["why"] = why or _why_none(decision, action)
        out.append(entry)

    rows = decision.evidence.get("recipients") or []
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict):
            why = row.get("why_none") or row.get("why_not_suppressed")
            add(row.get("address"), row.get("action"), row.get("status"), row.get("reason"), row.get("hard"), why)
        elif isinstance(row, str) and decision.kind.value == "complaint":
            add(row, "complained", None, decision.evidence.get("feedback_type"), None, None)
    for address, act in acted.items():
        if not any(e["address"] == address for e in out):
            add(address, act.type.value, act.status, act.reason, act.hard, None)
    return out


def _why_none(decision: Any, action: str | None) -> str:
    if decision.review:
        return f"held for review: {decision.reason}"
    if action == "delayed":
        return "a delay warning: delivery is still being tried"
    if action in ("delivered", "relayed", "expanded"):
        return f"{action}: not a failure"
    return decision.reason or "no action"


def cmd_classify(args: argparse.Namespace) -> int:
    """Classify files offline with the same function the consumer uses; writes nothing."""
    from handlers.classify import classify
    from handlers.context import Context
    from handlers.model import Inbound

    ctx = Context.from_settings(_settings(args))
    now = datetime.now(timezone.utc)
    status = EXIT_OK
    for path in _files(args.paths):
        try:
            if path.stat().st_size > MAX_CLASSIFY_BYTES:
                raise OSError(f"larger than {MAX_CLASSIFY_BYTES} bytes")
            raw = path.read_bytes()
        except OSError as exc:
            print(json.dumps({"file": str(path), "error": str(exc)}) if args.json
                  else f"{path}: cannot read: {exc}", file=sys.stdout if args.json else sys.stderr)
            status = EXIT_USAGE
            continue
        decision = classify(Inbound.from_file(raw, str(path), now), ctx, now)
        if args.json:
            print(json.dumps(classify_record(str(path), decision), ensure_ascii=False))
        else:
            acts = ", ".join(f"{a.type.value} {a.address}" + (f" {a.status}" if a.status else "")
                             for a in decision.actions) or "no action"
            flag = " [review]" if decision.review else ""
            print(f"{path}: {decision.kind.value}{flag}: {acts} ({decision.reason})")
    return status


async def _with_db(settings: Settings, fn: Any) -> Any:
    from worker.app import prepare_database
    from worker.store.db import Database

    db = Database.connect(settings.database_url)
    try:
        await prepare_database(settings, db)
        return await fn(db)
    finally:
        await db.close()


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from worker.store import migrate
    from worker.store.db import Database, redact_url

    settings = _settings(args)

    async def run() -> str | None:
        db = Database.connect(settings.database_url)
        try:
            await migrate.upgrade(db.engine)
            return await migrate.current(db.engine)
        finally:
            await db.close()

    revision = asyncio.run(run())
    print(f"{redact_url(settings.database_url)}: schema at revision {revision}")
    return EXIT_OK


def cmd_contacts_import(args: argparse.Namespace) -> int:
    from worker.ops.contacts import ImportError_, import_rows, parse_csv

    settings = _settings(args)
    try:
        text = Path(args.file).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"cannot read {args.file}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        rows = parse_csv(text, settings)
    except ImportError_ as exc:
        print(f"{args.file}: nothing imported; fix these rows:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    now = datetime.now(timezone.utc)
    try:
        result = asyncio.run(_with_db(settings, lambda db: import_rows(db, rows, now, Path(args.file).name,
                                                                       operator=_operator(args))))
    except ImportError_ as exc:
        print(f"{args.file}: nothing imported; these rows conflict with the database:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    print(f"imported {len(rows)} rows: {result.created} new, {result.updated} updated, "
          f"{result.unchanged} unchanged; {result.kept_opt_out} unit opt-outs kept (import never re-subscribes)")
    return EXIT_OK


def cmd_contacts_show(args: argparse.Namespace) -> int:
    from worker.ops.contacts import show

    settings = _settings(args)
    try:
        view = asyncio.run(_with_db(settings, lambda db: show(db.sessions, settings, args.address)))
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    if view is None:
        if args.json:
            print(json.dumps({"address": args.address, "found": False}))
        else:
            print(f"no contact, suppression or event for {args.address}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if args.json:
        print(json.dumps(view.to_json(), ensure_ascii=False, indent=2))
        return EXIT_OK
    print(f"{view.address}" + (f" (contact {view.contact_id}" + (f", {view.name}" if view.name else "") + ")"
                               if view.contact_id else " (no contact)"))
    if len(view.addresses) > 1:
        print("  addresses: " + ", ".join(view.addresses))
    if view.contact_id:
        print("  on units: " + (", ".join(view.units) or "none (never imported for a unit)"))
    if view.suppressions:
        for s in view.suppressions:
            print(f"  SUPPRESSED {s['address']}: {s['reason']} since {s['since']}")
    else:
        print("  not suppressed")
    by_unit: dict[str, list[str]] = {}
    for p in view.preferences:
        by_unit.setdefault(p["unit"], []).append(f"{p['channel']}={p['state']}")
    for unit, states in by_unit.items():
        print(f"  {unit}: {' '.join(states)}")
    if view.events:
        print("  last events:")
        for e in view.events:
            print(f"    {e['occurred_at']}  {e['kind']:<10} {e['reason']}")
    return EXIT_OK


def cmd_suppressions_release(args: argparse.Namespace) -> int:
    from worker.ops.admin import release

    settings = _settings(args)
    now = datetime.now(timezone.utc)
    try:
        applied = asyncio.run(_with_db(settings, lambda db: release(db, args.address, args.reason, now,
                                                                    operator=_operator(args))))
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    if not applied.updates:
        print(f"{args.address} was not suppressed; the request is recorded as an event", file=sys.stderr)
        return EXIT_NOT_FOUND
    print(f"released {args.address}; marketing systems are told (event {applied.event_id})")
    return EXIT_OK


def cmd_suppressions_export(args: argparse.Namespace) -> int:
    import csv

    from worker.ops.admin import export_suppressions

    settings = _settings(args)
    rows = asyncio.run(_with_db(settings, export_suppressions))
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return EXIT_OK
    writer = csv.DictWriter(sys.stdout, fieldnames=["address", "reason", "since", "contact_id"])
    writer.writeheader()
    writer.writerows(rows)
    return EXIT_OK


def cmd_token(args: argparse.Namespace) -> int:
    """The unsubscribe token and header set for one contact's messages from one unit."""
    from worker.store.keys import keyring_for
    from worker.ingress.links import BadRequest, issue

    settings = _settings(args)
    keyring = keyring_for(settings)
    if keyring is None:
        raise ConfigError("invalid setting tokens.keys (UNSUBD_TOKENS__KEYS): no signing key; "
                          "a PostgreSQL deployment must configure its keys")
    try:
        issued = asyncio.run(_with_db(settings, lambda db: issue(db.sessions, settings, keyring, args.address,
                                                                  args.unit, args.channel)))
    except BadRequest as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    if issued is None:
        print(f"no contact has the address {args.address}; import it first", file=sys.stderr)
        return EXIT_NOT_FOUND
    if args.json:
        print(json.dumps(issued.to_json(), ensure_ascii=False, indent=2))
        return EXIT_OK
    for name, value in issued.headers.items():
        print(f"{name}: {value}")
    print(f"Return-Path: <{issued.return_path}>")
    if issued.reply_to:
        print(f"Reply-To: <{issued.reply_to}>")
    print(f"# preference page: {issued.preferences_url}")
    print("# sign List-Unsubscribe and List-Unsubscribe-Post with DKIM (RFC 8058 section 4)")
    print("# send with this Return-Path as the envelope sender (SMTP MAIL FROM), so bounces reach unsubd signed")
    return EXIT_OK


def _scope_arg(text: str, allowed: list[str], what: str) -> tuple[str, ...] | str:
    if text.strip().lower() == "all":
        return "all"
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [v for v in values if v not in allowed]
    if unknown or not values:
        raise ValueError(f"--{what}: 'all' or a comma-separated list of {', '.join(allowed)}; got {text!r}")
    return values


def cmd_review_list(args: argparse.Namespace) -> int:
    from worker.ops.review import list_open

    settings = _settings(args)
    items = asyncio.run(_with_db(settings, list_open))
    if args.json:
        for item in items:
            print(json.dumps(item, ensure_ascii=False))
        return EXIT_OK
    if not items:
        print("nothing to review")
        return EXIT_OK
    for item in items:
        due = f" due {item['due_at'][:10]}" if item["due_at"] else ""
        print(f"{item['id']:>6}  {item['created_at'][:16]}  {item['kind']:<14} {item['address'] or '-':<32}{due}")
        print(f"        {item['reason'][:150]}")
    return EXIT_OK


def _scope_args(args: argparse.Namespace, settings: Settings) -> tuple[Any, Any]:
    """(units, channels) of --units and --channels, checked against the configured units
    and the channels; ValueError names what is wrong."""
    from handlers.model import Channel

    return (_scope_arg(args.units, list(settings.units), "units"),
            _scope_arg(args.channels, [c.value for c in Channel], "channels"))


def cmd_review_resolve(args: argparse.Namespace) -> int:
    from worker.ops.review import ReviewError, resolve

    settings = _settings(args)
    try:
        units, channels = _scope_args(args, settings)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    now = datetime.now(timezone.utc)
    try:
        applied = asyncio.run(_with_db(settings, lambda db: resolve(
            db, args.id, args.as_, now, units=units, channels=channels, address=args.address, note=args.note,
            operator=_operator(args))))
    except LookupError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_NOT_FOUND
    except ReviewError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    print(f"review item {args.id} resolved as {args.as_} (event {applied.event_id}, {applied.updates} updates)")
    return EXIT_OK


def cmd_rights_list(args: argparse.Namespace) -> int:
    from worker.ops.requests import list_open

    settings = _settings(args)
    now = datetime.now(timezone.utc)
    items = asyncio.run(_with_db(settings, lambda db: list_open(db, now, overdue=args.overdue)))
    if args.json:
        for item in items:
            print(json.dumps(item.to_json(), ensure_ascii=False))
        return EXIT_OK
    if not items:
        print("no overdue rights requests" if args.overdue else "no open rights requests")
        return EXIT_OK
    print(f"{'id':>6}  {'type':<13} {'due':<10} {'days left':>9}  address")
    for item in items:
        due = item.due_at.date().isoformat() if item.due_at else "-"
        left = "-" if item.days_left is None else str(item.days_left)
        flag = "  OVERDUE" if item.overdue else ""
        print(f"{item.id:>6}  {item.type or '?':<13} {due:<10} {left:>9}  {item.address or '-'}{flag}")
    return EXIT_OK


def cmd_rights_fulfil(args: argparse.Namespace) -> int:
    from worker.ops.requests import RequestError, fulfil

    settings = _settings(args)
    now = datetime.now(timezone.utc)

    def deliver(data: dict[str, Any]) -> None:
        text = json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n"
        if args.out and args.out != "-":
            Path(args.out).write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)

    try:
        done = asyncio.run(_with_db(settings, lambda db: fulfil(
            db, settings, args.id, now, operator=_operator(args), note=args.note, new_address=args.new_address,
            deliver=deliver)))
    except LookupError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_NOT_FOUND
    except RequestError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    where = sys.stderr if done.item.type == "access" and not (args.out and args.out != "-") else sys.stdout
    print(f"rights item {args.id} ({done.item.type}) closed as {done.resolution}: {done.done}", file=where)
    return EXIT_OK


def cmd_contacts_export(args: argparse.Namespace) -> int:
    """Everything held about an address (GDPR Art. 15): JSON, or --summary for a text to send."""
    from worker.ops.rights import export, summary

    settings = _settings(args)
    try:
        data = asyncio.run(_with_db(settings, lambda db: export(db, settings, args.address)))
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    if data is None:
        print("nothing is held about that address", file=sys.stderr)
        return EXIT_NOT_FOUND
    print(summary(data) if args.summary else json.dumps(data, ensure_ascii=False, indent=2, default=str))
    return EXIT_OK


def cmd_contacts_erase(args: argparse.Namespace) -> int:
    """Erase an address and its contact, keeping its "no" as a keyed hash (GDPR Art. 17)."""
    from worker.ops.rights import erase

    settings = _settings(args)
    now = datetime.now(timezone.utc)
    try:
        result = asyncio.run(_with_db(settings, lambda db: erase(db, settings, args.address, args.reason, now,
                                                                 operator=_operator(args))))
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    if result is None:
        print("nothing is held about that address; nothing erased", file=sys.stderr)
        return EXIT_NOT_FOUND
    if result.applied is None:
        print("already erased: only its tombstone is held; nothing changed")
        return EXIT_OK
    print(f"erased {result.addresses} address(es); their opt-outs are kept as tombstones; "
          f"marketing systems are told (event {result.applied.event_id})")
    return EXIT_OK


def cmd_contacts_change_address(args: argparse.Namespace) -> int:
    """Correct a contact's address (GDPR Art. 16), keeping its preferences and history."""
    from worker.ops.rights import change_address

    settings = _settings(args)
    now = datetime.now(timezone.utc)
    try:
        result = asyncio.run(_with_db(settings, lambda db: change_address(
            db, settings, args.old, args.new, args.reason, now, operator=_operator(args))))
    except ValueError as exc:               # not an address, no reason, the same address, or a conflict
        print(f"refused, nothing changed: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if result is None:
        print("no contact has the old address; nothing changed", file=sys.stderr)
        return EXIT_NOT_FOUND
    kept = []
    if result.counts.get("suppression_left_with_old"):
        kept.append("its suppression stays with the old address")
    if result.counts.get("soft_bounces_left_with_old"):
        kept.append("its soft bounces stay with the old address")
    print(f"address changed; preferences, memberships and history kept"
          + (f" ({'; '.join(kept)})" if kept else "")
          + f"; marketing systems are told (event {result.applied.event_id})")
    return EXIT_OK


def cmd_contacts_opt_in(args: argparse.Namespace) -> int:
    from worker.ops.admin import opt_in

    settings = _settings(args)
    try:
        units, channels = _scope_args(args, settings)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    now = datetime.now(timezone.utc)
    try:
        applied = asyncio.run(_with_db(settings, lambda db: opt_in(db, args.address, units, channels, args.reason,
                                                                   now, operator=_operator(args))))
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    if not applied.updates:
        print(f"{args.address}: nothing to change (already receiving that)", file=sys.stderr)
        return EXIT_OK
    print(f"{args.address} opted back in ({applied.updates} updates, event {applied.event_id})")
    return EXIT_OK


RETENTION_WORDS = {"contacts": "erased (their opt-outs kept as tombstones)", "review_items": "deleted",
                   "events": "deleted, or emptied where a row still refers to them", "evidence": "emptied",
                   "raw_mail": "blanked"}


def cmd_retention_run(args: argparse.Namespace) -> int:
    """Remove what is past its retention period; the counts per class first (worker.ops.retention)."""
    from handlers.events.retention import CLASSES, Policy
    from worker.ops.retention import run

    settings = _settings(args)
    policy = Policy.from_settings(settings.retention)
    periods = {"contacts": f"non-alumni {policy.describe('non_alumni')}, alumni {policy.describe('alumni')} "
                           "after the last interaction",
               **{name: policy.describe(name) for name in CLASSES if name != "contacts"}}
    now = datetime.now(timezone.utc)

    def show_due(counts: dict[str, int]) -> None:
        if args.json:
            return
        print("due now" + (" (dry run: nothing is changed)" if args.dry_run else "") + ":")
        for name in CLASSES:
            print(f"  {name:<13}{counts.get(name, 0):>8}   ({periods[name]})")
        sys.stdout.flush()

    try:
        result = asyncio.run(_with_db(settings, lambda db: run(db, settings, now, dry_run=args.dry_run,
                                                               on_due=show_due)))
    except ValueError as exc:
        print(f"unsubd: {exc}; nothing changed", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps({"due": result.due, "done": result.done, "detail": result.detail,
                          "batches": result.batches, "dry_run": result.dry_run, "skipped": result.skipped}))
        return EXIT_OK
    if result.skipped:
        print(f"skipped: {result.skipped}")
    elif not result.dry_run:
        print(f"done ({result.batches} batches, each an event of source retention):")
        for name in CLASSES:
            print(f"  {name:<13}{result.done.get(name, 0):>8}   {RETENTION_WORDS[name]}")
    return EXIT_OK


def _with_parked_store(settings: Settings, fn: Any) -> Any:
    """Run `fn(db)` against where parked items live: the database (embedded) or the
    dead-letter queue (production, where `db` is None)."""
    if settings.amqp_url:
        return asyncio.run(fn(None))
    return asyncio.run(_with_db(settings, fn))


def cmd_parked_list(args: argparse.Namespace) -> int:
    from worker.queue.parked import list_parked

    settings = _settings(args)
    items = _with_parked_store(settings, lambda db: list_parked(settings, db, args.limit))
    if args.json:
        for item in items:
            print(json.dumps(item.to_json(), ensure_ascii=False))
        return EXIT_OK
    if not items:
        print("nothing is parked")
        return EXIT_OK
    for item in items:
        print(f"{item.id}  {(item.parked_at or '-')[:19]}  {item.bytes} bytes  attempts {item.attempts or '-'}")
        print(f"    {item.error[:300]}")
    return EXIT_OK


def cmd_parked_replay(args: argparse.Namespace) -> int:
    from worker.queue.parked import replay

    if bool(args.ids) == args.all:
        print("name the items to replay, or --all", file=sys.stderr)
        return EXIT_USAGE
    settings = _settings(args)
    wanted = None if args.all else set(args.ids)
    now = datetime.now(timezone.utc)
    done = _with_parked_store(settings, lambda db: replay(settings, db, wanted, now))
    for item_id in done:
        print(f"replayed {item_id}")
    missing = sorted((wanted or set()) - set(done))
    for item_id in missing:
        print(f"not parked: {item_id}", file=sys.stderr)
    if not done and not missing:
        print("nothing is parked")
    return EXIT_NOT_FOUND if missing else EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from worker import logs
    from worker.app import parse_roles, serve

    settings = _settings(args)
    roles = parse_roles(args.role)
    logs.setup(settings.log_level)
    return asyncio.run(serve(settings, roles))


def parser() -> argparse.ArgumentParser:
    # Global options work before the command and after it (`unsubd --config X contacts
    # show A` and `unsubd contacts show A --config X`): the subcommands' copies default
    # to SUPPRESS, so they only override what the top level read when given.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help="TOML settings file (default: $UNSUBD_CONFIG)")
    common.add_argument("--operator", metavar="NAME", default=argparse.SUPPRESS,
                        help="who runs an operator command, kept in its event (default: the login name)")
    p = argparse.ArgumentParser(prog="unsubd", description="Unsubscribe-and-bounce worker.")
    p.add_argument("--config", metavar="PATH", default=None, help="TOML settings file (default: $UNSUBD_CONFIG)")
    p.add_argument("--operator", metavar="NAME", default=None,
                   help="who runs an operator command, kept in its event (default: the login name)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", parents=[common], help="run the worker (SMTP, HTTP, consumer, relay)")
    s.add_argument("--role", default="smtp,http,consumer,relay",
                   help="comma-separated roles to run (default: all)")
    s.set_defaults(func=cmd_serve)

    c = sub.add_parser("classify", parents=[common], help="classify message files offline; writes nothing")
    c.add_argument("paths", nargs="+", metavar="PATH", help="files or directories (walked)")
    c.add_argument("--json", action="store_true", help="one JSON object per message")
    c.set_defaults(func=cmd_classify)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True,
                                                                     metavar="ACTION")
    u = db.add_parser("upgrade", parents=[common], help="migrate the database to the newest schema")
    u.set_defaults(func=cmd_db_upgrade)

    ct = sub.add_parser("contacts", help="contacts").add_subparsers(dest="contacts_command", required=True,
                                                                    metavar="ACTION")
    sp = sub.add_parser("suppressions", help="suppressed addresses").add_subparsers(
        dest="suppressions_command", required=True, metavar="ACTION")
    r = sp.add_parser("release", parents=[common], help="lift a suppression (recorded as an event)")
    r.add_argument("address")
    r.add_argument("--reason", required=True, help="why, kept as evidence (e.g. 'mailbox fixed, confirmed by phone')")
    r.set_defaults(func=cmd_suppressions_release)
    ex = sp.add_parser("export", parents=[common], help="every active suppression, as CSV (or --json lines)")
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(func=cmd_suppressions_export)

    rv = sub.add_parser("review", help="the review queue").add_subparsers(
        dest="review_command", required=True, metavar="ACTION")
    rl = rv.add_parser("list", parents=[common], help="open review items, deadlines first")
    rl.add_argument("--json", action="store_true")
    rl.set_defaults(func=cmd_review_list)
    rr = rv.add_parser("resolve", parents=[common], help="settle one item (recorded as an event)")
    rr.add_argument("id", type=int)
    rr.add_argument("--as", dest="as_", required=True, choices=["optout", "ignore"])
    rr.add_argument("--units", default="all", help="'all' (default) or unit keys, comma-separated")
    rr.add_argument("--channels", default="email", help="'email' (default), 'all', or channels, comma-separated")
    rr.add_argument("--address", help="act on this address instead of the one the item names")
    rr.add_argument("--note", default="", help="why, kept with the event")
    rr.set_defaults(func=cmd_review_resolve)

    rg = sub.add_parser("rights", help="rights requests (access, erasure, rectification, objection) and their "
                                       "deadlines").add_subparsers(dest="rights_command", required=True,
                                                                   metavar="ACTION")
    rgl = rg.add_parser("list", parents=[common], help="open rights requests, the earliest due first")
    rgl.add_argument("--overdue", action="store_true", help="only those past their due date")
    rgl.add_argument("--json", action="store_true", help="one JSON object per line")
    rgl.set_defaults(func=cmd_rights_list)
    rgf = rg.add_parser("fulfil", parents=[common],
                        help="do what the request asks and close it (erasure erases; access writes the export)")
    rgf.add_argument("id", type=int)
    rgf.add_argument("--note", default="", help="what was done or said, kept with the event")
    rgf.add_argument("--out", metavar="PATH", help="access: write the export (JSON and summary) here (default stdout)")
    rgf.add_argument("--new-address", metavar="ADDRESS", help="rectification: the corrected address (required)")
    rgf.set_defaults(func=cmd_rights_fulfil)

    pk = sub.add_parser("parked", help="items that could not be handled (dead-lettered)").add_subparsers(
        dest="parked_command", required=True, metavar="ACTION")
    pl = pk.add_parser("list", parents=[common], help="parked items with their errors, oldest first")
    pl.add_argument("--limit", type=int, default=100)
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_parked_list)
    pr = pk.add_parser("replay", parents=[common], help="put parked items back on the inbound queue")
    pr.add_argument("ids", nargs="*", metavar="ID", help="item ids, as `parked list` shows them")
    pr.add_argument("--all", action="store_true", help="every parked item")
    pr.set_defaults(func=cmd_parked_replay)

    i = ct.add_parser("import", parents=[common], help="import contacts from CSV (address,name,units)")
    i.add_argument("file", metavar="FILE.csv")
    i.set_defaults(func=cmd_contacts_import)
    sh = ct.add_parser("show", parents=[common], help="effective preferences, suppressions and events")
    sh.add_argument("address")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=cmd_contacts_show)
    oi = ct.add_parser("opt-in", parents=[common],
                       help="opt an address back in at the person's request (needs --reason; recorded with the operator)")
    oi.add_argument("address")
    oi.add_argument("--units", default="all", help="'all' (default) or unit keys, comma-separated")
    oi.add_argument("--channels", default="email", help="'email' (default), 'all', or channels, comma-separated")
    oi.add_argument("--reason", required=True, help="why, kept as evidence (e.g. 'asked by phone, ticket 4711')")
    oi.set_defaults(func=cmd_contacts_opt_in)
    ce = ct.add_parser("export", parents=[common], help="everything held about an address, as JSON (access request)")
    ce.add_argument("address")
    ce.add_argument("--summary", action="store_true", help="a short text to send to the person, instead of JSON")
    ce.set_defaults(func=cmd_contacts_export)
    er = ct.add_parser("erase", parents=[common],
                       help="erase an address and its contact; its opt-outs stay as a keyed hash (needs --reason)")
    er.add_argument("address")
    er.add_argument("--reason", required=True, help="why, kept in the audit record (the address is taken out)")
    er.set_defaults(func=cmd_contacts_erase)
    ca = ct.add_parser("change-address", parents=[common],
                       help="correct a contact's address, keeping its preferences and history (needs --reason)")
    ca.add_argument("old", metavar="OLD")
    ca.add_argument("new", metavar="NEW")
    ca.add_argument("--reason", required=True, help="why, kept in the audit record (e.g. 'new address, ticket 4711')")
    ca.set_defaults(func=cmd_contacts_change_address)
    rt = sub.add_parser("retention", help="records kept only as long as [retention] says").add_subparsers(
        dest="retention_command", required=True, metavar="ACTION")
    rtr = rt.add_parser("run", parents=[common],
                        help="remove what is past its period (prints the counts per class first)")
    rtr.add_argument("--dry-run", action="store_true", help="only print what is due; change nothing")
    rtr.add_argument("--json", action="store_true", help="one JSON object: due, done, batches")
    rtr.set_defaults(func=cmd_retention_run)
    tk = sub.add_parser("token", parents=[common], help="the unsubscribe headers for one contact and unit")
    tk.add_argument("address")
    tk.add_argument("--unit", required=True, help="the sending unit's key, or '*' for every unit")
    tk.add_argument("--channel", default="email", help="email (default), sms, phone, letter, web, or '*'")
    tk.add_argument("--json", action="store_true")
    tk.set_defaults(func=cmd_token)
    from worker.console.cli import add_parsers as add_user_parsers      # `unsubd users ...`

    add_user_parsers(sub, common)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"unsubd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (`unsubd ... | head`): stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (QueueUnavailable, DatabaseUnavailable, OSError) as exc:
        print(f"unsubd: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
