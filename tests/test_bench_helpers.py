"""The pure helpers the benches rest on: a figure is only as good as what was sent and
when a phase counted as done."""

from __future__ import annotations

import email
import os
import signal
import subprocess
import sys
import time
from email import policy
from pathlib import Path

from tests import corpus

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import pipeline  # noqa: E402


def _messages() -> list[bytes]:
    corpus.require("mail")                       # fails in CI, skips locally, when missing
    return [raw for raw, _ in pipeline.corpus_messages()]


def test_distinct_adds_one_field_and_leaves_every_corpus_message_otherwise_as_it_was():
    for raw in _messages():
        marked = pipeline.distinct(raw, 41)
        assert marked != raw and pipeline.distinct(raw, 42) != marked
        before, after = email.message_from_bytes(raw), email.message_from_bytes(marked)
        assert after["X-Bench-Id"] == "41"
        assert list(after.keys()) == list(before.keys()) + ["X-Bench-Id"]
        assert after.is_multipart() == before.is_multipart()
        if not before.is_multipart():
            assert after.get_payload() == before.get_payload()
        # Every other byte is as it was: taking the field out gives the message back.
        assert raw in (marked.replace(b"\r\nX-Bench-Id: 41", b"", 1), marked.replace(b"\nX-Bench-Id: 41", b"", 1))


def test_distinct_on_a_header_with_no_body_and_on_crlf_and_lf_messages():
    assert pipeline.distinct(b"Subject: x\r\n", 1) == b"Subject: x\r\nX-Bench-Id: 1\r\n"
    assert pipeline.distinct(b"Subject: x\n\nbody\n", 2) == b"Subject: x\nX-Bench-Id: 2\n\nbody\n"
    parsed = email.message_from_bytes(pipeline.distinct(b"Subject: x\r\n\r\nbody\r\n", 3), policy=policy.SMTP)
    assert parsed["X-Bench-Id"] == "3" and parsed.get_content() == "body\r\n"


def test_tree_finds_grandchildren_and_cpu_seconds_counts_their_work():
    # A child that starts a busy grandchild: the parser workers sit that deep.
    child = subprocess.Popen([sys.executable, "-c",
                              "import subprocess, sys; subprocess.run([sys.executable, '-c', "
                              "'import time\\nend = time.process_time() + 0.5\\nwhile time.process_time() < end: pass\\n"
                              "time.sleep(30)'])"])

    class Server:
        procs = [child]

    try:
        deadline = time.monotonic() + 10
        while len(pipeline.tree(child.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(pipeline.tree(child.pid)) == 2
        while pipeline.cpu_seconds(Server) < 0.4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pipeline.cpu_seconds(Server) >= 0.4
    finally:
        for pid in reversed(pipeline.tree(child.pid)):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        child.wait(10)
