"""Console accounts, the pure part (worker.console.accounts): names, password rules,
Argon2id hashes and their rehash, the lockout arithmetic, what each role may do; and the
form tokens of worker.console.auth."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from argon2 import PasswordHasher

from worker.console import accounts
from worker.console.auth import form_token, form_token_ok, session_id

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("name", ["ada", "eva.lind", "o_l-le", "ops@example.se", "a" * accounts.MAX_NAME])
def test_good_names(name):
    assert accounts.name_problem(name) is None


@pytest.mark.parametrize("name", ["", "Ada", "eva lind", ".dot", "-dash", "a" * (accounts.MAX_NAME + 1), "åsa",
                                  "x/y", "a\nb"])
def test_bad_names(name):
    assert accounts.name_problem(name)


def test_the_operator_name_fits_the_update_schema():
    # An update's `operator` is at most 64 characters (docs/update.schema.json).
    assert len("console:" + "a" * accounts.MAX_NAME) <= 64


@pytest.mark.parametrize("password, why", [
    ("", "at least 12"), ("elva tecken", "at least 12"), (" " * 12, "only spaces"),
    ("x" * (accounts.MAX_PASSWORD + 1), "at most"),
])
def test_password_rules(password, why):
    assert why in (accounts.password_problem(password) or "")


def test_a_password_may_not_be_the_user_name():
    assert "user name" in accounts.password_problem("olle.svensson", "olle.svensson")
    assert accounts.password_problem("olle.svensson!", "olle.svensson") is None
    assert accounts.password_problem("x" * 12) is None


def test_roles():
    assert accounts.role_problem("operator") is None and accounts.role_problem("root")
    assert not accounts.may("viewer", accounts.ACT) and not accounts.may("viewer", accounts.RIGHTS)
    assert accounts.may("operator", accounts.ACT) and not accounts.may("operator", accounts.RIGHTS)
    assert accounts.may("admin", accounts.ACT) and accounts.may("admin", accounts.RIGHTS)
    assert not accounts.may("root", accounts.ACT)


def test_hashes_are_argon2id_salted_and_checked():
    first, second = accounts.hash_password("correct horse battery"), accounts.hash_password("correct horse battery")
    assert first.startswith("$argon2id$") and first != second            # a fresh salt each time
    assert "correct horse" not in first
    assert accounts.check_password(first, "correct horse battery") == (True, False)
    assert accounts.check_password(first, "correct horse batterY") == (False, False)
    assert accounts.check_password("not a hash", "correct horse battery") == (False, False)
    assert accounts.check_password(first, "x" * (accounts.MAX_PASSWORD + 1)) == (False, False)


def test_a_hash_made_with_old_parameters_verifies_and_asks_to_be_made_again():
    old = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("correct horse battery")
    assert accounts.check_password(old, "correct horse battery") == (True, True)
    assert accounts.check_password(old, "wrong horse battery") == (False, False)


def test_the_lockout_arithmetic():
    failed, locked = 0, None
    for i in range(1, 5):
        failed, locked = accounts.after_failure(failed, T0, 5, 15)
        assert (failed, locked) == (i, None)
    failed, locked = accounts.after_failure(failed, T0, 5, 15)
    assert (failed, locked) == (0, T0 + timedelta(minutes=15))       # the fifth locks, and the count starts again
    assert accounts.is_locked(locked, T0 + timedelta(minutes=14, seconds=59))
    assert not accounts.is_locked(locked, T0 + timedelta(minutes=15))
    assert not accounts.is_locked(None, T0)
    assert accounts.after_failure(0, T0, 1, 0.5) == (0, T0 + timedelta(seconds=30))


def test_form_tokens_belong_to_their_session():
    secret, other = "a" * 64, "b" * 64
    token = form_token(secret)
    assert form_token_ok(secret, token)
    assert not form_token_ok(other, token)
    assert not form_token_ok(secret, token[:-1] + ("0" if token[-1] != "0" else "1"))
    assert not form_token_ok(secret, None) and not form_token_ok(secret, "")
    assert secret not in token


def test_only_the_hash_of_a_session_cookie_is_kept():
    stored = session_id("cookie-value")
    assert len(stored) == 64 and "cookie-value" not in stored and stored == session_id("cookie-value")
