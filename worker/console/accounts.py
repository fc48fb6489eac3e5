"""Console accounts, the pure part: user names, password rules, Argon2id hashes, the
lockout arithmetic and what each role may do. No I/O here; the rows are written by
worker.store.users.

Lockout (decided here, documented in the README's Console section): after
`lockout_after` wrong passwords in a row an account is locked for `lockout_minutes`.
While it is locked, the password is not even checked, and the answer is the same as
for a wrong password or an unknown name. Telling "locked" apart after a correct
password would let an attacker keep guessing during the lockout and learn when a guess
was right, which is what the lockout is there to stop. The sign-in page says in its
general text that repeated wrong passwords lock the account and that an admin can
unlock it (`unsubd users reset NAME`); that is all anyone learns.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

ROLES = ("viewer", "operator", "admin")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024             # longer input is refused before hashing (hashing cost is per byte)
# "console:NAME" is the operator of the user's actions, at most 64 characters in an update.
MAX_NAME = 56
NAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,%d}" % (MAX_NAME - 1))

# What a role may do, each role including the ones before it in ROLES.
ACT = "act"                     # release, opt in, note, settle review, replay parked
RIGHTS = "rights"               # export and erase for a rights request
USERS = "users"                 # the users page: add, disable, enable, reset, change role
PERMISSIONS = {"viewer": frozenset(), "operator": frozenset({ACT}), "admin": frozenset({ACT, RIGHTS, USERS})}

# Argon2id with argon2-cffi's defaults (RFC 9106's second recommended option). A hash
# made with other parameters verifies, and is replaced at the next sign-in.
HASHER = PasswordHasher()
# A hash of a password nobody has: checked for unknown names and locked accounts so that
# every refusal costs the same time.
_DUMMY = HASHER.hash("not a password: equalises the time of every refusal")


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a user name, or None. Names are lower case: a-z, 0-9 and . _ @ -,
    starting with a letter or digit, at most MAX_NAME characters."""
    if not NAME.fullmatch(name):
        return (f"a user name is 1 to {MAX_NAME} characters: lower-case letters, digits and . _ @ -, "
                "starting with a letter or digit")
    return None


def password_problem(password: str, name: str = "") -> str | None:
    """Why `password` is not acceptable, or None: at least MIN_PASSWORD characters, at most
    MAX_PASSWORD, not only spaces, and not the user name."""
    if len(password) < MIN_PASSWORD:
        return f"a password needs at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"a password may have at most {MAX_PASSWORD} characters"
    if not password.strip():
        return "a password cannot be only spaces"
    if name and password.strip().lower() == name.lower():
        return "a password cannot be the user name"
    return None


def role_problem(role: str) -> str | None:
    return None if role in ROLES else f"the role is one of {', '.join(ROLES)}"


def generate_password() -> str:
    """A new password for someone to change or keep: 20 characters from a 31-letter
    alphabet without look-alikes (0/O, 1/l/I), about 100 bits, in groups of five."""
    letters = "abcdefghjkmnpqrstuvwxyz23456789"
    raw = "".join(secrets.choice(letters) for _ in range(20))
    return "-".join(raw[i:i + 5] for i in range(0, 20, 5))


def hash_password(password: str) -> str:
    """An Argon2id hash of `password` in PHC string form (salt and parameters inside)."""
    return HASHER.hash(password)


def check_password(stored: str, password: str) -> tuple[bool, bool]:
    """(the password matches, the hash should be made again with today's parameters).

    A stored value that is not an Argon2 hash never matches. Input longer than
    MAX_PASSWORD is not hashed at all (it cannot be a password we accepted).
    """
    if len(password) > MAX_PASSWORD:
        return False, False
    try:
        HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, False
    return True, HASHER.check_needs_rehash(stored)


def spend_equal_time(password: str) -> None:
    """Verify against a hash nobody has, so that refusing an unknown or locked name takes as
    long as refusing a wrong password."""
    check_password(_DUMMY, password[:MAX_PASSWORD])


def is_locked(locked_until: datetime | None, now: datetime) -> bool:
    return locked_until is not None and now < locked_until


def after_failure(failed: int, now: datetime, lockout_after: int,
                  lockout_minutes: float) -> tuple[int, datetime | None]:
    """The (failed count, locked until) after one more wrong password.

    The `lockout_after`-th wrong password in a row locks the account for
    `lockout_minutes` and starts the count again, so that after the lock each new run of
    wrong passwords locks it again.
    """
    failed += 1
    if failed >= lockout_after:
        return 0, now + timedelta(minutes=lockout_minutes)
    return failed, None


def may(role: str, what: str) -> bool:
    """Whether a user with `role` may do `what` (ACT or RIGHTS). An unknown role may do nothing."""
    return what in PERMISSIONS.get(role, frozenset())
