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

from tests.support import corpus

from bench import memory, pipeline


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


def test_cpu_use_puts_each_process_in_its_part_and_adds_up_to_the_machine():
    # A "consumer" whose child burns half a second of CPU when told to, while this
    # process (the load generator's part) burns a fifth of one.
    burner = ("import sys, time\nsys.stdin.readline()\nend = time.process_time() + 0.5\n"
              "while time.process_time() < end: pass\nprint('done', flush=True)\ntime.sleep(30)")
    parent = subprocess.Popen([sys.executable, "-c",
                               f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burner!r}])"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    class Server:
        procs, names = [parent], ["consumer"]

    try:
        deadline = time.monotonic() + 10
        while len(pipeline.tree(parent.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        parts = pipeline.server_parts(Server)
        assert sorted(parts.values()) == ["consumer", "consumer children"] and parts[parent.pid] == "consumer"
        with pipeline.CpuUse(parts) as cpu:
            parent.stdin.write("go\n")
            parent.stdin.flush()
            end = time.process_time() + 0.2
            while time.process_time() < end:
                pass
            assert parent.stdout.readline().strip() == "done"
        per = cpu.per_message(1)                 # one "message": milliseconds for the whole block
        assert per["consumer children"] >= 450
        assert per.get("consumer", 0) < 100      # the parent only waited
        assert per["load generator"] >= 180
        assert 0 < cpu.busy_share <= 1
        # The parts are what the block used, not what the processes used since they began:
        # their sum stays near the machine's own busy time.
        assert per["sum"] <= per["machine"] * 1.2 + 50
    finally:
        _stop(parent)


def test_cpu_use_counts_from_the_start_of_the_block_and_a_reused_pid_from_zero(monkeypatch):
    processes = [
        {10: ("python", 1, 500, 7), 11: ("kworker/u8:1-events", 2, 900, 3), 12: ("postgres", 5, 40, 9)},
        # 11 renamed itself (kernel workers do), 12 is a new process on an old pid, 13 is new.
        {10: ("python", 1, 530, 7), 11: ("kworker/u8:1-writeback", 2, 910, 3), 12: ("postgres", 5, 4, 95),
         13: ("beam.smp", 1, 20, 96)},
    ]
    machine = [(1000, 4000), (1064, 4100)]
    monkeypatch.setattr(pipeline, "cpu_ticks", lambda: processes.pop(0))
    monkeypatch.setattr(pipeline, "machine_ticks", lambda: machine.pop(0))
    monkeypatch.setattr(pipeline, "TICK", 100)
    with pipeline.CpuUse({10: "smtp-http-relay"}) as cpu:
        pass
    assert cpu.ticks == {"smtp-http-relay": 30, "kernel": 10, "postgresql": 4, "rabbitmq": 20}
    assert cpu.busy_share == 0.64
    per = cpu.per_message(2)                     # 100 ticks a second: 30 ticks are 300 ms, 150 per message
    assert per == {"smtp-http-relay": 150.0, "rabbitmq": 100.0, "kernel": 50.0, "postgresql": 20.0,
                   "sum": 320.0, "machine": 320.0}
    assert list(per)[:4] == ["smtp-http-relay", "rabbitmq", "kernel", "postgresql"]


def test_median_parts_takes_each_part_over_the_rounds_and_a_missing_part_as_zero():
    rounds = [{"listener": 0.6, "postgresql": 0.1, "sum": 0.7, "machine": 0.8},
              {"listener": 0.8, "sum": 0.8, "machine": 0.9},
              {"listener": 0.7, "postgresql": 0.3, "sum": 1.0, "machine": 1.1}]
    med = pipeline.median_parts(rounds)
    assert med == {"listener": 0.7, "postgresql": 0.1, "sum": 0.8, "machine": 0.9}
    assert list(med)[-2:] in (["sum", "machine"], ["machine", "sum"])
