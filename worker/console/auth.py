"""Sign-in, sessions and form tokens of the console.

* Sign-in goes through an `Authenticate` function: (name, password, now) to a User or
  None. `PasswordSignIn` checks a local Argon2id password with the lockout of
  worker.console.accounts. Another way to sign in (OIDC, later) would be a route of its
  own that ends in `start_session` with the user it vouches for; the pages and the role
  checks do not change.
* A session is a random 32-byte value in a cookie (Secure, HttpOnly, SameSite=Strict,
  Path=/console/); the database keeps only its SHA-256. Signing out deletes the row, so
  do disabling its user and a new password for its user (except the session of a user
  who sets their own). A session ends `session_hours` after sign-in, or once it has not
  been used for `session_idle_minutes`; its `last_seen_at` is written at most once a
  minute (TOUCH_EVERY), not on every request, so the idle time is known to that minute.
* Every POST form carries a token: HMAC-SHA256 of a fixed label under the session's
  `csrf_secret`, compared in constant time. The sign-in form, before there is a
  session, carries the value of a short-lived random cookie (double submit).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Awaitable, Callable

from config import Settings
from worker.console import accounts
from worker.store import users
from worker.store.database import Database
from worker.store.users import Session, User

log = logging.getLogger("unsubd.console")

SESSION_COOKIE = "unsubd_console"
LOGIN_COOKIE = "unsubd_console_login"
COOKIE_PATH = "/console/"
FORM_LABEL = b"unsubd console form v1"
TOUCH_EVERY = timedelta(minutes=1)

Authenticate = Callable[[str, str, datetime], Awaitable[User | None]]


def session_id(cookie_value: str) -> str:
    """What the database keeps of a session cookie: its SHA-256, in hex."""
    return hashlib.sha256(cookie_value.encode("utf-8", "surrogateescape")).hexdigest()


def form_token(csrf_secret: str) -> str:
    """The token every POST form of a session carries."""
    return hmac.new(csrf_secret.encode(), FORM_LABEL, hashlib.sha256).hexdigest()


def form_token_ok(csrf_secret: str, given: object) -> bool:
    return isinstance(given, str) and hmac.compare_digest(form_token(csrf_secret).encode(),
                                                          given.encode("utf-8", "surrogateescape"))


@dataclass
class PasswordSignIn:
    """The local sign-in: a user name and an Argon2id password, with the lockout.

    Every refusal (unknown name, disabled, locked, wrong password) looks the same and
    costs one Argon2 verification; see worker.console.accounts for why a locked account
    does not say so. Hashing runs in a thread, off the event loop.
    """

    db: Database
    settings: Settings

    async def __call__(self, name: str, password: str, now: datetime) -> User | None:
        name = name.strip().lower()
        found = await users.find_user(self.db, name) if accounts.name_problem(name) is None else None
        if found is None or found[0].disabled or accounts.is_locked(found[0].locked_until, now):
            await asyncio.to_thread(accounts.spend_equal_time, password)
            return None
        user, stored = found
        ok, rehash = await asyncio.to_thread(accounts.check_password, stored, password)
        console = self.settings.console
        if not ok:
            locked = await users.record_failure(
                self.db, user.id, now,
                lambda failed: accounts.after_failure(failed, now, console.lockout_after, console.lockout_minutes))
            if locked is not None:
                log.warning("console account locked after %d wrong passwords", console.lockout_after)
            return None
        new_hash = await asyncio.to_thread(accounts.hash_password, password) if rehash else None
        await users.record_success(self.db, user.id, now, new_hash)
        return user


async def start_session(db: Database, settings: Settings, user: User, now: datetime) -> str:
    """A new session for `user`; returns the cookie value (only its hash is stored)."""
    value = secrets.token_urlsafe(32)
    await users.create_session(db, session_id(value), user.id, secrets.token_hex(32), now,
                               timedelta(hours=settings.console.session_hours))
    return value


@dataclass(frozen=True)
class Found:
    """The session of a request's cookie, or None; `idle` when there was one that has
    now ended for want of use (its row is deleted)."""

    session: Session | None
    idle: bool = False


async def current_session(db: Database, cookie_value: str | None, now: datetime,
                          idle_after: timedelta) -> Found:
    """The live session of a cookie. One unused for `idle_after` is ended (deleted). A
    used one has its last_seen_at moved to `now` if that is TOUCH_EVERY or more behind."""
    if not cookie_value or len(cookie_value) > 200:
        return Found(None)
    session = await users.load_session(db, session_id(cookie_value), now)
    if session is None:
        return Found(None)
    seen = session.last_seen_at or now
    if now - seen >= idle_after:
        await users.delete_session(db, session.id)
        return Found(None, idle=True)
    if now - seen >= TOUCH_EVERY:
        await users.touch_session(db, session.id, now)
    return Found(session)
