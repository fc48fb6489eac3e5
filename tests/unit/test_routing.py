"""RCPT routing: only our own mailboxes are accepted (no relay)."""

import pytest

from handlers.context import Context
from handlers.routing import Mailbox, Router
from tests.conftest import make_settings


@pytest.fixture(scope="module")
def router():
    return Router(make_settings())


@pytest.mark.parametrize("address, mailbox, unit, tag", [
    ("bounces@mail.example.org", Mailbox.BOUNCE, None, None),
    ("BOUNCES+per.ek=kommun-vast.example@Mail.Example.Org", Mailbox.BOUNCE, None, "per.ek=kommun-vast.example"),
    ("reply@mail.example.org", Mailbox.REPLY, None, None),
    ("reply+x1@mail.example.org", Mailbox.REPLY, None, "x1"),
    ("fbl@mail.example.org", Mailbox.FBL, None, None),
    ("unsubscribe+tok.en@mail.example.org", Mailbox.UNSUBSCRIBE, None, "tok.en"),
    ("alumni@mail.example.org", Mailbox.UNIT, "alumni", None),
    ("forskning+a@mail.example.org", Mailbox.UNIT, "research-news", "a"),
    ("postmaster@mail.example.org", Mailbox.POSTMASTER, None, None),
    ("<reply@mail.example.org>", Mailbox.REPLY, None, None),
    ("reply@mail.example.org.", Mailbox.REPLY, None, None),
])
def test_our_mailboxes_are_accepted(router, address, mailbox, unit, tag):
    route = router(address)
    assert route is not None
    assert (route.mailbox, route.unit, route.tag) == (mailbox, unit, tag)


@pytest.mark.parametrize("address", [
    "someone@example.com", "reply@example.org", "reply@evil.mail.example.org", "replies@mail.example.org",
    "reply@mail.example.org@evil.example", '"reply"@mail.example.org', "@mail.example.org", "reply",
    "", "reply@mail.example.org\r\nRCPT TO:<x@y>", "postmaster+x@mail.example.org",
    "@relay.example:reply@mail.example.org", "reply@mail.example.org, victim@example.com",
    "a" * 600 + "@mail.example.org",
])
def test_anything_else_is_refused(router, address):
    assert router(address) is None
