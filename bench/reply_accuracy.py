"""Accuracy of reply, auto-reply and complaint handling on ../shared/corpus/mail.

Prints the figures and writes bench/results/reply_accuracy.json. Not a pass/fail
test: the targets (issue 4) are printed beside the figures.

    .venv/bin/python -m bench.reply_accuracy        # UNSUBD_CORPUS overrides ../shared/corpus
    .venv/bin/python -m bench.reply_accuracy --holdout   # also the held-aside part: ONLY for the final measurement

It also prints the figures on the reply development set (tests/data/replies, built by
tests/support/devset.py; issue 21) and, only with --holdout, on the part kept aside.
Each message is sent as over SMTP: envelope sender the From address, recipient
reply@mail.example.org. On the development set:
* requests acted on: opt-outs and erasure requests (languages unsubd reads) acted on
  (review=False) with an UNSUBSCRIBE for the label's address whose scope covers the
  label's; "review" are those queued for a person; "silent" neither (the failure
  issue 21 is about);
* other requests (opt-ins, and any request in a language unsubd does not read): acted
  on or in review, never silent;
* false opt-outs: an UNSUBSCRIBE acted on for a non-request, or for another address;
* ordinary replies to review: replies (label reply) queued for review;
* erasure marked: erasure requests whose decision carries evidence["erasure"] = True.

Definitions:
* false opt-out: an UNSUBSCRIBE action (acted on, review=False) on a message whose
  label is not an opt-out (nor a malformed one that allows it), or on an address
  other than the label's; any action at all on a victim.example address also counts;
* opt-out recall: labelled opt-outs whose decision is kind optout with an
  UNSUBSCRIBE proposal for the label's address (acted, or queued for review with
  that proposal; "acted" is printed too);
* scope covering: the proposal's units and channels each include the label's
  (predicted ⊇ label); over-scoping: strictly more than the label;
* auto-reply recall: labelled auto-replies decided as kind autoreply;
* complaint recipients: labelled complaints whose address is in the actions;
* exceptions: messages where classify() raised or returned "classifier error";
* confidence: how many decisions are high, medium or low (handlers.model levels),
  per decided kind, and the lowest confidence of an opt-out acted on.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

import config
from handlers import ActionType, Inbound, classify
from handlers.context import Context
from handlers.model import ALL, confidence_level, confidence_of

NOW = datetime(2026, 4, 30, 12, 0, tzinfo=timezone.utc)
ALL_UNITS = {"alumni", "research-news", "student-comms", "events"}
ALL_CHANNELS = {"email", "sms", "phone", "letter", "web"}


def corpus_root() -> Path:
    override = os.environ.get("UNSUBD_CORPUS")
    return Path(override).expanduser().resolve() if override else ROOT.parent / "shared" / "corpus"


def _as_set(value: Any, everything: set[str]) -> set[str]:
    return set(everything) if value in (ALL, "all", None) else set(value)


def run() -> dict[str, Any]:
    root = corpus_root() / "mail"
    ctx = Context.from_settings(config.load({}, ROOT / "config" / "example.toml"))
    labels = [json.loads(line) for line in (root / "labels.jsonl").read_text(encoding="utf-8").splitlines()
              if line.strip()]
    counts: dict[str, int] = defaultdict(int)
    per_lang: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    disagreements: list[dict[str, Any]] = []
    confidence: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    acted_confidences: list[float] = []
    for label in labels:
        path = root / label["file"]
        try:
            decision = classify(Inbound.from_file(path.read_bytes(), path.name, NOW), ctx, NOW)
            crashed = "classifier error" in decision.reason
        except Exception as exc:  # noqa: BLE001 - counted, never hidden
            counts["exceptions"] += 1
            disagreements.append({"file": label["file"], "problem": f"raised {type(exc).__name__}"})
            continue
        if crashed:
            counts["exceptions"] += 1
            disagreements.append({"file": label["file"], "problem": decision.reason})
        kind, lang = label["kind"], label.get("lang") or "und"
        level = confidence_level(confidence_of(decision))
        confidence[decision.kind.value][level] += 1
        confidence["all"][level] += 1
        want = (label.get("address") or "").lower()
        optout_ok = kind == "optout" or "optout" in (label.get("also_ok") or [])
        unsubs = [a for a in decision.actions if a.type is ActionType.UNSUBSCRIBE]
        counts[f"label_{kind}"] += 1
        if kind == "malformed":
            counts["hostile"] += 1
        for action in decision.actions:
            if action.address.endswith("@victim.example") or action.address.endswith(".victim.example"):
                counts["victim_actions"] += 1
                disagreements.append({"file": label["file"], "problem": f"action on {action.address}"})
        acted = [a for a in unsubs if not decision.review] if decision.kind.value != "complaint" else []
        if acted and (not optout_ok or any(a.address != want for a in acted)):
            counts["false_optouts"] += 1
            disagreements.append({"file": label["file"], "problem": "false opt-out",
                                  "actions": [a.to_json() for a in acted]})
        if kind == "optout":
            per_lang[lang]["optouts"] += 1
            proposal = next((a for a in unsubs if a.address == want), None)
            if decision.kind.value == "optout" and proposal is not None:
                counts["optout_found"] += 1
                per_lang[lang]["optout_found"] += 1
                counts["optout_acted"] += not decision.review
                if not decision.review:
                    acted_confidences.append(confidence_of(decision))
                scope = label.get("scope") or {}
                units_w, chans_w = _as_set(scope.get("units"), ALL_UNITS), _as_set(scope.get("channels"), ALL_CHANNELS)
                units_p, chans_p = _as_set(proposal.units, ALL_UNITS), _as_set(proposal.channels, ALL_CHANNELS)
                if units_p >= units_w and chans_p >= chans_w:
                    counts["scope_covering"] += 1
                    per_lang[lang]["scope_covering"] += 1
                    if units_p > units_w or chans_p > chans_w:
                        counts["over_scoped"] += 1
                        disagreements.append({"file": label["file"], "problem": "over-scoped",
                                              "label": scope, "got": proposal.to_json()})
                else:
                    disagreements.append({"file": label["file"], "problem": "scope does not cover label",
                                          "label": scope, "got": proposal.to_json()})
            else:
                disagreements.append({"file": label["file"], "problem": "opt-out missed",
                                      "kind": decision.kind.value, "why": decision.reason})
        elif kind == "autoreply":
            per_lang[lang]["autoreplies"] += 1
            if decision.kind.value == "autoreply" and not decision.actions:
                counts["autoreply_found"] += 1
                per_lang[lang]["autoreply_found"] += 1
            else:
                disagreements.append({"file": label["file"], "problem": "auto-reply missed",
                                      "kind": decision.kind.value, "why": decision.reason})
        elif kind == "complaint":
            if decision.kind.value == "complaint" and any(a.address == want for a in decision.actions):
                counts["complaint_found"] += 1
            else:
                disagreements.append({"file": label["file"], "problem": "complaint recipient missed",
                                      "why": decision.reason})
        elif kind == "reply":
            per_lang[lang]["replies"] += 1
            if decision.kind.value == "reply":
                counts["reply_found"] += 1
                per_lang[lang]["reply_found"] += 1
            else:
                disagreements.append({"file": label["file"], "problem": "reply read as " + decision.kind.value,
                                      "why": decision.reason})

    def ratio(a: str, b: str) -> float | None:
        return round(counts[a] / counts[b], 4) if counts[b] else None

    return {
        "corpus": str(root),
        "messages": len(labels),
        "false_optouts": counts["false_optouts"],
        "victim_actions": counts["victim_actions"],
        "optout_recall": ratio("optout_found", "label_optout"),
        "optout_acted": ratio("optout_acted", "label_optout"),
        "scope_covering": ratio("scope_covering", "label_optout"),
        "over_scoped": counts["over_scoped"],
        "autoreply_recall": ratio("autoreply_found", "label_autoreply"),
        "reply_recall": ratio("reply_found", "label_reply"),
        "complaint_recipients": f"{counts['complaint_found']}/{counts['label_complaint']}",
        "hostile_messages": counts["hostile"],
        "exceptions": counts["exceptions"],
        "per_language": {k: dict(v) for k, v in sorted(per_lang.items())},
        "confidence": {k: {lvl: v.get(lvl, 0) for lvl in ("high", "medium", "low")}
                       for k, v in sorted(confidence.items())},
        "lowest_acted_optout_confidence": min(acted_confidences) if acted_confidences else None,
        "disagreements": disagreements,
    }


DEVSET_TARGETS = {"optouts_acted_covering": ">= 0.90", "other_requests_silent": "0", "false_optouts": "0",
                  "victim_actions": "0", "replies_to_review": "<= 0.10", "autoreply_recall": ">= 0.97",
                  "requests_silent": "0"}


def run_devset(holdout: bool = False) -> dict[str, Any]:
    """Figures on the reply development set (or, with holdout=True, on the part kept aside)."""
    from tests.support import devset

    ctx = Context.from_settings(config.load({}, ROOT / "config" / "example.toml"))
    counts: dict[str, int] = defaultdict(int)
    per_lang: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    misses: list[dict[str, Any]] = []
    for entry in devset.load(holdout=holdout):
        label = devset.expected(entry)
        raw = devset.build(entry)
        sender = devset.sender(entry)[1]
        item = Inbound.from_smtp(raw, sender, (devset.REPLY_ADDRESS,), NOW)
        decision = classify(item, ctx, NOW)
        own, lang = label["label"], label["lang"]
        read = lang in devset.NORDIC
        row = per_lang[lang]
        row["entries"] += 1
        if "classifier error" in decision.reason:
            counts["exceptions"] += 1
        unsubs = [a for a in decision.actions if a.type is ActionType.UNSUBSCRIBE]
        acted = [a for a in unsubs if not decision.review] if decision.kind.value != "complaint" else []
        for action in decision.actions:
            if action.address.endswith("victim.example"):
                counts["victim_actions"] += 1
        want = (label.get("address") or "").lower()
        if acted and (label["kind"] != "optout" or any(a.address not in (want, "") for a in acted)):
            counts["false_optouts"] += 1
            misses.append({"id": entry.id, "problem": "false opt-out", "why": decision.reason})
        short = {"id": entry.id, "kind": decision.kind.value, "review": decision.review, "why": decision.reason}
        if own in ("optout", "erasure") and read:
            counts["optouts"] += 1
            row["optouts"] += 1
            proposal = next((a for a in unsubs if a.address in (want, "")), None)
            covering = False
            if proposal is not None:
                scope = label.get("scope") or {}
                units_w, chans_w = _as_set(scope.get("units"), ALL_UNITS), _as_set(scope.get("channels"), ALL_CHANNELS)
                units_p, chans_p = _as_set(proposal.units, ALL_UNITS), _as_set(proposal.channels, ALL_CHANNELS)
                covering = units_p >= units_w and chans_p >= chans_w
                if covering and (units_p > units_w or chans_p > chans_w):
                    counts["over_scoped"] += 1
                    misses.append({**short, "problem": "over-scoped", "got": proposal.to_json(), "label": scope})
            if own == "erasure":
                counts["erasures"] += 1
                counts["erasure_marked"] += bool(decision.evidence.get("erasure"))
            if not decision.review and decision.kind.value == "optout" and covering:
                counts["optouts_acted_covering"] += 1
                row["acted"] += 1
            elif decision.review:
                counts["optouts_review"] += 1
                row["review"] += 1
                misses.append({**short, "problem": "opt-out in review"})
            elif acted:
                counts["optouts_wrong_scope"] += 1
                row["wrong_scope"] += 1
                misses.append({**short, "problem": "acted, scope does not cover",
                               "got": proposal.to_json() if proposal else None, "label": label.get("scope")})
            else:
                counts["optouts_silent"] += 1
                row["silent"] += 1
                misses.append({**short, "problem": "SILENT opt-out"})
        elif own in ("optout", "erasure", "optin"):
            counts["other_requests"] += 1
            row["other_requests"] += 1
            if decision.review or decision.actions:
                counts["other_requests_handled"] += 1
            else:
                counts["other_requests_silent"] += 1
                row["silent"] += 1
                misses.append({**short, "problem": "SILENT request"})
        elif own == "reply":
            counts["replies"] += 1
            row["replies"] += 1
            if decision.review:
                counts["replies_to_review"] += 1
                row["review"] += 1
                misses.append({**short, "problem": "reply to review"})
            elif decision.kind.value != "reply":
                misses.append({**short, "problem": "reply read as " + decision.kind.value})
        elif own == "autoreply":
            counts["autoreplies"] += 1
            if decision.kind.value == "autoreply" and not decision.actions:
                counts["autoreply_found"] += 1
            else:
                misses.append({**short, "problem": "auto-reply missed"})

    def ratio(a: str, b: str) -> float | None:
        return round(counts[a] / counts[b], 4) if counts[b] else None

    return {
        "part": "holdout" if holdout else "development",
        "optouts": counts["optouts"],
        "optouts_acted_covering": ratio("optouts_acted_covering", "optouts"),
        "optouts_review": counts["optouts_review"],
        "optouts_wrong_scope": counts["optouts_wrong_scope"],
        "requests_silent": counts["optouts_silent"] + counts["other_requests_silent"],
        "other_requests": counts["other_requests"],
        "other_requests_silent": counts["other_requests_silent"],
        "over_scoped": counts["over_scoped"],
        "erasure_marked": f"{counts['erasure_marked']}/{counts['erasures']}",
        "false_optouts": counts["false_optouts"],
        "victim_actions": counts["victim_actions"],
        "replies": counts["replies"],
        "replies_to_review": ratio("replies_to_review", "replies"),
        "autoreply_recall": ratio("autoreply_found", "autoreplies"),
        "exceptions": counts["exceptions"],
        "per_language": {k: dict(v) for k, v in sorted(per_lang.items())},
        "misses": misses,
    }


def print_devset(result: dict[str, Any]) -> None:
    print(f"reply {result['part']} set (tests/data/replies)")
    for key in ("optouts", "optouts_acted_covering", "optouts_review", "optouts_wrong_scope", "requests_silent",
                "other_requests", "other_requests_silent", "over_scoped", "erasure_marked", "false_optouts",
                "victim_actions", "replies", "replies_to_review", "autoreply_recall", "exceptions"):
        target = f"   (target {DEVSET_TARGETS[key]})" if key in DEVSET_TARGETS else ""
        print(f"  {key:24} {result[key]}{target}")
    print("  per language:")
    for lang, row in result["per_language"].items():
        print(f"    {lang:4} " + ", ".join(f"{k} {v}" for k, v in sorted(row.items())))
    print(f"  misses ({len(result['misses'])}):")
    for row in result["misses"]:
        print(f"    {row['id']}: {row['problem']} ({row.get('why')})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--holdout", action="store_true",
                        help="also measure the held-aside part (only for the final measurement)")
    args = parser.parse_args()
    result = run()
    targets = {"false_optouts": "0", "optout_recall": ">= 0.95", "scope_covering": ">= 0.90",
               "autoreply_recall": ">= 0.95", "exceptions": "0", "victim_actions": "0"}
    print(f"reply accuracy over {result['corpus']} ({result['messages']} messages)")
    for key in ("false_optouts", "victim_actions", "optout_recall", "optout_acted", "scope_covering", "over_scoped",
                "autoreply_recall", "reply_recall", "complaint_recipients", "hostile_messages", "exceptions"):
        target = f"   (target {targets[key]})" if key in targets else ""
        print(f"  {key:22} {result[key]}{target}")
    print("  per language:")
    for lang, row in result["per_language"].items():
        print(f"    {lang:4} " + ", ".join(f"{k} {v}" for k, v in sorted(row.items())))
    print("  confidence (high / medium / low) by decided kind:")
    for kind, row in result["confidence"].items():
        print(f"    {kind:10} {row['high']:3} / {row['medium']:3} / {row['low']:3}")
    print(f"  lowest confidence of an opt-out acted on: {result['lowest_acted_optout_confidence']}")
    print(f"  disagreements ({len(result['disagreements'])}):")
    for row in result["disagreements"]:
        print(f"    {row['file']}: {row['problem']}" + (f" ({row.get('why')})" if row.get("why") else ""))
    result["devset"] = run_devset()
    print_devset(result["devset"])
    if args.holdout:
        result["holdout"] = run_devset(holdout=True)
        print_devset(result["holdout"])
    out = ROOT / "bench" / "results" / "reply_accuracy.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"  written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
