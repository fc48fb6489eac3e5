"""Console users and their sessions: the rows of console_user and console_session.

Staff accounts, not data subjects (worker.store.personal_data). The rules (names,
passwords, hashes, the lockout arithmetic) are in worker.console.accounts; this module
only reads and writes rows, each change in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from worker.store.database import Database
from worker.store.models import ConsoleSession, ConsoleUser


class UserExists(ValueError):
    """A user of that name exists already."""


class LastAdmin(ValueError):
    """The change would leave no admin who can sign in; nothing was changed."""


@dataclass(frozen=True)
class User:
    """A console user as the console sees it (no password hash)."""

    id: int
    name: str
    role: str
    disabled: bool
    failed_logins: int
    locked_until: datetime | None
    created_at: datetime
    last_sign_in_at: datetime | None = None


@dataclass(frozen=True)
class Session:
    """A signed-in session and its user."""

    id: str                     # SHA-256 (hex) of the cookie's value
    csrf_secret: str
    expires_at: datetime
    user: User
    last_seen_at: datetime | None = None


def _user(row: ConsoleUser) -> User:
    return User(id=row.id, name=row.name, role=row.role, disabled=row.disabled, failed_logins=row.failed_logins,
                locked_until=row.locked_until, created_at=row.created_at, last_sign_in_at=row.last_sign_in_at)


async def add_user(db: Database, name: str, password_hash: str, role: str, now: datetime) -> User:
    """Create a user. Raises UserExists when the name is taken."""
    try:
        async with db.transaction() as s:
            if await s.scalar(select(ConsoleUser.id).where(ConsoleUser.name == name)) is not None:
                raise UserExists(f"a user named {name!r} exists already")
            row = ConsoleUser(name=name, password_hash=password_hash, role=role, disabled=False, failed_logins=0,
                              locked_until=None, created_at=now, updated_at=now)
            s.add(row)
            await s.flush()
            return _user(row)
    except IntegrityError:
        raise UserExists(f"a user named {name!r} exists already") from None


async def find_user(db: Database, name: str) -> tuple[User, str] | None:
    """The user of that name and their password hash, or None."""
    async with db.sessions() as s:
        row = await s.scalar(select(ConsoleUser).where(ConsoleUser.name == name))
        return (_user(row), row.password_hash) if row is not None else None


async def list_users(db: Database) -> list[User]:
    async with db.sessions() as s:
        return [_user(r) for r in (await s.scalars(select(ConsoleUser).order_by(ConsoleUser.name))).all()]


async def _keep_an_admin(s: Any, user_id: int) -> None:
    """Raise LastAdmin unless some admin other than `user_id` can still sign in. The admin
    rows are locked while this is read (PostgreSQL; SQLite has one writer), so that two
    admins demoting each other at the same moment cannot both succeed."""
    others = (await s.scalars(select(ConsoleUser.id).where(ConsoleUser.role == "admin",
                                                          ConsoleUser.disabled.is_(False),
                                                          ConsoleUser.id != user_id).with_for_update())).all()
    if not others:
        raise LastAdmin("no other admin could sign in; make another user an admin first")


async def set_disabled(db: Database, name: str, disabled: bool, now: datetime, keep_an_admin: bool = False) -> bool:
    """Disable (or enable) a user; disabling ends their sessions. False when there is no such user.
    With `keep_an_admin`, disabling the last admin who can sign in raises LastAdmin."""
    async with db.transaction() as s:
        row = await s.scalar(select(ConsoleUser).where(ConsoleUser.name == name).with_for_update())
        if row is None:
            return False
        if disabled and keep_an_admin and row.role == "admin" and not row.disabled:
            await _keep_an_admin(s, row.id)
        await s.execute(update(ConsoleUser).where(ConsoleUser.id == row.id)
                        .values(disabled=disabled, updated_at=now))
        if disabled:
            await s.execute(delete(ConsoleSession).where(ConsoleSession.user_id == row.id))
        return True


async def set_role(db: Database, name: str, role: str, now: datetime, keep_an_admin: bool = False) -> bool:
    """A new role; the user's sessions go on with it (each request reads the role afresh).
    False when there is no such user. With `keep_an_admin`, demoting the last admin who can
    sign in raises LastAdmin."""
    async with db.transaction() as s:
        row = await s.scalar(select(ConsoleUser).where(ConsoleUser.name == name).with_for_update())
        if row is None:
            return False
        if keep_an_admin and row.role == "admin" and role != "admin" and not row.disabled:
            await _keep_an_admin(s, row.id)
        await s.execute(update(ConsoleUser).where(ConsoleUser.id == row.id).values(role=role, updated_at=now))
        return True


async def set_password(db: Database, name: str, password_hash: str, now: datetime, role: str | None = None,
                       keep_session: str | None = None) -> bool:
    """A new password (and, given `role`, a new role): unlocks the account, clears its
    failures and ends its sessions, except `keep_session` (the session of a user who
    changes their own password). False when there is no such user."""
    async with db.transaction() as s:
        user_id = await s.scalar(select(ConsoleUser.id).where(ConsoleUser.name == name))
        if user_id is None:
            return False
        values: dict[str, object] = {"password_hash": password_hash, "failed_logins": 0, "locked_until": None,
                                     "updated_at": now}
        if role is not None:
            values["role"] = role
        await s.execute(update(ConsoleUser).where(ConsoleUser.id == user_id).values(**values))
        ended = delete(ConsoleSession).where(ConsoleSession.user_id == user_id)
        if keep_session is not None:
            ended = ended.where(ConsoleSession.id != keep_session)
        await s.execute(ended)
        return True


async def record_failure(db: Database, user_id: int, now: datetime,
                         step: Callable[[int], tuple[int, datetime | None]]) -> datetime | None:
    """Count one wrong password: `step(failed)` gives the new count and lock time
    (worker.console.accounts.after_failure). The row is locked while it is read and written
    (PostgreSQL; SQLite has one writer), so that failures at the same moment all count.
    Returns the time the account is locked until, or None."""
    async with db.transaction() as s:
        row = await s.scalar(select(ConsoleUser).where(ConsoleUser.id == user_id).with_for_update())
        if row is None:
            return None
        failed, locked_until = step(row.failed_logins)
        row.failed_logins = failed
        if locked_until is not None:
            row.locked_until = locked_until
        row.updated_at = now
        return locked_until


async def record_success(db: Database, user_id: int, now: datetime, new_hash: str | None = None) -> None:
    """A correct password: the failure count starts again (and the hash is replaced, when
    its parameters are out of date)."""
    values: dict[str, object] = {"failed_logins": 0, "locked_until": None, "updated_at": now,
                                 "last_sign_in_at": now}
    if new_hash is not None:
        values["password_hash"] = new_hash
    async with db.transaction() as s:
        await s.execute(update(ConsoleUser).where(ConsoleUser.id == user_id).values(**values))


async def create_session(db: Database, session_id: str, user_id: int, csrf_secret: str, now: datetime,
                         lifetime: timedelta) -> None:
    """Store a new session (its id is the cookie's hash), and drop every expired one."""
    async with db.transaction() as s:
        await s.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
        s.add(ConsoleSession(id=session_id, user_id=user_id, csrf_secret=csrf_secret, created_at=now,
                             last_seen_at=now, expires_at=now + lifetime))


async def load_session(db: Database, session_id: str, now: datetime) -> Session | None:
    """The session with that id and its user, or None when it is unknown, expired, or its
    user is disabled. (Whether it has been idle too long is the caller's rule:
    worker.console.auth.current_session.)"""
    async with db.sessions() as s:
        found = (await s.execute(select(ConsoleSession, ConsoleUser)
                                 .join(ConsoleUser, ConsoleUser.id == ConsoleSession.user_id)
                                 .where(ConsoleSession.id == session_id))).first()
    if found is None:
        return None
    session, user = found
    if session.expires_at <= now or user.disabled:
        return None
    return Session(id=session.id, csrf_secret=session.csrf_secret, expires_at=session.expires_at, user=_user(user),
                   last_seen_at=session.last_seen_at)


async def touch_session(db: Database, session_id: str, now: datetime) -> None:
    """The session was used at `now` (worker.console.auth calls this at most once a minute per session)."""
    async with db.transaction() as s:
        await s.execute(update(ConsoleSession).where(ConsoleSession.id == session_id).values(last_seen_at=now))


async def delete_session(db: Database, session_id: str) -> None:
    async with db.transaction() as s:
        await s.execute(delete(ConsoleSession).where(ConsoleSession.id == session_id))
