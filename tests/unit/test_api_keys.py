"""API keys with names and scopes (issue 24, item 5): settings validation and the route-scope table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import config
from worker.ingress import api_auth

LONG = "0123456789abcdef"          # 16 characters, the shortest key allowed


def keys_of(settings):
    return [(k.name, k.key.get_secret_value(), k.scopes) for k in settings.api_keys]


def test_plain_strings_are_named_by_position_with_read_and_write():
    s = config.load({"UNSUBD_API_KEYS": json.dumps([LONG, LONG + "x"])})
    assert keys_of(s) == [("key-1", LONG, ("read", "write")), ("key-2", LONG + "x", ("read", "write"))]


def test_tables_give_names_and_scopes_in_the_environment_and_in_the_file(tmp_path: Path):
    env = json.dumps([{"name": "crm", "key": LONG, "scopes": ["read"]}, LONG + "-plain"])
    s = config.load({"UNSUBD_API_KEYS": env})
    assert keys_of(s) == [("crm", LONG, ("read",)), ("key-2", LONG + "-plain", ("read", "write"))]
    f = tmp_path / "c.toml"
    f.write_text(f'http_host = "0.0.0.0"\n[[api_keys]]\nname = "dpo"\nkey = "{LONG}"\n'
                 f'scopes = ["read", "write", "admin"]\n')
    s = config.load({}, f)
    assert keys_of(s) == [("dpo", LONG, ("read", "write", "admin"))] and s.http_host == "0.0.0.0"
    assert LONG not in repr(s.api_keys)                  # a key never shows in a repr or a log line


@pytest.mark.parametrize("keys, words", [
    (["short-key"], ["api_keys", "'key-1' is too short", "16"]),
    ([{"name": "crm", "key": "x" * 15}], ["api_keys", "'crm' is too short"]),
    ([{"name": "crm", "key": LONG, "scopes": ["read", "root"]}], ["api_keys", "'root'", "read, write, admin"]),
    ([{"name": "crm", "key": LONG}, {"name": "crm", "key": LONG + "1"}], ["api_keys", "unique", "crm"]),
    ([LONG, {"name": "b", "key": LONG}], ["api_keys", "same"]),
    ([{"name": "has space", "key": LONG}], ["api_keys", "key name"]),
    ([{"key": LONG}], ["api_keys.name"]),
])
def test_bad_keys_are_refused_with_a_message_naming_the_setting(keys, words):
    with pytest.raises(config.ConfigError) as info:
        config.load({"UNSUBD_API_KEYS": json.dumps(keys)})
    message = str(info.value)
    for word in words:
        assert word in message, message
    assert "short-key" not in message and "x" * 15 not in message       # never the secret itself


def test_without_keys_the_api_stays_on_loopback():
    with pytest.raises(config.ConfigError, match="api_keys"):
        config.load({"UNSUBD_HTTP_HOST": "0.0.0.0"})
    assert config.load({"UNSUBD_HTTP_HOST": "0.0.0.0", "UNSUBD_API_KEYS": json.dumps([LONG])}).api_keys


def test_route_scopes_and_the_safe_default():
    assert api_auth.scope_for("GET", "/v1/contacts/{address}/export") == "read"
    assert api_auth.scope_for("HEAD", "/v1/updates") == "read"
    assert api_auth.scope_for("POST", "/v1/tokens") == "write"
    assert api_auth.scope_for("POST", "/v1/contacts/{address}/erase") == "admin"
    assert api_auth.scope_for("POST", "/v1/contacts/{address}/change-address") == "admin"
    assert api_auth.scope_for("GET", "/v1/something-new") == "read"
    assert api_auth.scope_for("POST", "/v1/something-new") == "admin"      # undeclared changes need admin
    assert api_auth.scope_for("DELETE", None) == "admin"
    assert set(api_auth.ROUTE_SCOPES.values()) <= set(config.settings.API_SCOPES)


def test_match_key_finds_the_key_and_nothing_else():
    s = config.load({"UNSUBD_API_KEYS": json.dumps([{"name": "a", "key": LONG}, {"name": "b", "key": LONG + "b"}])})
    assert api_auth.match_key(LONG + "b", s.api_keys).name == "b"
    assert api_auth.match_key(LONG, s.api_keys).name == "a"
    assert api_auth.match_key(LONG[:-1], s.api_keys) is None and api_auth.match_key(None, s.api_keys) is None


def test_every_v1_route_of_the_app_declares_its_scope():
    from worker.ingress.http import build_app

    settings = config.load({"UNSUBD_API_KEYS": json.dumps([LONG])})
    app = build_app(settings, None, None, keyring=None)                # type: ignore[arg-type]
    undeclared = []
    for route in app.router.routes():
        pattern = route.resource.canonical if route.resource is not None else ""
        if pattern.startswith("/v1/") and route.method not in ("HEAD", "OPTIONS") \
                and (route.method, pattern) not in api_auth.ROUTE_SCOPES:
            undeclared.append(f"{route.method} {pattern}")
    assert undeclared == [], "add them to worker.ingress.api_auth.ROUTE_SCOPES"
