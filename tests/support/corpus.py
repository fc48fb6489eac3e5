"""Where the shared test corpus lives, and what to do when it is missing.

The corpus sits beside the repository (`../shared/corpus`) and is never copied into
it. `UNSUBD_CORPUS` points somewhere else. Under `CI=true` a missing corpus fails
the tests that need it; locally they are skipped with the reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

DEFAULT = Path(__file__).resolve().parents[3] / "shared" / "corpus"


def corpus_dir() -> Path:
    """The corpus root: $UNSUBD_CORPUS if set, else ../shared/corpus from the repo root."""
    override = os.environ.get("UNSUBD_CORPUS")
    return Path(override).expanduser().resolve() if override else DEFAULT


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require(relative: str = "") -> Path:
    """Return corpus_dir()/relative, or fail (CI) / skip (locally) if it does not exist."""
    path = corpus_dir() / relative
    if not path.exists():
        message = f"test corpus not found at {path} (set UNSUBD_CORPUS to its location)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


def read_jsonl(relative: str) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file in the corpus; [] if it is missing.

    Used at collection time, where failing is not possible; pair it with a test that
    calls `require` so that a missing corpus is reported.
    """
    path = corpus_dir() / relative
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def files(relative: str, pattern: str) -> list[Path]:
    """Sorted files under corpus_dir()/relative matching a glob; [] if missing."""
    root = corpus_dir() / relative
    return sorted(p for p in root.rglob(pattern) if p.is_file()) if root.is_dir() else []
