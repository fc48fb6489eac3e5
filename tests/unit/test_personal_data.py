"""The personal-data registry (issue 23) covers every column of every model, and erasure
carries out exactly its rules."""

from __future__ import annotations

from handlers.events.rights import all_digests, encodings, scrub, tombstone_digest
from handlers.tokens import Keyring
from worker.store.erasure import IMPLEMENTS
from worker.store.models import Base
from worker.store.personal_data import BY_COLUMN, FIELDS, erasure_rules


def test_every_column_of_every_model_is_classified():
    columns = {(t.name, c.name) for t in Base.metadata.sorted_tables for c in t.columns}
    missing = sorted(columns - set(BY_COLUMN))
    assert not missing, f"classify these columns in worker/store/personal_data.py (personal or not): {missing}"
    assert not sorted(set(BY_COLUMN) - columns), "the registry names columns no model has"
    assert len(FIELDS) == len(BY_COLUMN), "a column is classified twice"


def test_erasure_implements_exactly_the_registry_rules():
    assert erasure_rules() == set(IMPLEMENTS)


def test_identifiers_and_names_never_survive_erasure():
    kept = [f for f in FIELDS if f.kind in ("identifier", "name", "raw") and f.erase == "keep"]
    assert kept == []


def test_tombstone_digests_are_keyed_and_find_older_keys():
    ring = Keyring({"k1": b"a" * 32, "k2": b"b" * 32}, "k2")
    d1 = tombstone_digest(b"a" * 32, "anna@example.se")
    assert d1 != tombstone_digest(b"b" * 32, "anna@example.se") and len(d1) == 64
    assert all_digests(ring, "anna@example.se")[d1] == "k1"


def test_scrub_takes_out_every_common_form():
    text = "From ANNA@Example.se, see ?u=anna%40example.se and anna=40example.se and " + encodings("anna@example.se")[-1]
    assert "anna" not in scrub(text, ["anna@example.se"]).lower()


def test_retention_implements_exactly_the_registry_rules():
    from worker.store.retention import IMPLEMENTS as RETAINS
    from worker.store.personal_data import RETENTION_CLASSES, retention_rules

    assert retention_rules() == set(RETAINS)
    assert {cls for _, _, cls in RETAINS} == set(RETENTION_CLASSES)


def test_raw_mail_and_free_text_have_a_retention_class():
    # What a message or a person wrote is never kept for ever by default: each has a class
    # whose period removes it (contacts go by the erasure rules).
    for table, column in (("inbound_item", "raw"), ("inbound_item", "mail_from"), ("event", "evidence"),
                          ("event", "reason"), ("review_item", "reason"), ("review_item", "address")):
        assert BY_COLUMN[(table, column)].retain, (table, column)
