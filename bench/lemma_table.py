"""Write handlers/data/phrases/_lemmas.json: simplemma's inflected forms of the words the
reply reader's lemma rules name (issue 21).

    .venv/bin/python -m bench.lemma_table            # rewrite the table after editing a lemma rule
    .venv/bin/python -m bench.lemma_table --check    # exit 1 if the table is out of date

Why a table and not simplemma at run time: simplemma's dictionaries for the seven
languages unsubd reads take about 800 MB of memory and 6 s of CPU to load (Finnish
alone 400 MB and 3 s), while a parser process may use 1 GB of address space and 5 s
of CPU per message (worker/pipeline/pool.py). The lemma rules only ask "is this
word a form of one of these dictionary words?", so this script asks simplemma once,
here, for every form of every word the rules name (its dictionary read backwards:
form -> lemma, kept where the lemma is a rule's word), and the reader looks words up
in the small table (handlers/replies/intent.py). Not a benchmark: it lives in bench/
beside the other scripts run by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "handlers" / "data" / "phrases" / "_lemmas.json"


def rule_words() -> dict[str, set[str]]:
    """Language -> the plain dictionary words (no globs, classes or "=" forms) its lemma rules name."""
    from handlers.replies.phrases import LEMMA_LISTS, languages, lemma_rules

    words: dict[str, set[str]] = {}
    for lang in languages():
        found: set[str] = set()
        for name in LEMMA_LISTS:
            for _lang, rule in lemma_rules(name, lang):
                for alternatives in rule.tokens:
                    found |= {a.lstrip("+") for a in alternatives
                              if not a.lstrip("+").startswith(("@", "=")) and "*" not in a}
        words[lang] = found
    return words


def build() -> dict[str, dict[str, str]]:
    """Language -> {inflected form: lemma} for the lemmas the rules name."""
    from simplemma.strategies.dictionaries.dictionary_factory import _load_dictionary_from_disk

    table: dict[str, dict[str, str]] = {}
    for lang, wanted in sorted(rule_words().items()):
        forms: dict[str, str] = {}
        if wanted:
            for form, lemma in _load_dictionary_from_disk(lang).items():
                lemma_text = lemma.decode("utf-8").lower()
                form_text = form.decode("utf-8").lower()
                if lemma_text in wanted and form_text != lemma_text and form_text not in wanted:
                    forms[form_text] = lemma_text
        table[lang] = dict(sorted(forms.items()))
    # The words the table was built for: tests/unit/test_reply_rules.py compares them with
    # the rules' words, so that a rule edited without rerunning this script is caught.
    table["_words"] = {lang: sorted(words) for lang, words in sorted(rule_words().items())}  # type: ignore[assignment]
    return table


def render(table: dict[str, dict[str, str]]) -> str:
    return json.dumps(table, ensure_ascii=False, indent=0, sort_keys=True) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the table is out of date")
    args = parser.parse_args()
    text = render(build())
    if args.check:
        current = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
        print("up to date" if current == text else f"{OUT.relative_to(ROOT)} is out of date: run bench.lemma_table")
        sys.exit(0 if current == text else 1)
    OUT.write_text(text, encoding="utf-8")
    counts = {lang: len(forms) for lang, forms in json.loads(text).items() if lang != "_words"}
    print(f"wrote {OUT.relative_to(ROOT)}: {counts}")


if __name__ == "__main__":
    main()
