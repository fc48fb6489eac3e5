"""Reports are believed in proportion to their proof (issue 22, item 4).

Three attacks that worked before: one DSN to the plain bounces@ address naming 10,000
recipients suppressed 1,000 addresses; an ARF report sent to fbl@ by anyone suppressed
and unsubscribed its recipients; three soft bounces to a tampered return-path tag
suppressed an address. Every sample here is generated in this file; the DKIM key pair
is made by the test, and its public key reaches handlers through the lookup function.
"""

from __future__ import annotations

import base64
import random
import time
from datetime import datetime, timedelta, timezone

import dkim
import pytest
from sqlalchemy import func, select

from handlers.context import Context
from handlers.state.apply import apply
from handlers.complaints.arf import authenticate_source
from handlers.classify import SUSPECT, classify
from handlers.mail.message import parse_message
from handlers.model import ActionType, Decision, Inbound, Kind
from handlers.state.plan import BouncePolicy
from handlers.tokens import Keyring, return_path, sign_return_path
from worker.store.models import Event, Preference, SoftBounce, Suppression
from tests.conftest import make_settings

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
SOURCE = "fbl.example-mailbox.com"
SECRET = "t" * 40
KEYS = f'{{"k1": "{SECRET}"}}'
K1 = Keyring({"k1": SECRET.encode()}, "k1")
FBL = make_settings(UNSUBD_COMPLAINTS__FBL_SOURCES=f'["{SOURCE}"]',
                    UNSUBD_TRUSTED_AUTHSERV_IDS='["mx.mail.example.org"]', UNSUBD_TOKENS__KEYS=KEYS)
FBL_CTX = Context.from_settings(FBL)
PLAIN = "bounces@mail.example.org"


# --------------------------------------------------------------------------- an RSA key pair, made here

def _der_int(n: int) -> bytes:
    body = n.to_bytes(n.bit_length() // 8 + 1, "big")
    return b"\x02" + _der_len(len(body)) + body


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der_seq(*items: bytes) -> bytes:
    body = b"".join(items)
    return b"\x30" + _der_len(len(body)) + body


def _probable_prime(bits: int, rng: random.Random) -> int:
    while True:
        n = rng.getrandbits(bits) | (3 << (bits - 2)) | 1      # top two bits set: the product has 2*bits bits
        if all(n % p for p in (3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)) and _miller_rabin(n, rng):
            return n


def _miller_rabin(n: int, rng: random.Random, rounds: int = 24) -> bool:
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(rounds):
        x = pow(rng.randrange(2, n - 2), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def make_key_pair(seed: int) -> tuple[bytes, bytes]:
    """(PEM PKCS#1 private key, DKIM TXT record) of a 1024-bit RSA key (RFC 8017, RFC 6376 3.6.1)."""
    rng = random.Random(seed)
    e = 65537
    while True:
        p, q = _probable_prime(512, rng), _probable_prime(512, rng)
        phi = (p - 1) * (q - 1)
        if p != q and phi % e:
            break
    n, d = p * q, pow(e, -1, phi)
    private = _der_seq(*map(_der_int, (0, n, e, d, p, q, d % (p - 1), d % (q - 1), pow(q, -1, p))))
    b64 = base64.b64encode(private).decode()
    pem = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
    pem += "\n-----END RSA PRIVATE KEY-----\n"
    public = base64.b64encode(_der_seq(_der_int(n), _der_int(e))).decode()
    return pem.encode(), f"v=DKIM1; k=rsa; p={public}".encode()


PRIVATE, RECORD = make_key_pair(22)
ATTACKER_PRIVATE, _ = make_key_pair(666)
PUBLISHED = {f"fbl._domainkey.{SOURCE}": RECORD}


def lookup(name: str) -> bytes | None:
    """The DNS of this test: only the feedback loop's published key."""
    return PUBLISHED.get(name.rstrip(".").lower())


def dkim_signed(raw: bytes, key: bytes = PRIVATE, domain: str = SOURCE) -> bytes:
    header = dkim.sign(raw, b"fbl", domain.encode(), key,
                       include_headers=[b"from", b"to", b"subject", b"mime-version", b"content-type"])
    return header + raw


# --------------------------------------------------------------------------- samples

def arf(recipient: str = "kari@example.no", sender: str = f"reports@{SOURCE}", extra: str = "") -> bytes:
    """An RFC 5965 abuse report about one of the alumni unit's mailings."""
    text = (f"{extra}From: {sender}\r\nTo: fbl@mail.example.org\r\nSubject: complaint about a message\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: multipart/report; report-type=feedback-report; boundary=ff\r\n\r\n"
            "--ff\r\nContent-Type: text/plain\r\n\r\nA user marked this message as spam.\r\n"
            "--ff\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: loop/2\r\n"
            f"Version: 1\r\nOriginal-Rcpt-To: {recipient}\r\n\r\n"
            "--ff\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: Alumni <alumni@mail.example.org>\r\n"
            f"To: {recipient}\r\nList-Id: Alumni <alumni.mail.example.org>\r\n"
            "Message-ID: <n1@mail.example.org>\r\nSubject: Alumninytt\r\n\r\n--ff--\r\n")
    return text.encode()


def dsn(recipients: list[str], status: str = "5.1.1", message_id: str = "<m1@mail.example.org>") -> bytes:
    """An RFC 3464 report with one group per recipient, returning headers of our own mail."""
    groups = "".join(f"Final-Recipient: rfc822; {r}\r\nAction: failed\r\nStatus: {status}\r\n\r\n"
                     for r in recipients)
    return ("From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\nTo: bounces@mail.example.org\r\n"
            "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/report; report-type=delivery-status; boundary=dd\r\n\r\n"
            "--dd\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
            "--dd\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"
            f"{groups}"
            "--dd\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: Alumni <alumni@mail.example.org>\r\n"
            f"Message-ID: {message_id}\r\nSubject: Alumninytt\r\n\r\n--dd--\r\n").encode()


def smtp(raw: bytes, rcpt: str, mail_from: str = "") -> Inbound:
    return Inbound.from_smtp(raw, mail_from, [rcpt], NOW)


async def count(database, model, *where) -> int:
    async with database.sessions() as s:
        return await s.scalar(select(func.count()).select_from(model).where(*where))


# --------------------------------------------------------------------------- 1. DSN naming too many

async def test_a_dsn_to_the_plain_address_naming_10000_recipients_suppresses_nobody(database):
    victims = [f"victim{i}@example.se" for i in range(10_000)]
    d = classify(smtp(dsn(victims), PLAIN), FBL_CTX, NOW)
    assert d.kind is Kind.BOUNCE and d.review and d.actions == ()
    assert "names 1000 recipients" in d.reason and "of 10000 recipient groups" in d.reason
    rows = d.evidence["recipients"]
    assert len(rows) == 1000 and rows[0]["proposed"] == "suppress" and rows[0]["outcome"] is None
    assert d.evidence["suspect"] == ["bounce_implausible_recipients"]
    await apply(d, database.unit_of_work(), NOW)
    assert await count(database, Suppression) == 0 and await count(database, SoftBounce) == 0
    assert await count(database, Event) == 1


@pytest.mark.parametrize("n, acts", [(1, True), (5, True), (6, False), (50, False)])
def test_the_limit_is_what_one_message_plausibly_had(n, acts):
    d = classify(smtp(dsn([f"r{i}@example.se" for i in range(n)]), PLAIN), FBL_CTX, NOW)
    assert (len(d.actions) == n and not d.review) if acts else (d.actions == () and d.review)
    assert (f"names {n} recipients" in d.reason) is not acts


def test_the_limit_is_a_setting():
    wide = make_settings(UNSUBD_BOUNCES__MAX_RECIPIENTS_PER_REPORT="10")
    d = classify(smtp(dsn([f"r{i}@example.se" for i in range(8)]), PLAIN), Context.from_settings(wide), NOW)
    assert len(d.actions) == 8 and not d.review


def test_a_text_bounce_naming_many_goes_to_review_too():
    notice = ("From: MAILER-DAEMON@mx.example.net\r\nTo: bounces@mail.example.org\r\nSubject: failure notice\r\n\r\n"
              "Hi. This is the qmail-send program at mx.example.net.\r\n"
              "I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
              "This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n"
              + "".join(f"<v{i}@example.se>:\r\n550 5.1.1 mailbox does not exist\r\n\r\n" for i in range(40)))
    d = classify(smtp(notice.encode(), PLAIN), FBL_CTX, NOW)
    assert d.kind is Kind.BOUNCE and d.review and d.actions == () and "names 40 recipients" in d.reason


def test_with_a_signed_return_path_only_the_named_address_is_acted_on():
    signed = return_path(sign_return_path(42, "anna@example.se", "alumni", K1), "bounces", "mail.example.org")
    d = classify(smtp(dsn(["anna@example.se"] + [f"x{i}@example.se" for i in range(30)]), signed), FBL_CTX, NOW)
    assert [(a.type, a.address) for a in d.actions] == [(ActionType.SUPPRESS, "anna@example.se")]
    assert not d.review and d.verified and "bounce_implausible_recipients" in d.evidence["suspect"]


# --------------------------------------------------------------------------- 2. complaints need a proven source

def _complaint_state(database):
    return count(database, Suppression), count(database, Preference, Preference.state == "unsubscribed")


async def test_an_arf_from_an_unknown_sender_is_held_for_review(database):
    raw = arf(sender="abuse@somewhere.example")
    d = classify(smtp(raw, "fbl@mail.example.org", "abuse@somewhere.example"), FBL_CTX, NOW, dkim_lookup=lookup)
    assert d.kind is Kind.COMPLAINT and d.review and d.actions == ()
    held = {(a["type"], a["address"]) for a in d.evidence["held_actions"]}
    assert held == {("suppress", "kari@example.no"), ("unsubscribe", "kari@example.no")}
    assert d.evidence["suspect"] == ["complaint_unauthenticated"]
    await apply(d, database.unit_of_work(), NOW)
    assert [await c for c in _complaint_state(database)] == [0, 0]


def test_with_no_sources_configured_every_complaint_is_held():
    d = classify(smtp(dkim_signed(arf()), "fbl@mail.example.org"), Context.from_settings(make_settings()), NOW,
                 dkim_lookup=lookup)
    assert d.review and d.actions == () and "complaints.fbl_sources" in d.reason


async def test_a_dkim_signed_arf_from_a_configured_source_is_acted_on(database):
    d = classify(smtp(dkim_signed(arf()), "fbl@mail.example.org"), FBL_CTX, NOW, dkim_lookup=lookup)
    assert d.kind is Kind.COMPLAINT and not d.review
    assert {(a.type, a.address) for a in d.actions} == {(ActionType.SUPPRESS, "kari@example.no"),
                                                        (ActionType.UNSUBSCRIBE, "kari@example.no")}
    assert d.evidence["source_proof"]["how"] == "dkim" and "suspect" not in d.evidence
    await apply(d, database.unit_of_work(), NOW)
    assert [await c for c in _complaint_state(database)] == [1, 1]


@pytest.mark.parametrize("forgery", ["attacker's key", "recipient changed after signing", "signed body cut"])
async def test_a_forged_dkim_signature_is_held_for_review(database, forgery):
    if forgery == "attacker's key":
        raw = dkim_signed(arf(), key=ATTACKER_PRIVATE)
    elif forgery == "recipient changed after signing":
        raw = dkim_signed(arf("kari@example.no")).replace(b"kari@example.no", b"ceo@victim.example")
    else:
        raw = dkim_signed(arf()).replace(b"A user marked this message as spam.", b"A user marked this as spam.")
    d = classify(smtp(raw, "fbl@mail.example.org"), FBL_CTX, NOW, dkim_lookup=lookup)
    assert d.kind is Kind.COMPLAINT and d.review and d.actions == ()
    assert d.evidence["source_proof"]["bad_signature"] is True
    assert d.evidence["suspect"] == ["complaint_unauthenticated", "complaint_bad_signature"]
    await apply(d, database.unit_of_work(), NOW)
    assert [await c for c in _complaint_state(database)] == [0, 0]


def test_a_signature_of_another_domain_proves_nothing():
    raw = dkim_signed(arf(), domain="lookalike-mailbox.example")
    d = classify(smtp(raw, "fbl@mail.example.org"), FBL_CTX, NOW, dkim_lookup=lookup)
    assert d.review and d.actions == () and not d.evidence["source_proof"]["bad_signature"]


def test_offline_a_signed_report_cannot_be_verified_and_is_held():
    d = classify(smtp(dkim_signed(arf()), "fbl@mail.example.org"), FBL_CTX, NOW)      # no lookup: unsubd classify
    assert d.review and "no key lookup" in d.reason


def test_no_published_key_is_not_taken_for_a_forgery():
    d = classify(smtp(dkim_signed(arf()), "fbl@mail.example.org"), FBL_CTX, NOW, dkim_lookup=lambda name: None)
    assert d.review and "no public key" in d.reason and not d.evidence["source_proof"]["bad_signature"]


@pytest.mark.parametrize("header, acted", [
    (f"Authentication-Results: mx.mail.example.org; dkim=pass header.d={SOURCE}\r\n", True),
    (f"Authentication-Results: mx.mail.example.org; dmarc=pass header.from={SOURCE}\r\n", True),
    (f"Authentication-Results: mx.mail.example.org; dkim=fail header.d={SOURCE}\r\n", False),
    (f"Authentication-Results: mx.evil.example; dkim=pass header.d={SOURCE}\r\n", False),   # not our MTA
    ("Authentication-Results: mx.mail.example.org; dkim=pass header.d=example-mailbox.com\r\n", False),
])
def test_our_own_mtas_authentication_results_prove_the_source(header, acted):
    d = classify(smtp(arf(extra=header), "fbl@mail.example.org"), FBL_CTX, NOW)
    assert (bool(d.actions) and not d.review) is acted
    assert d.evidence["source_proof"]["how"] == ("authentication-results" if acted else "none")


def test_an_address_entry_also_needs_the_reports_from():
    by_address = make_settings(UNSUBD_COMPLAINTS__FBL_SOURCES=f'["reports@{SOURCE}"]')
    ok = classify(smtp(dkim_signed(arf()), "fbl@mail.example.org"), Context.from_settings(by_address), NOW, dkim_lookup=lookup)
    assert ok.actions and not ok.review
    # A user of the same domain signs with it too, but cannot send as the loop's address.
    other = dkim_signed(arf(sender=f"someone@{SOURCE}"))
    held = classify(smtp(other, "fbl@mail.example.org"), Context.from_settings(by_address), NOW, dkim_lookup=lookup)
    assert held.review and held.actions == ()


def test_apples_unsubscribe_message_is_the_persons_own_and_not_held():
    raw = (b"From: Kari <kari@example.no>\r\nTo: unsubscribe@mail.example.org\r\nSubject: unsubscribe\r\n"
           b"X-Apple-Unsubscribe: true\r\n\r\nunsubscribe\r\n")
    d = classify(smtp(raw, "unsubscribe@mail.example.org", "kari@example.no"), FBL_CTX, NOW)
    assert d.kind is Kind.COMPLAINT and not d.review and d.actions


def test_hostile_signed_reports_never_raise_and_stay_linear():
    # A line of whitespace far beyond RFC 5322's 998 characters would cost dkimpy's body
    # canonicalisation quadratic time: such a report is not verified (held), quickly.
    def run(spaces: int) -> tuple[Decision, float]:
        raw = dkim_signed(arf()).replace(b"A user marked", b"A user" + b" " * spaces + b"marked")
        started = time.perf_counter()
        d = classify(smtp(raw, "fbl@mail.example.org"), FBL_CTX, NOW, dkim_lookup=lookup)
        return d, time.perf_counter() - started
    small, base = run(500)
    big, slow = run(2_000_000)
    assert small.review and big.review and "longer than RFC 5322" in big.reason
    assert slow < base * 1000                   # 4000 times the whitespace: linear, not quadratic
    broken = b"DKIM-Signature: v=1; d=" + SOURCE.encode() + b"; s=fbl; b=\xff\xfe;;=\r\n" + arf()
    d = classify(smtp(broken, "fbl@mail.example.org"), FBL_CTX, NOW, dkim_lookup=lookup)
    assert d.review and d.actions == ()
    proof = authenticate_source(b"", parse_message(b""), FBL, lookup)
    assert not proof.proven


# --------------------------------------------------------------------------- 3. a tampered tag never counts

async def test_three_soft_bounces_to_a_tampered_tag_suppress_nobody(database):
    policy = BouncePolicy(threshold=3, window=timedelta(days=30))
    tampered = "bounces+" + "a" * 34 + "@mail.example.org"
    for i in range(3):
        d = classify(smtp(dsn(["bo@example.se"], status="4.2.2", message_id=f"<t{i}@mail.example.org>"),
                          tampered), FBL_CTX, NOW)
        assert d.actions == () and d.evidence["suspect"] == ["bounce_forged_return_path"]
        assert d.evidence["recipients"][0]["proposed"] == "soft_bounce"
        await apply(d, database.unit_of_work(), NOW + timedelta(hours=i), policy)
    assert await count(database, Suppression) == 0 and await count(database, SoftBounce) == 0
    assert await count(database, Event) == 3                     # each one recorded
    # The classic unsigned VERP tag is a hint, not a forgery: it still counts, and three suppress.
    for i in range(3):
        d = classify(smtp(dsn(["cy@example.se"], status="4.2.2", message_id=f"<u{i}@mail.example.org>"),
                          "bounces+cy=example.se@mail.example.org"), FBL_CTX, NOW)
        assert [a.type for a in d.actions] == [ActionType.SOFT_BOUNCE]
        await apply(d, database.unit_of_work(), NOW + timedelta(hours=i), policy)
    async with database.sessions() as s:
        assert [(x.address, x.reason) for x in (await s.scalars(select(Suppression))).all()] == [
            ("cy@example.se", "soft_bounce_threshold")]


# --------------------------------------------------------------------------- 4. counted for /metrics

async def test_the_consumer_counts_each_suspect_report(database):
    from worker.pipeline.consumer import Consumer

    async def run_classify(item: Inbound, now: datetime) -> Decision:
        return classify(item, FBL_CTX, now, dkim_lookup=lookup)

    consumer = Consumer(FBL, None, run_classify, database.unit_of_work, lambda: NOW)
    assert consumer.counters.suspect_reports == dict.fromkeys(SUSPECT, 0)       # shown as 0 before any
    items = [smtp(dsn([f"v{i}@example.se" for i in range(20)]), PLAIN),
             smtp(dsn(["bo@example.se"], status="4.2.2"), "bounces+" + "b" * 34 + "@mail.example.org"),
             smtp(arf(sender="abuse@somewhere.example"), "fbl@mail.example.org"),
             smtp(dkim_signed(arf(), key=ATTACKER_PRIVATE), "fbl@mail.example.org"),
             smtp(dkim_signed(arf("ola@example.no")), "fbl@mail.example.org")]
    for item in items:
        assert (await consumer.handle(item, 1)).action == "done"
    assert consumer.counters.suspect_reports == {"bounce_forged_return_path": 1, "bounce_implausible_recipients": 1,
                                         "complaint_unauthenticated": 2, "complaint_bad_signature": 1}
    assert await count(database, Suppression) == 1                    # only the proven complaint
