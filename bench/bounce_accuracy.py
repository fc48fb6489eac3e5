"""Bounce accuracy: unsubd against flufl.bounce on ../shared/corpus/bounces, side by side.

Run: .venv/bin/python -m bench.bounce_accuracy [--rounds N]   (UNSUBD_CORPUS overrides the corpus root)

Prints recipient precision and recall, hard/soft, permanent/temporary and status
agreement, complaint recipients found, false alarms on non-bounces and messages/s,
in total over sisimai/, per folder (bsd, dos, err, not, flufl) and the worst
failures; writes the same figures to bench/results/bounce_accuracy.json.

Definitions (one (file, recipient) line of expected.jsonl is a "line"):
* found: the detector reports the line's recipient as failed or delayed.
* precision: reported (file, address) pairs that some bounce line expects, over all
  reported pairs on files that have bounce lines or nothing to find.
* hard/soft: the detector's hard flag equals the label's `hard` (flufl: permanent = hard).
* permanent/temporary: the class of the detector's status (flufl: permanent set) equals
  the label's `permanent`.
* status: exact where the label is a standard RFC 3463 code; for sisimai's X.0.9xx
  pseudo-codes only the class must agree. flufl gives no codes.
* false alarm: a suppress (flufl: a permanent failure) on a file whose lines are all
  of kind none, vacation or delivered.
* complaint recipient found: the feedback line's recipient is an address of the
  complaint decision's actions or of the recipients its evidence names (an
  auth-failure report names the recipient but is, by design, not acted on).

Speed: both detectors get the same bytes in the same process and are timed from raw
bytes to their answer (parsing included: unsubd's `classify`, flufl's
`message_from_bytes` + `all_failures`). Each first reads one warm-up message that is
not in the corpus, so imports and table compilation are not counted. Then, in each of
--rounds rounds, each detector reads the whole corpus in its own pass (the order of
the passes alternates between rounds, so neither always runs on a warmer machine),
after `re.purge()` and after clearing unsubd's caches that are keyed by message content
(address normalisation, reason words, the reply reader's sentences: CONTENT_CACHES),
so no round profits from having seen the same messages before. messages/s is the
median round. Accuracy figures come from round 1.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import logging
import os
import re
import statistics
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

import config
from handlers.context import Context
from handlers import Inbound, Kind, classify
from handlers.bounces import dsn, reasons
from handlers.mail import addresses
from handlers.mail.addresses import normalise
from handlers.replies import intent, phrases

NOW = datetime(2026, 2, 1, 12, 0, tzinfo=timezone.utc)
FOLDERS = ("bsd", "dos", "err", "not", "flufl")
QUIET = {"none", "vacation", "delivered"}


def corpus_root() -> Path:
    override = os.environ.get("UNSUBD_CORPUS")
    return Path(override).expanduser().resolve() if override else ROOT.parent / "shared" / "corpus"


def folder_of(file: str) -> str:
    parts = file.split("/")
    return parts[1] if parts[0] == "sisimai" else parts[0]


# ------------------------------------------------------------------ detectors
# Each returns {address: {"status", "permanent", "hard", "suppress"}}, plus complaints.


def run_unsubd(raw: bytes, ctx: Context) -> tuple[dict[str, dict[str, Any]], set[str]]:
    decision = classify(Inbound.from_file(raw, "bench", NOW), ctx, NOW)
    found: dict[str, dict[str, Any]] = {}
    complaints: set[str] = set()
    if decision.kind is Kind.COMPLAINT:
        # Found = named by the decision, acted on or not: an auth-failure report (RFC 6591)
        # names the recipient but is rightly not acted on.
        named = decision.evidence.get("recipients") or []
        complaints = {a.address for a in decision.actions} | {r for r in named if isinstance(r, str)}
        return found, complaints
    if decision.kind is not Kind.BOUNCE:
        return found, complaints
    for row in decision.evidence.get("recipients", []):
        address = row.get("address")
        if not address or row.get("action") not in ("failed", "delayed"):
            continue
        status = row.get("status")
        # The reading is measured: a row kept from acting by a rule above it (issue 21: a
        # bounce about mail we did not send, as every corpus message is) keeps its
        # would-be outcome as `proposed`.
        entry = {"status": status, "permanent": (status[0] == "5") if status else None,
                 "hard": bool(row.get("hard")), "suppress": (row.get("outcome") or row.get("proposed")) == "suppress"}
        if address not in found or (entry["suppress"] and not found[address]["suppress"]):
            found[address] = entry
    for action in decision.actions:
        if action.type.value not in ("suppress", "soft_bounce"):   # e.g. a success DSN's "delivered"
            continue
        found.setdefault(action.address, {"status": action.status, "hard": action.hard,
                                          "permanent": (action.status or " ")[0] == "5" if action.status else None,
                                          "suppress": action.type.value == "suppress"})
    return found, complaints


def run_flufl(raw: bytes) -> tuple[dict[str, dict[str, Any]], set[str]]:
    from flufl.bounce import all_failures

    msg = email.message_from_bytes(raw)
    temporary, permanent = all_failures(msg)
    found: dict[str, dict[str, Any]] = {}
    for value, perm in [(t, False) for t in temporary] + [(p, True) for p in permanent]:
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        address = normalise(text) or text.strip().lower()
        if address in found and found[address]["permanent"]:
            continue
        found[address] = {"status": None, "permanent": perm, "hard": perm, "suppress": perm}
    return found, set()


# ------------------------------------------------------------------ scoring


def is_pseudo(status: str) -> bool:
    return status.split(".")[1:2] == ["0"] and len(status.split(".")[-1]) == 3 and status.split(".")[-1].startswith("9")


class Score:
    def __init__(self) -> None:
        self.c: dict[str, int] = defaultdict(int)
        self.failures: list[dict[str, Any]] = []
        self.seconds = 0.0
        self.messages = 0

    def add_file(self, file: str, lines: list[dict[str, Any]], found: dict[str, dict[str, Any]],
                 complaints: set[str]) -> None:
        c = self.c
        bounce_lines = [ln for ln in lines if ln["kind"] == "bounce" and ln.get("recipient")]
        feedback = [ln for ln in lines if ln["kind"] == "feedback" and ln.get("recipient")]
        expected = {normalise(ln["recipient"]) or ln["recipient"] for ln in bounce_lines}
        kinds = {ln["kind"] for ln in lines}
        if kinds <= QUIET:
            c["quiet_files"] += 1
            alarms = sorted(a for a, e in found.items() if e["suppress"])
            if alarms:
                c["false_alarms"] += 1
                self.failures.append({"file": file, "problem": "false alarm", "got": alarms, "weight": 10})
        if bounce_lines or kinds <= QUIET:
            for address in found:
                c["reported"] += 1
                if address in expected:
                    c["reported_ok"] += 1
                else:
                    self.failures.append({"file": file, "problem": "wrong recipient", "got": address,
                                          "want": sorted(expected), "weight": 3})
        for ln in feedback:
            c["complaint_lines"] += 1
            c["complaint_found"] += (normalise(ln["recipient"]) or "") in complaints
        for ln in bounce_lines:
            want = normalise(ln["recipient"]) or ln["recipient"]
            c["lines"] += 1
            got = found.get(want)
            if got is None:
                self.failures.append({"file": file, "problem": "recipient missed", "want": want,
                                      "got": sorted(found), "weight": 2})
                continue
            c["found"] += 1
            if ln.get("hard") is not None:
                c["hard_n"] += 1
                ok = got["hard"] == ln["hard"]
                c["hard_ok"] += ok
                if not ok:
                    self.failures.append({"file": file, "problem": "hard/soft", "want": ln["hard"],
                                          "got": got["hard"], "status": got["status"], "label": ln.get("reason"),
                                          "weight": 1})
            if ln.get("permanent") is not None:
                c["perm_n"] += 1
                c["perm_ok"] += got["permanent"] == ln["permanent"]
                if got["permanent"] != ln["permanent"]:
                    self.failures.append({"file": file, "problem": "permanent/temporary", "want": ln["permanent"],
                                          "got": got["status"], "weight": 1})
            status = ln.get("status")
            if status:
                c["status_n"] += 1
                mine = got["status"] or ""
                ok = mine[:1] == status[:1] if is_pseudo(status) else mine == status
                c["status_ok"] += ok
                if not ok:
                    self.failures.append({"file": file, "problem": "status", "want": status, "got": mine or None,
                                          "label": ln.get("reason"), "weight": 0})

    def figures(self) -> dict[str, Any]:
        c = self.c

        def pct(a: int, b: int) -> float | None:
            return round(100.0 * a / b, 1) if b else None

        return {
            "recipient_precision": pct(c["reported_ok"], c["reported"]),
            "recipient_recall": pct(c["found"], c["lines"]),
            "hard_soft_agreement": pct(c["hard_ok"], c["hard_n"]),
            "permanent_temporary_agreement": pct(c["perm_ok"], c["perm_n"]),
            "status_agreement": pct(c["status_ok"], c["status_n"]),
            "complaint_recipients_found": f"{c['complaint_found']}/{c['complaint_lines']}",
            "false_alarms": f"{c['false_alarms']}/{c['quiet_files']}",
            "messages_per_second": round(self.messages / self.seconds, 1) if self.seconds else None,
            "counts": dict(c),
        }


# (module, function) of every lru_cache in handlers/ whose key is message content.
CONTENT_CACHES = ((addresses, "normalise"), (reasons, "_text_reason"), (dsn, "_text_reason"),
                  (intent, "_words"), (intent, "_in_class"), (phrases, "folded_text"))
try:  # the reply reader's word classes of languages it does not read (a newer tree's module)
    from handlers.replies import net as _net
except ImportError:  # pragma: no cover - depends on the tree's age
    _net = None
if _net is not None:
    CONTENT_CACHES += ((_net, "word_classes"),)

WARM_UP = (b"From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
           b"To: sender@example.org\r\nSubject: Undelivered Mail Returned to Sender\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n"
           b"\r\n--b\r\nContent-Type: text/plain\r\n\r\nThis is the mail system.\r\n"
           b"\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n"
           b"\r\nFinal-Recipient: rfc822; warm-up@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
           b"\r\n--b--\r\n")


def clear_content_caches() -> None:
    """Forget what unsubd cached about earlier messages (not compiled tables): every
    cache keyed by message content (CONTENT_CACHES). Address normalisation, the reason
    words of diagnostic texts (handlers.bounces.reasons; handlers.bounces.dsn once), the
    reply reader's sentence words and word-class answers (handlers.replies.intent
    `_words`, `_in_class`), its folded sentences (handlers.replies.phrases
    `folded_text`) and its word classes of other languages (handlers.replies.net
    `word_classes`). Caches keyed by package data (`_tokens_of`, the phrase tables) are
    compiled tables and stay. tests/unit/test_bench_caches.py checks that every bounded
    cache of the readers is listed."""
    for module, name in CONTENT_CACHES:
        cached = getattr(module, name, None)
        if cached is not None and hasattr(cached, "cache_clear"):
            cached.cache_clear()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the corpus per detector (default 3)")
    args = parser.parse_args(argv)
    logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)
    root = corpus_root() / "bounces"
    if not (root / "expected.jsonl").is_file():
        print(f"corpus not found at {root} (set UNSUBD_CORPUS)", file=sys.stderr)
        return 2
    by_file: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with (root / "expected.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                by_file[row["file"]].append(row)
    ctx = Context.from_settings(config.load({}, ROOT / "config" / "example.toml"))
    raws = {file: (root / file).read_bytes() for file in sorted(by_file)}
    detectors = {"unsubd": lambda raw: run_unsubd(raw, ctx), "flufl.bounce": run_flufl}
    scores: dict[str, dict[str, Score]] = {name: defaultdict(Score) for name in detectors}
    errors: dict[str, int] = defaultdict(int)
    # folder -> detector -> seconds of each round
    seconds: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for detect in detectors.values():
        detect(WARM_UP)
    for round_no in range(max(1, args.rounds)):
        order = list(detectors) if round_no % 2 == 0 else list(reversed(detectors))
        for name in order:
            detect = detectors[name]
            re.purge()
            clear_content_caches()
            spent: dict[str, float] = defaultdict(float)
            for file, raw in raws.items():
                folder = folder_of(file)
                started = time.perf_counter()
                try:
                    found, complaints = detect(raw)
                except Exception:  # noqa: BLE001 - a detector crash is a figure, not the end of the run
                    if round_no == 0:
                        errors[name] += 1
                    found, complaints = {}, set()
                elapsed = time.perf_counter() - started
                for key in (folder, "sisimai" if folder != "flufl" else "flufl-total"):
                    spent[key] += elapsed
                    if round_no == 0:
                        scores[name][key].messages += 1
                        scores[name][key].add_file(file, by_file[file], found, complaints)
            for key, value in spent.items():
                seconds[key][name].append(value)
    for name in detectors:
        for key, score in scores[name].items():
            # the median round's time, scaled so messages/s stays messages over seconds
            score.seconds = statistics.median(seconds[key][name])
    rows = [("recipient precision %", "recipient_precision"), ("recipient recall %", "recipient_recall"),
            ("hard/soft agreement %", "hard_soft_agreement"),
            ("permanent/temporary %", "permanent_temporary_agreement"), ("status agreement %", "status_agreement"),
            ("complaint recipients", "complaint_recipients_found"), ("false alarms (files)", "false_alarms"),
            ("messages/s", "messages_per_second")]
    result: dict[str, Any] = {"corpus": str(root), "errors": dict(errors), "rounds": max(1, args.rounds),
                              "round_seconds": {k: dict(v) for k, v in seconds.items()}, "detectors": {}}
    for key in ("sisimai", *FOLDERS):
        print(f"\n== {key} ==" + ("  (targets: P>=99.5 R>=98 hard>=95 perm>=97 status>=90 alarms 0)"
                                   if key == "sisimai" else ""))
        print(f"{'':26}{'unsubd':>14}{'flufl.bounce':>14}")
        figs = {name: scores[name][key].figures() for name in detectors}
        for label, field in rows:
            print(f"{label:26}" + "".join(f"{str(figs[n][field]):>14}" for n in detectors))
        for name in detectors:
            result["detectors"].setdefault(name, {})[key] = figs[name]
    print(f"\ndetector exceptions: {dict(errors) or 0}   (messages/s: median of {max(1, args.rounds)} rounds)")
    worst = sorted(scores["unsubd"]["sisimai"].failures, key=lambda f: -f["weight"])
    result["failures"] = worst
    print(f"\nworst unsubd failures on sisimai ({len(worst)} in all, first 25):")
    for failure in worst[:25]:
        detail = {k: v for k, v in failure.items() if k not in ("file", "problem", "weight")}
        print(f"  {failure['problem']:20} {failure['file']:40} {json.dumps(detail)[:140]}")
    out = ROOT / "bench" / "results" / "bounce_accuracy.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    print(f"\nwritten: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
