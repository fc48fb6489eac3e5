"""Bounce development set: unsubd's classifier on our own samples (tests/data/bounces).

Run: .venv/bin/python -m bench.bounce_devset [--holdout] [--misses N]

Reads tests/data/bounces/dev/ (and, only with --holdout, tests/data/bounces/holdout/:
that part is measured once, at the end of a piece of work, never while tuning) and
prints, per part and per form, recipient recall and precision, hard/soft, permanent/
temporary and status agreement, delayed reports acted on, complaint recipients found
and false actions on files that must produce none; then the misses, grouped by form.
Writes the same to bench/results/bounce_devset.json. Read-only: nothing in the
repository or a database is written besides that file.

Definitions (one line of expected.jsonl is a "line"; see tests/data/bounces/README.md):
* bounce line: kind `bounce` with a recipient (action failed or delayed).
* found: the classifier reports the line's recipient as failed or delayed in the
  decision's evidence rows, or acts on it (suppress, soft bounce).
* precision: reported (file, address) pairs that some bounce line of the file expects,
  over all pairs reported on files that have bounce lines or must stay quiet. A
  decision that itself says the bounce is not about mail we sent (evidence `related:
  false`: backscatter, a notice from a mailbox with nothing of ours) reports no
  recipient of ours: its rows are the reading, kept for a reviewer with `why_none`,
  and are counted apart (`unrelated rows recorded`; `precision incl. unrelated`
  counts them as reported too).
* acted on: a found line of action `failed` whose address gets a suppress or
  soft-bounce action (a bounce that is read but recorded only keeps no promise).
* hard/soft: the classifier's `hard` equals the label's `hard` (a permanent problem
  with the address itself), on found lines of action `failed` (a delayed line is
  soft by definition and is counted under `delayed acted on` instead).
* permanent/temporary: the class of the classifier's status equals the label's
  `permanent`, on found lines that have both.
* status: exact, on found lines whose label gives a status.
* delayed acted on: a delayed line whose address got a suppress or soft-bounce action.
* false action: a file whose lines are all of kind none, vacation or delivered that
  gets a suppress, soft-bounce or unsubscribe action (a delivered line may get its
  "delivered" action); counted per file. `false suppressions` counts the suppresses.
* complaint found: for a `feedback` line, the decision is a complaint and names the
  recipient among its actions or its evidence's recipients.
* wrong address acted on: a suppress or soft bounce of an address no line of the file
  expects, on a bounce file (the precision failures that change state).

Addresses are compared lower-cased, with internationalised domains in U-labels (an
A-label `xn--...` and its Unicode form are one address). The classifier is called as
bench/bounce_accuracy.py calls it: `classify(Inbound.from_file(raw, ...), ctx, NOW)`
with the context built from config/example.toml.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import config  # noqa: E402
from handlers import Inbound, Kind, classify  # noqa: E402

try:  # the context object classify takes (issue 20); older trees took the settings themselves
    from handlers.context import Context  # noqa: E402
except ImportError:  # pragma: no cover - depends on the tree's age
    Context = None  # type: ignore[assignment,misc]

NOW = datetime(2026, 4, 1, 12, 0, tzinfo=timezone.utc)
DATA = ROOT / "tests" / "data" / "bounces"
PARTS = ("dev", "holdout")
QUIET = {"none", "vacation", "delivered"}
ACTING = {"suppress", "soft_bounce", "unsubscribe"}


def build_context() -> Any:
    settings = config.load({}, ROOT / "config" / "example.toml")
    return Context.from_settings(settings) if Context is not None else settings


def canon(address: str | None) -> str | None:
    """Lower-cased, brackets and an `rfc822;` prefix removed, domain in U-labels."""
    if not address:
        return None
    text = str(address).strip()
    if text[:7].lower() == "rfc822;":
        text = text[7:].strip()
    text = text.strip("<>").strip().lower()
    local, at, domain = text.rpartition("@")
    if not at:
        return text
    labels = []
    for label in domain.rstrip(".").split("."):
        if label.startswith("xn--"):
            try:
                label = label.encode("ascii").decode("idna")
            except (UnicodeError, ValueError):
                pass
        labels.append(label)
    return f"{local}@{'.'.join(labels)}"


def load_part(part: str) -> dict[str, list[dict[str, Any]]]:
    by_file: dict[str, list[dict[str, Any]]] = defaultdict(list)
    path = DATA / part / "expected.jsonl"
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                by_file[row["file"]].append(row)
    return by_file


def read_decision(decision: Any) -> dict[str, Any]:
    """What the decision reports: failed/delayed rows by address, actions, complaint names."""
    rows: dict[str, dict[str, Any]] = {}
    unrelated: dict[str, dict[str, Any]] = {}
    actions: list[dict[str, Any]] = []
    complaints: set[str] = set()
    for action in decision.actions:
        actions.append({"type": action.type.value, "address": canon(action.address), "status": action.status,
                        "hard": action.hard})
    if decision.kind is Kind.COMPLAINT:
        named = decision.evidence.get("recipients") or []
        complaints = {canon(a["address"]) for a in actions if a["address"]} | {
            canon(r) for r in named if isinstance(r, str)}
    elif decision.kind is Kind.BOUNCE:
        for row in decision.evidence.get("recipients", []) or []:
            if not isinstance(row, dict):
                continue
            address = canon(row.get("address"))
            if not address or row.get("action") not in ("failed", "delayed"):
                continue
            status = row.get("status")
            entry = {"status": status, "hard": bool(row.get("hard")), "action": row.get("action"),
                     "outcome": row.get("outcome")}
            if address not in rows or (entry["hard"] and not rows[address]["hard"]):
                rows[address] = entry
        if decision.evidence.get("related") is False:
            # "not about mail we sent" (handlers.bounces.envelope.relation): recorded, not reported
            unrelated, rows = rows, {}
        for action in actions:
            if action["type"] in ("suppress", "soft_bounce") and action["address"]:
                rows.setdefault(action["address"], {"status": action["status"], "hard": bool(action["hard"]),
                                                    "action": "failed", "outcome": action["type"]})
    return {"kind": decision.kind.value, "rows": rows, "actions": actions, "complaints": complaints,
            "review": decision.review, "why": decision.reason, "unrelated": unrelated}


class Score:
    def __init__(self) -> None:
        self.c: Counter[str] = Counter()

    def pct(self, a: str, b: str) -> float | None:
        return round(100.0 * self.c[a] / self.c[b], 1) if self.c[b] else None

    def figures(self) -> dict[str, Any]:
        c = self.c
        return {
            "files": c["files"],
            "recipient_recall": self.pct("found", "lines"),
            "recipient_precision": self.pct("reported_ok", "reported"),
            "recipient_precision_incl_unrelated": (round(100.0 * c["reported_ok"] / (c["reported"] + c["unrelated_rows"]), 1)
                                                   if c["reported"] + c["unrelated_rows"] else None),
            "unrelated_rows_recorded": c["unrelated_rows"],
            "failed_lines_acted_on": self.pct("acted", "failed_found"),
            "hard_soft_agreement": self.pct("hard_ok", "hard_n"),
            "permanent_temporary_agreement": self.pct("perm_ok", "perm_n"),
            "status_agreement": self.pct("status_ok", "status_n"),
            "delayed_acted_on": f"{c['delayed_acted']}/{c['delayed_lines']}",
            "complaint_recipients_found": f"{c['complaint_found']}/{c['complaint_lines']}",
            "false_actions": f"{c['false_action_files']}/{c['quiet_files']}",
            "false_suppressions": c["false_suppressions"],
            "wrong_address_acted_on": c["wrong_acted"],
            "counts": dict(c),
        }


def score_file(file: str, lines: list[dict[str, Any]], got: dict[str, Any], scores: list[Score],
               misses: list[dict[str, Any]]) -> None:
    def add(key: str, n: int = 1) -> None:
        for s in scores:
            s.c[key] += n

    form = lines[0].get("form")
    add("files")
    bounce_lines = [ln for ln in lines if ln["kind"] == "bounce" and ln.get("recipient")]
    feedback = [ln for ln in lines if ln["kind"] == "feedback" and ln.get("recipient")]
    kinds = {ln["kind"] for ln in lines}
    expected = {canon(ln["recipient"]) for ln in bounce_lines}
    rows, actions = got["rows"], got["actions"]

    def miss(problem: str, **detail: Any) -> None:
        misses.append({"file": file, "form": form, "problem": problem, **detail,
                       "kind": got["kind"], "why": got["why"][:200]})

    if kinds <= QUIET:
        add("quiet_files")
        delivered = {canon(ln["recipient"]) for ln in lines if ln["kind"] == "delivered"}
        wrong = [a for a in actions if a["type"] in ACTING
                 or (a["type"] == "delivered" and a["address"] not in delivered)]
        if wrong:
            add("false_action_files")
            add("false_suppressions", sum(1 for a in wrong if a["type"] == "suppress"))
            miss("false action", got_actions=[f"{a['type']} {a['address']}" for a in wrong])
    if bounce_lines or kinds <= QUIET:
        add("unrelated_rows", len(got.get("unrelated") or ()))
        for address in rows:
            add("reported")
            if address in expected:
                add("reported_ok")
            elif bounce_lines:
                if rows[address].get("outcome") in ("suppress", "soft_bounce"):
                    add("wrong_acted")
                miss("wrong recipient", got=address, outcome=rows[address].get("outcome"),
                     want=sorted(a for a in expected if a))
    for ln in feedback:
        add("complaint_lines")
        ok = got["kind"] == Kind.COMPLAINT.value and canon(ln["recipient"]) in got["complaints"]
        add("complaint_found", int(ok))
        if not ok:
            miss("complaint missed", want=canon(ln["recipient"]), got=sorted(a for a in got["complaints"] if a))
    for ln in bounce_lines:
        want = canon(ln["recipient"])
        add("lines")
        entry = rows.get(want)
        if ln.get("action") == "delayed":
            add("delayed_lines")
            acted = [a for a in actions if a["address"] == want and a["type"] in ("suppress", "soft_bounce")]
            if acted:
                add("delayed_acted")
                miss("delayed acted on", want=want, got_actions=[a["type"] for a in acted])
        if entry is None:
            miss("recipient missed", want=want, got=sorted(rows))
            continue
        add("found")
        if ln.get("action") != "delayed":
            add("failed_found")
            if any(a["address"] == want and a["type"] in ("suppress", "soft_bounce") for a in actions):
                add("acted")
            else:
                miss("not acted on", want=want, outcome=entry.get("outcome"))
        if ln.get("hard") is not None and ln.get("action") != "delayed":
            add("hard_n")
            if entry["hard"] == ln["hard"]:
                add("hard_ok")
            else:
                miss("hard/soft", want=want, want_hard=ln["hard"], got_hard=entry["hard"],
                     status=entry["status"], label_reason=ln.get("reason"))
        status = entry.get("status")
        if ln.get("permanent") is not None and status:
            add("perm_n")
            if (status[0] == "5") == ln["permanent"]:
                add("perm_ok")
            else:
                miss("permanent/temporary", want=want, want_permanent=ln["permanent"], got_status=status)
        if ln.get("status"):
            add("status_n")
            if status == ln["status"]:
                add("status_ok")
            else:
                miss("status", want=want, want_status=ln["status"], got_status=status)


ROWS = [("recipient recall %", "recipient_recall"), ("recipient precision %", "recipient_precision"),
        ("  incl. unrelated rows %", "recipient_precision_incl_unrelated"),
        ("unrelated rows recorded", "unrelated_rows_recorded"),
        ("failed lines acted on %", "failed_lines_acted_on"), ("hard/soft agreement %", "hard_soft_agreement"), ("permanent/temporary %", "permanent_temporary_agreement"),
        ("status agreement %", "status_agreement"), ("delayed acted on", "delayed_acted_on"),
        ("complaint recipients", "complaint_recipients_found"), ("false actions (files)", "false_actions"),
        ("false suppressions", "false_suppressions"), ("wrong address acted on", "wrong_address_acted_on")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--holdout", action="store_true",
                        help="also measure the held-out part (only at the end of a piece of work)")
    parser.add_argument("--misses", type=int, default=60, help="misses to print (default 60; all are in the JSON)")
    args = parser.parse_args(argv)
    parts = PARTS if args.holdout else PARTS[:1]
    for part in parts:
        if not (DATA / part / "expected.jsonl").is_file():
            print(f"no {DATA / part / 'expected.jsonl'}", file=sys.stderr)
            return 2
    ctx = build_context()
    result: dict[str, Any] = {"data": str(DATA.relative_to(ROOT)), "parts": {}, "misses": {}}
    for part in parts:
        by_file = load_part(part)
        total = Score()
        per_form: dict[str, Score] = defaultdict(Score)
        misses: list[dict[str, Any]] = []
        errors = 0
        for file in sorted(by_file):
            lines = by_file[file]
            raw = (DATA / part / file).read_bytes()
            try:
                decision = classify(Inbound.from_file(raw, f"devset/{part}/{file}", NOW), ctx, NOW)
                got = read_decision(decision)
            except Exception as exc:  # noqa: BLE001 - a crash is a figure, not the end of the run
                errors += 1
                got = {"kind": "error", "rows": {}, "actions": [], "complaints": set(),
                       "review": False, "why": f"{type(exc).__name__}: {exc}", "unrelated": {}}
            score_file(file, lines, got, [total, per_form[lines[0].get("form") or "?"]], misses)
        figures = total.figures()
        figures["classifier_exceptions"] = errors
        result["parts"][part] = {"total": figures, "forms": {f: s.figures() for f, s in sorted(per_form.items())}}
        result["misses"][part] = misses
        print(f"\n== {part} ({figures['files']} files) ==   (issue 21 targets: recall>=97 precision>=99.5 hard/soft>=93)")
        for label, key in ROWS:
            print(f"  {label:26}{str(figures[key]):>10}")
        print(f"  {'classifier exceptions':26}{errors:>10}")
        print(f"\n  per form{'':18}{'files':>6}{'recall':>8}{'prec':>7}{'acted':>7}{'hard':>7}{'status':>8}{'false':>8}{'cmpl':>7}")
        for form, score in sorted(per_form.items()):
            f = score.figures()
            print(f"  {form:26}{f['files']:>6}{str(f['recipient_recall']):>8}{str(f['recipient_precision']):>7}"
                  f"{str(f['failed_lines_acted_on']):>7}{str(f['hard_soft_agreement']):>7}{str(f['status_agreement']):>8}{f['false_actions']:>8}"
                  f"{f['complaint_recipients_found']:>7}")
        order = {"false action": 0, "wrong recipient": 1, "recipient missed": 2, "complaint missed": 3,
                 "delayed acted on": 4, "not acted on": 5, "hard/soft": 5, "permanent/temporary": 6, "status": 7}
        shown = sorted(misses, key=lambda m: (order.get(m["problem"], 9), m["form"] or "", m["file"]))
        print(f"\n  misses ({len(misses)} in all{', first ' + str(args.misses) if len(misses) > args.misses else ''}):")
        for m in shown[:args.misses]:
            detail = {k: v for k, v in m.items() if k not in ("file", "form", "problem", "why")}
            print(f"    {m['problem']:20} {m['file']:44} {json.dumps(detail, ensure_ascii=False)[:150]}")
    out = ROOT / "bench" / "results" / "bounce_devset.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=sorted), encoding="utf-8")
    print(f"\nwritten: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
