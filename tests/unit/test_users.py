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
    assert [accounts.may(r, accounts.USERS) for r in ("viewer", "operator", "admin", "root")] == \
        [False, False, True, False]


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


# -- generated passwords and the per-client sign-in limit (worker.console.throttle) --------------------


def test_a_generated_password_passes_the_rules_and_is_new_each_time():
    made = {accounts.generate_password() for _ in range(200)}
    assert len(made) == 200
    for password in made:
        assert accounts.password_problem(password, "ada") is None
        assert len(password.replace("-", "")) == 20 and not set(password) & set("0O1lI")


def test_a_bucket_allows_its_burst_then_refills_at_its_rate():
    from worker.console.throttle import SignInLimit

    limit = SignInLimit(per_minute=6, burst=3, capacity=100)
    assert [limit.take("a", T0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limit.take("a", T0) == pytest.approx(10.0)           # one attempt back in 10 s
    assert limit.take("b", T0) == 0.0                            # another client has its own
    assert limit.take("a", T0 + timedelta(seconds=9)) == pytest.approx(1.0)
    assert limit.take("a", T0 + timedelta(seconds=10)) == 0.0
    assert limit.take("a", T0 + timedelta(seconds=10)) > 0
    # A long pause fills the bucket to its burst, no further.
    later = T0 + timedelta(hours=5)
    assert [limit.take("a", later) == 0.0 for _ in range(4)] == [True, True, True, False]


def test_a_flood_of_addresses_keeps_the_table_bounded():
    from worker.console.throttle import SignInLimit

    limit = SignInLimit(per_minute=1, burst=1, capacity=100)
    assert limit.take("attacker", T0) == 0.0 and limit.take("attacker", T0) > 0
    for n in range(10_000):
        limit.take(f"10.0.{n // 256}.{n % 256}", T0)
        assert len(limit) <= 100
    assert len(limit) == 100
    # The least recently seen are forgotten first: a client seen now stays.
    limit.take("recent", T0)
    limit.take("10.9.9.9", T0)
    assert limit.take("recent", T0) > 0


@pytest.mark.parametrize("peer, key", [
    ("192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),               # the same /64, the same bucket
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("fe80::1%eth0", "fe80::/64"),
    (None, "?"), ("", "?"), ("not an address", "?"),
])
def test_the_client_key(peer, key):
    from worker.console.throttle import client_key

    assert client_key(peer) == key
