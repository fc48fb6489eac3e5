"""Accuracy of handlers.replies.language.identify on the reply development set.

Prints the figures and writes bench/results/language_id.json. Not a pass/fail test.

    .venv/bin/python -m bench.language_id              # the dev part (tests/data/replies/*.toml)
    .venv/bin/python -m bench.language_id --holdout    # the part kept aside: ONLY for the final measurement

What is measured: identify() on each entry's own text (its body as written, with the
sender's name filled in; no quoted history, no signature), the way the reply reader
would call it on the new text of a message. Entries whose body is empty (the request
is only in the Subject) are counted under "no_text" and left out of the ratios.

Per language of the entry (`lang`; for a mixed-language entry, its main language):
* accuracy: identify() named the entry's language;
* unknown: identify() said "unknown" (too short, or no language clearly ahead);
* wrong: identify() named another language (listed under wrong_as);
* precision: correct among those where it named a language.
For the languages unsubd does not read (tests/data/replies/other.toml) the figure that
matters to the reply reader is also given: "taken_for_read" counts texts identified as
a language unsubd reads (such a request would be read with the wrong phrase tables),
which should be 0.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from handlers.replies.language import READ, UNKNOWN, identify
from tests.support import devset

ROOT = Path(__file__).resolve().parents[1]


def run(holdout: bool = False) -> dict[str, Any]:
    entries = devset.load(holdout=holdout)
    rows: dict[str, dict[str, Any]] = defaultdict(lambda: {"entries": 0, "no_text": 0, "correct": 0, "unknown": 0,
                                                            "wrong": 0, "wrong_as": Counter(),
                                                            "taken_for_read": 0})
    misses: list[dict[str, Any]] = []
    timings: list[float] = []
    identify("the model is loaded on first use, which is not what is timed here")
    for entry in entries:
        lang = entry["lang"]
        row = rows[lang]
        row["entries"] += 1
        text = devset.new_text(entry)
        if not text.strip():
            row["no_text"] += 1
            continue
        start = time.perf_counter()
        found = identify(text)
        timings.append(time.perf_counter() - start)
        if found.lang == lang:
            row["correct"] += 1
        elif found.lang == UNKNOWN:
            row["unknown"] += 1
            misses.append({"id": entry.id, "lang": lang, "got": UNKNOWN, "confidence": found.confidence,
                           "candidates": list(found.candidates), "text": text[:80]})
        else:
            row["wrong"] += 1
            row["wrong_as"][found.lang] += 1
            misses.append({"id": entry.id, "lang": lang, "got": found.lang, "confidence": found.confidence,
                           "candidates": list(found.candidates), "text": text[:80]})
        if lang not in READ and found.lang in READ:
            row["taken_for_read"] += 1

    def summary(row: dict[str, Any]) -> dict[str, Any]:
        measured = row["entries"] - row["no_text"]
        named = row["correct"] + row["wrong"]
        out = {k: v for k, v in row.items() if k != "wrong_as"}
        out["wrong_as"] = dict(row["wrong_as"].most_common())
        out["measured"] = measured
        out["accuracy"] = round(row["correct"] / measured, 4) if measured else None
        out["precision"] = round(row["correct"] / named, 4) if named else None
        return out

    per_language = {lang: summary(rows[lang]) for lang in sorted(rows, key=lambda l: (l not in READ, l))}
    read_rows = [rows[lang] for lang in READ if lang in rows]
    other_rows = [rows[lang] for lang in rows if lang not in READ]

    def total(selected: list[dict[str, Any]]) -> dict[str, Any]:
        merged: dict[str, Any] = {"entries": 0, "no_text": 0, "correct": 0, "unknown": 0, "wrong": 0,
                                  "wrong_as": Counter(), "taken_for_read": 0}
        for row in selected:
            for key in ("entries", "no_text", "correct", "unknown", "wrong", "taken_for_read"):
                merged[key] += row[key]
            merged["wrong_as"].update(row["wrong_as"])
        return summary(merged)

    timings.sort()
    return {
        "part": "holdout" if holdout else "dev",
        "entries": len(entries),
        "per_language": per_language,
        "read_languages": total(read_rows),
        "other_languages": total(other_rows),
        "seconds_per_text": {"median": round(timings[len(timings) // 2], 6) if timings else None,
                             "max": round(timings[-1], 6) if timings else None},
        "misses": misses,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--holdout", action="store_true",
                        help="measure the part kept aside (only for the final measurement)")
    args = parser.parse_args(argv)
    result = run(holdout=args.holdout)
    print(f"language identification on the {result['part']} part of tests/data/replies ({result['entries']} entries)")
    print(f"  {'lang':6} {'measured':>8} {'accuracy':>9} {'unknown':>8} {'wrong':>6} {'precision':>9}  wrong as")
    for lang, row in [*result["per_language"].items(), ("READ", result["read_languages"]),
                      ("OTHER", result["other_languages"])]:
        accuracy = "-" if row["accuracy"] is None else f"{row['accuracy']:.3f}"
        precision = "-" if row["precision"] is None else f"{row['precision']:.3f}"
        wrong_as = ", ".join(f"{k} {v}" for k, v in row["wrong_as"].items())
        extra = f"  taken for a read language: {row['taken_for_read']}" if lang not in READ and lang != "READ" else ""
        print(f"  {lang:6} {row['measured']:8} {accuracy:>9} {row['unknown']:8} {row['wrong']:6} {precision:>9}  "
              f"{wrong_as}{extra}")
    print(f"  seconds per text: median {result['seconds_per_text']['median']}, max {result['seconds_per_text']['max']}")
    print(f"  misses ({len(result['misses'])}):")
    for miss in result["misses"]:
        print(f"    {miss['id']:8} {miss['lang']} -> {miss['got']} ({miss['confidence']}, "
              f"{'/'.join(miss['candidates'])}): {miss['text']!r}")
    name = "language_id_holdout.json" if args.holdout else "language_id.json"
    out = ROOT / "bench" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"  written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
