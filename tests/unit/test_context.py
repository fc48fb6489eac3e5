"""handlers.context.Context: what deciding code knows, built once from the settings."""

from __future__ import annotations

import pickle

import pytest

from handlers.context import ComplaintScope, Context
from handlers.routing import Mailbox
from tests.conftest import make_settings

SECRET = "k" * 40


def test_it_carries_the_settings_the_handlers_need() -> None:
    settings = make_settings(UNSUBD_BOUNCE_DOMAIN="b.example.org", UNSUBD_COMPLAINT_SCOPE="all",
                             UNSUBD_TRUSTED_AUTHSERV_IDS='["mx1.mail.example.org"]')
    ctx = Context.from_settings(settings)
    assert ctx.mail_domain == settings.mail_domain and ctx.effective_bounce_domain == "b.example.org"
    assert set(ctx.units) == set(settings.units) and ctx.units["alumni"] is settings.units["alumni"]
    assert ctx.complaint_scope is ComplaintScope.ALL
    assert ctx.trusted_authserv_ids == ("mx1.mail.example.org",)
    assert ctx.bounces is settings.bounces and ctx.complaints is settings.complaints
    assert ctx.keyring is None                       # no token keys configured: no token verifies


def test_routing_table_and_unit_names_are_built_once() -> None:
    ctx = Context.from_settings(make_settings(UNSUBD_BOUNCE_DOMAIN="b.example.org"))
    assert ctx.router("bounces+x@b.example.org").mailbox is Mailbox.BOUNCE
    assert ctx.router(f"{ctx.reply_local}@{ctx.mail_domain}").mailbox is Mailbox.REPLY
    assert ctx.router("someone@elsewhere.example") is None
    assert ctx.router is ctx.router and "Alumninytt" in ctx.unit_names["alumni"]
    with pytest.raises(TypeError):
        ctx.unit_names["alumni"] = ()              # type: ignore[index]  # read-only
    with pytest.raises(AttributeError):
        ctx.mail_domain = "other.example"          # type: ignore[misc]   # frozen


def test_keys_make_a_keyring() -> None:
    ctx = Context.from_settings(make_settings(UNSUBD_TOKENS__KEYS=f'{{"k1": "{SECRET}"}}'))
    assert ctx.keyring is not None and ctx.keyring.active == "k1"


def test_it_pickles_for_the_parser_processes() -> None:
    ctx = Context.from_settings(make_settings(UNSUBD_TOKENS__KEYS=f'{{"k1": "{SECRET}"}}'))
    copy = pickle.loads(pickle.dumps(ctx))
    assert copy == ctx and copy.router("postmaster@" + ctx.mail_domain).mailbox is Mailbox.POSTMASTER
    assert dict(copy.unit_names) == dict(ctx.unit_names) and copy.keyring.active == "k1"


def test_classify_refuses_anything_but_a_context() -> None:
    from handlers.classify import classify
    from handlers.model import Inbound
    from tests.support.reply_samples import NOW

    with pytest.raises(TypeError, match="Context.from_settings"):
        classify(Inbound.from_file(b"Subject: x\n\nhi\n", "t", NOW), make_settings(), NOW)  # type: ignore[arg-type]
