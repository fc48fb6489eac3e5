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
import memory  # noqa: E402
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


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process and all its descendants, the deepest first."""
    for pid in reversed(pipeline.tree(proc.pid)):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    proc.wait(10)


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
        _stop(child)


def test_memory_samples_name_each_process_and_growth_is_read_per_process():
    # Two "serve" processes, the second with a child that holds 40 MB more than it did.
    grower = ("import sys, time\nblock = b''\nwhile True:\n"
              "    if sys.stdin.readline().strip() == 'grow': block = b'x' * (40 * 1024 * 1024)\n"
              "    print('ok', flush=True)")
    plain = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    parent = subprocess.Popen([sys.executable, "-c",
                               f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grower!r}])"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while len(pipeline.tree(parent.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        parent.stdin.write("hello\n")
        parent.stdin.flush()
        assert parent.stdout.readline().strip() == "ok"     # the child is up and has answered
        roles = ["smtp-http-relay", "consumer"]
        names = memory.labels(roles, [plain, parent])
        assert sorted(names.values()) == ["consumer", "consumer child 1", "smtp-http-relay"]
        before = {"messages": 0, **memory.sample(roles, [plain, parent])}
        parent.stdin.write("grow\n")
        parent.stdin.flush()
        assert parent.stdout.readline().strip() == "ok"
        after = {"messages": 1000, **memory.sample(roles, [plain, parent])}
        grown = memory.growth(before, after)
        assert grown["per_process"]["consumer child 1"] >= 39
        assert abs(grown["per_process"]["smtp-http-relay"]) < 5 and abs(grown["per_process"]["consumer"]) < 5
        assert grown["total"] >= 39 and abs(grown["unsubd_processes"]) < 5    # the child is not a serve process
        assert (grown["from_messages"], grown["to_messages"]) == (0, 1000)
    finally:
        _stop(plain)
        _stop(parent)
