"""handlers.tokens: no modified token is accepted, rotation keeps old links, garbage never raises."""

from __future__ import annotations

import base64

import pytest
from hypothesis import assume, given, settings, strategies as st

from handlers.model import WILDCARD
from handlers.tokens import (
    CHANNEL_CODES,
    MAC_BYTES,
    Claims,
    Keyring,
    check_form_proof,
    form_proof,
    sign,
    verify,
)

K1 = Keyring({"k1": b"a" * 32}, active="k1")
K2_ONLY = Keyring({"k2": b"b" * 32}, active="k2")
ROTATED = Keyring({"k1": b"a" * 32, "k2": b"b" * 32}, active="k2")

contact_ids = st.integers(min_value=1, max_value=2**63 - 1)
units = st.one_of(st.just(WILDCARD), st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,62}\Z"))
channels = st.sampled_from(sorted(CHANNEL_CODES))


def test_a_token_round_trips_and_is_compact_and_url_safe():
    token = sign(12345, "alumni", "email", K1)
    assert verify(token, K1) == Claims(12345, "alumni", "email", "k1")
    assert len(token) <= 40
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert verify(sign(1, WILDCARD, WILDCARD, K1), K1) == Claims(1, WILDCARD, WILDCARD, "k1")


@given(contact_ids, units, channels)
def test_every_claim_round_trips(contact_id, unit, channel):
    assert verify(sign(contact_id, unit, channel, K1), K1) == Claims(contact_id, unit, channel, "k1")


@settings(max_examples=300)
@given(contact_ids, units, channels, st.data())
def test_no_modified_token_is_accepted(contact_id, unit, channel, data):
    token = sign(contact_id, unit, channel, K1)
    how = data.draw(st.sampled_from(["char", "insert", "delete", "truncate", "append"]))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=.+/ "
    i = data.draw(st.integers(0, len(token) - 1))
    if how == "char":
        c = data.draw(st.sampled_from(alphabet))
        assume(c != token[i])
        changed = token[:i] + c + token[i + 1:]
    elif how == "insert":
        changed = token[:i] + data.draw(st.sampled_from(alphabet)) + token[i:]
    elif how == "delete":
        changed = token[:i] + token[i + 1:]
    elif how == "truncate":
        changed = token[:i]
    else:
        changed = token + data.draw(st.text(alphabet, min_size=1, max_size=8))
    assert changed != token
    assert verify(changed, K1) is None


@settings(max_examples=300)
@given(contact_ids, units, channels, st.data())
def test_no_bit_flip_in_the_decoded_bytes_is_accepted(contact_id, unit, channel, data):
    raw = bytearray(base64.urlsafe_b64decode(sign(contact_id, unit, channel, K1) + "=="))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    assert verify(base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode(), K1) is None


@given(contact_ids, units, channels, units, channels)
def test_claims_cannot_be_swapped_while_keeping_the_mac(contact_id, unit, channel, unit2, channel2):
    # Re-encode the body with other claims and keep the original MAC: never valid.
    assume((unit, channel) != (unit2, channel2))
    mac = base64.urlsafe_b64decode(sign(contact_id, unit, channel, K1) + "==")[-MAC_BYTES:]
    other = base64.urlsafe_b64decode(sign(contact_id, unit2, channel2, K1) + "==")[:-MAC_BYTES]
    assert verify(base64.urlsafe_b64encode(other + mac).rstrip(b"=").decode(), K1) is None


@given(contact_ids, units, channels)
def test_rotated_keys_keep_old_links_working(contact_id, unit, channel):
    old = sign(contact_id, unit, channel, K1)
    new = sign(contact_id, unit, channel, ROTATED)
    assert verify(old, ROTATED) == Claims(contact_id, unit, channel, "k1")
    assert verify(new, ROTATED) == Claims(contact_id, unit, channel, "k2")
    assert verify(new, K1) is None                  # a key that was never configured here
    assert verify(old, K2_ONLY) is None             # k1 retired: its links stop working


def test_a_token_signed_with_another_secret_under_the_same_key_id_is_refused():
    impostor = Keyring({"k1": b"z" * 32}, active="k1")
    assert verify(sign(7, "alumni", "email", impostor), K1) is None


@settings(max_examples=500)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: base64.urlsafe_b64encode(b)
                                                                     .rstrip(b"=").decode())))
def test_garbage_never_raises_and_is_never_accepted(text):
    assert verify(text, K1) is None


@pytest.mark.parametrize("garbage", [None, 123, b"bytes", "", "=", "A", "AAAA", "\udcff" * 30, "x" * 10_000])
def test_odd_values_are_refused_without_raising(garbage):
    assert verify(garbage, K1) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("claims", [(0, "alumni", "email"), (2**63, "alumni", "email"),
                                    (1, "Alumni", "email"), (1, "alumni", "fax"), (1, "", "email")])
def test_signing_refuses_claims_a_token_cannot_carry(claims):
    with pytest.raises(ValueError):
        sign(*claims, K1)


@pytest.mark.parametrize("secrets,active", [({}, "k1"), ({"k1": b"short"}, "k1"),
                                            ({"k1": b"a" * 32}, "k9"), ({"bad id!": b"a" * 32}, "bad id!")])
def test_a_keyring_refuses_bad_keys(secrets, active):
    with pytest.raises(ValueError):
        Keyring(secrets, active)


def test_form_proofs_bind_token_and_time():
    token = sign(5, "alumni", "email", K1)
    proof = form_proof(token, 1_000_000, K1)
    assert check_form_proof(proof, token, K1, now=1_000_100, max_age=3600)
    assert check_form_proof(proof, token, ROTATED, now=1_000_100, max_age=3600)     # after rotation
    assert not check_form_proof(proof, token, K1, now=1_000_000 + 3601, max_age=3600)  # too old
    assert not check_form_proof(proof, sign(6, "alumni", "email", K1), K1, now=1_000_100, max_age=3600)
    assert not check_form_proof(proof.replace("1000000", "1000001", 1), token, K1, now=1_000_100, max_age=3600)
    assert not check_form_proof(proof, token, K2_ONLY, now=1_000_100, max_age=3600)
    # A form proof is not a token, and a token's MAC is not a form proof.
    assert verify(proof, K1) is None
    for junk in ("", ".", "1.", "abc.def", "99999999999999.AAAA", None):
        assert not check_form_proof(junk, token, K1, now=1_000_100, max_age=3600)  # type: ignore[arg-type]
