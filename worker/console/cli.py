"""`unsubd users add|disable|reset|list`: the console's users, from the command line.

The first admin can only be made here (`unsubd users add NAME --role admin`). A
password is asked twice on the terminal (getpass), or read as one line from standard
input with `--password-stdin` (for scripts). Exit status as the rest of the CLI: 0 ok,
1 no such user, 2 bad input (name, role, password rules, a name already taken).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from datetime import datetime, timezone
from typing import Any

from worker.console import accounts

EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE = 0, 1, 2


class _Refused(Exception):
    pass


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add `users ...` to the `unsubd` command line (worker.cli.main.parser)."""
    us = sub.add_parser("users", help="console users (sign-in at /console/)").add_subparsers(
        dest="users_command", required=True, metavar="ACTION")
    a = us.add_parser("add", parents=[common], help="add a console user (asks for the password)")
    a.add_argument("name", help="user name: lower-case letters, digits and . _ @ -")
    a.add_argument("--role", required=True, choices=accounts.ROLES,
                   help="viewer reads; operator also acts; admin also exports, erases and manages users")
    a.add_argument("--password-stdin", action="store_true", help="read the password as one line from stdin")
    a.set_defaults(func=cmd_add)
    d = us.add_parser("disable", parents=[common], help="stop a user signing in, and end their sessions")
    d.add_argument("name")
    d.add_argument("--enable", action="store_true", help="let a disabled user sign in again")
    d.set_defaults(func=cmd_disable)
    r = us.add_parser("reset", parents=[common],
                      help="give a user a new password (also unlocks the account and ends its sessions)")
    r.add_argument("name")
    r.add_argument("--role", choices=accounts.ROLES, help="also change the user's role")
    r.add_argument("--password-stdin", action="store_true", help="read the password as one line from stdin")
    r.set_defaults(func=cmd_reset)
    ls = us.add_parser("list", parents=[common], help="the console users, their roles and whether they can sign in")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(func=cmd_list)


def _read_password(args: argparse.Namespace, name: str) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise _Refused("no terminal to ask for the password on: give it on stdin with --password-stdin")
        password = getpass.getpass(f"Password for {name}: ")
        if getpass.getpass("The same again: ") != password:
            raise _Refused("the two passwords differ; nothing changed")
    problem = accounts.password_problem(password, name)
    if problem:
        raise _Refused(f"{problem}; nothing changed")
    return password


def _name(raw: str) -> str:
    name = raw.strip().lower()
    problem = accounts.name_problem(name)
    if problem:
        raise _Refused(problem)
    return name


def _run(args: argparse.Namespace, fn: Any) -> Any:
    from worker.cli.main import _settings, _with_db

    return asyncio.run(_with_db(_settings(args), fn))


def cmd_add(args: argparse.Namespace) -> int:
    from worker.store import users

    try:
        name = _name(args.name)
        password = _read_password(args, name)
        hashed = accounts.hash_password(password)
        user = _run(args, lambda db: users.add_user(db, name, hashed, args.role, datetime.now(timezone.utc)))
    except (_Refused, users.UserExists) as exc:
        print(f"unsubd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"added console user {user.name} ({user.role}); sign in at /console/")
    return EXIT_OK


def cmd_disable(args: argparse.Namespace) -> int:
    from worker.store import users

    try:
        name = _name(args.name)
    except _Refused as exc:
        print(f"unsubd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    found = _run(args, lambda db: users.set_disabled(db, name, not args.enable, datetime.now(timezone.utc)))
    if not found:
        print(f"unsubd: no console user named {name}", file=sys.stderr)
        return EXIT_NOT_FOUND
    print(f"{name} can sign in again" if args.enable else f"{name} is disabled; their sessions are ended")
    return EXIT_OK


def cmd_reset(args: argparse.Namespace) -> int:
    from worker.store import users

    try:
        name = _name(args.name)
        password = _read_password(args, name)
    except _Refused as exc:
        print(f"unsubd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    hashed = accounts.hash_password(password)
    found = _run(args, lambda db: users.set_password(db, name, hashed, datetime.now(timezone.utc), role=args.role))
    if not found:
        print(f"unsubd: no console user named {name}", file=sys.stderr)
        return EXIT_NOT_FOUND
    print(f"new password for {name}" + (f", role {args.role}" if args.role else "")
          + "; the account is unlocked and its sessions are ended")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from worker.store import users

    now = datetime.now(timezone.utc)
    found = _run(args, users.list_users)
    for user in found:
        state = "disabled" if user.disabled else \
            f"locked until {user.locked_until.isoformat(timespec='minutes')}" \
            if accounts.is_locked(user.locked_until, now) else "active"
        if args.json:
            print(json.dumps({"name": user.name, "role": user.role, "state": state.split(" ")[0],
                              "locked_until": user.locked_until.isoformat() if user.locked_until else None,
                              "created_at": user.created_at.isoformat(),
                              "last_sign_in_at": user.last_sign_in_at.isoformat() if user.last_sign_in_at else None}))
        else:
            print(f"{user.name}\t{user.role}\t{state}")
    if not found and not args.json:
        print("no console users yet: add the first admin with `unsubd users add NAME --role admin`",
              file=sys.stderr)
    return EXIT_OK
