"""Memory over a long run: resident memory of `unsubd serve` while many corpus messages go through.

Starts `unsubd serve` (embedded: one process with SQLite; production: PostgreSQL and
RabbitMQ with listener and worker processes apart, as bench/pipeline.py does), then
sends --messages corpus messages over SMTP in rounds of --round messages. After each
round it waits until the consumer has caught up (nothing left due in the inbound
queue), so the figure is memory per message processed, not a growing backlog, and
samples the resident set size (VmRSS) of every unsubd process and its parser workers.

Prints the samples and the growth from the first sample after warm-up to the last, and
in each half of that span (a leak grows as much in the second half as in the first),
in all and per process (listener, consumer, each parser worker: a cache filling up in
one process reads differently from a whole deployment creeping), and writes
bench/results/memory.json. No pass/fail: read the curve.

    .venv/bin/python -m bench.memory [--messages 20000] [--round 1000] [--mode embedded|production]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
from bench.pipeline import Serve, accept_rate, clean_up, corpus_messages, deployment_env, settle, tree


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def labels(roles: list[str], procs: list[subprocess.Popen[str]]) -> dict[int, str]:
    """A name for every process of the run: each `unsubd serve` by its roles ("smtp-http-relay",
    "consumer", "all"), and its descendants (parser workers, the forkserver) as "<roles> child N",
    numbered in the order of their process ids."""
    out: dict[int, str] = {}
    for role, proc in zip(roles, procs):
        out[proc.pid] = role
        for n, pid in enumerate(sorted(p for p in tree(proc.pid) if p != proc.pid), 1):
            out[pid] = f"{role} child {n}"
    return out


def sample(roles: list[str], procs: list[subprocess.Popen[str]]) -> dict[str, Any]:
    per = {name: round(rss_kb(pid) / 1024, 1) for pid, name in labels(roles, procs).items()}
    return {"rss_mb": per, "total_mb": round(sum(per.values()), 1),
            "main_mb": round(sum(per[role] for role in roles), 1)}


def growth(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Growth between two samples: in all, in the `unsubd serve` processes, and per
    process (by label; a process present in only one of them is left out)."""
    per = {name: round(after["rss_mb"][name] - mb, 1) for name, mb in before["rss_mb"].items()
           if name in after["rss_mb"]}
    return {"total": round(after["total_mb"] - before["total_mb"], 1),
            "unsubd_processes": round(after["main_mb"] - before["main_mb"], 1),
            "per_process": per, "from_messages": before["messages"], "to_messages": after["messages"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--round", type=int, default=1000)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--mode", choices=["embedded", "production"], default="embedded")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "memory.json")
    args = ap.parse_args()
    corpus = corpus_messages()
    env, pg_name = deployment_env(args.mode, args.sessions, "memory")
    server = Serve(env, split=(args.mode == "production"))
    samples = []
    started = time.perf_counter()
    try:
        samples.append({"messages": 0, "seconds": 0.0, **sample(server.names, server.procs)})
        sent = 0
        while sent < args.messages:
            n = min(args.round, args.messages - sent)
            # accept_rate gives every message a header field of its own: none is a
            # duplicate of an earlier one.
            batch = [corpus[(sent + i) % len(corpus)] for i in range(n)]
            accept_rate(server.smtp_port, batch, args.sessions, n)
            sent += n
            settle(server, env.get("UNSUBD_AMQP__INBOUND_QUEUE"), limit=600)
            s = {"messages": sent, "seconds": round(time.perf_counter() - started, 1), **sample(server.names, server.procs)}
            samples.append(s)
            print(f"{sent:6d} messages  {s['seconds']:7.1f}s  total {s['total_mb']:7.1f} MB  "
                  f"unsubd processes {s['main_mb']:6.1f} MB  ("
                  + ", ".join(f"{name} {mb:.1f}" for name, mb in s["rss_mb"].items()) + ")", flush=True)
    finally:
        server.stop()
        clean_up(env, pg_name)
    warm = samples[min(2, len(samples) - 1)]
    middle = samples[(samples.index(warm) + len(samples) - 1) // 2]
    last = samples[-1]
    # Growth after warm-up, and in each half of it: a leak grows as much in the second
    # half as in the first, memory that levels off grows less.
    result = {"bench": "memory", "mode": args.mode, "messages": args.messages, "round": args.round,
              "samples": samples,
              "growth_after_warm_up_mb": growth(warm, last),
              "growth_by_half_mb": [growth(warm, middle), growth(middle, last)],
              "machine": {"cpus": os.cpu_count()}, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    print(json.dumps({k: result[k] for k in ("growth_after_warm_up_mb", "growth_by_half_mb")}, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
