"""bench/bounce_accuracy.py clears every cache keyed by message content between rounds,
so that no timed round profits from having read the same messages before."""

from __future__ import annotations

import importlib
import pkgutil

import handlers
from bench.bounce_accuracy import CONTENT_CACHES, clear_content_caches

# The reading of one message: every module under these packages may hold such a cache.
READERS = ("handlers.bounces", "handlers.replies", "handlers.mail", "handlers.complaints")


def _bounded_caches() -> set[tuple[str, str]]:
    """(module, name) of every functools.lru_cache with a size bound in the readers: a
    bounded cache is one whose keys are not a fixed table (those use @cache)."""
    found = set()
    names = [m.name for m in pkgutil.walk_packages(handlers.__path__, "handlers.") if m.name.startswith(READERS)]
    for name in [*names, "handlers.classify"]:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            info = getattr(value, "cache_parameters", None)
            if callable(info) and info()["maxsize"] is not None and getattr(value, "__module__", None) == name:
                found.add((name, attr))
    return found


def test_every_bounded_cache_of_the_readers_is_cleared_between_rounds() -> None:
    listed = {(module.__name__, name) for module, name in CONTENT_CACHES}
    missing = _bounded_caches() - listed
    assert not missing, f"add to bench.bounce_accuracy.CONTENT_CACHES: {sorted(missing)}"


def test_clearing_empties_them() -> None:
    from handlers.mail.addresses import normalise
    from handlers.replies.intent import _words

    normalise("a@example.org")
    _words("Avregistrera mig.")
    clear_content_caches()
    assert normalise.cache_info().currsize == 0 and _words.cache_info().currsize == 0
