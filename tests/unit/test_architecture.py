"""The layout's rules, read from the code itself (DESIGN.md "Layout", STYLE.md):

* handlers/ decides: it never imports worker/, a driver, a socket or a clock, and never
  reads the environment;
* no import circles inside handlers/ (module level or inside functions);
* only worker/store/ writes rows of the state tables; the queue writes only its own
  inbound items, the outbox relay only marks outbox rows published;
* every folder of handlers/ and worker/ is a package with a docstring saying what it holds.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HANDLERS = sorted((REPO / "handlers").rglob("*.py"))
WORKER = sorted((REPO / "worker").rglob("*.py"))

# What deciding code may not touch: transports, drivers, the network, processes.
FORBIDDEN_IN_HANDLERS = {"worker", "sqlalchemy", "aiohttp", "aiosmtpd", "aio_pika", "aiormq", "asyncpg", "aiosqlite",
                         "socket", "subprocess", "smtplib", "urllib.request", "http.client", "dns", "requests",
                         "multiprocessing", "threading", "asyncio"}
STATE_MODELS = {"Contact", "Address", "Preference", "Suppression", "Event", "EventAddress", "Membership",
                "SoftBounce", "ReviewItem", "Unit"}
# Folders outside the store that write rows, and the only tables they may write.
OWN_ROWS = {"worker/queue": {"InboundItem"}, "worker/outbox": {"Outbox"}}
WRITES = {"insert", "update", "delete"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, ast.AST]]:
    """Every module an import statement in the file names (anywhere in the file)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, node) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node))
            found += [(f"{node.module}.{a.name}", node) for a in node.names]
    return found


@pytest.mark.parametrize("path", HANDLERS, ids=lambda p: str(p.relative_to(REPO)))
def test_handlers_do_no_io_and_never_import_worker(path: Path) -> None:
    bad = sorted({name for name, _ in imports(path)
                  if any(name == f or name.startswith(f + ".") for f in FORBIDDEN_IN_HANDLERS)})
    assert not bad, f"{path.relative_to(REPO)} imports {bad}"
    text = path.read_text(encoding="utf-8")
    for call in (r"os\.environ", r"os\.getenv", r"datetime\.now\(", r"datetime\.utcnow\(", r"time\.time\(",
                 r"(?<![\w.])open\("):
        assert not re.search(call, text), f"{path.relative_to(REPO)} uses {call}: pass it in instead"


def test_no_import_circles_in_handlers() -> None:
    known = {module_name(p): p for p in HANDLERS}
    graph = {m: sorted({name for name, _ in imports(p) if name in known and name != m}) for m, p in known.items()}
    # Importing a package runs its __init__: an edge to a module is an edge to its packages too.
    for m in graph:
        graph[m] = sorted(set(graph[m]) | {".".join(n.split(".")[:i]) for n in graph[m]
                                           for i in range(2, n.count(".") + 1) if ".".join(n.split(".")[:i]) in known
                                           and not m.startswith(".".join(n.split(".")[:i]) + ".")})
    seen: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        seen[m] = 1
        stack.append(m)
        for n in graph[m]:
            if seen.get(n) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in seen:
                visit(n)
        stack.pop()
        seen[m] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m)


def _writes(path: Path) -> tuple[bool, set[str]]:
    """(does the file write rows, which models it names), from its imports and calls."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    write_names = set()
    models = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                if node.module.startswith("sqlalchemy") and a.name in WRITES:
                    write_names.add(a.asname or a.name)
                if node.module == "worker.store.models" and a.name in STATE_MODELS | {"InboundItem", "Outbox"}:
                    models.add(a.name)
    writes = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr in ("add", "add_all", "merge") and isinstance(f.value, ast.Name) \
                    and f.value.id in ("s", "session"):
                writes = True
        elif isinstance(node, ast.Name) and node.id in write_names:
            writes = True       # called, or picked by dialect (`insert = pg_insert if ... else sqlite_insert`)
    return writes, models


@pytest.mark.parametrize("path", [p for p in WORKER if not str(p.relative_to(REPO)).startswith("worker/store/")],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_only_the_store_writes_rows(path: Path) -> None:
    writes, models = _writes(path)
    rel = str(path.relative_to(REPO))
    if not writes:
        return
    own = next((tables for folder, tables in OWN_ROWS.items() if rel.startswith(folder + "/")), None)
    assert own is not None, f"{rel} writes rows: state changes go through handlers.state.apply and worker/store"
    assert models <= own, f"{rel} may write only {sorted(own)} rows, but names {sorted(models - own)}"


def test_the_store_check_sees_a_writer() -> None:
    """The check above must be able to fail: the store's own write statements are a writer, and
    so is a statement picked by dialect before it is called."""
    writes, models = _writes(REPO / "worker" / "store" / "statements.py")
    assert writes and {"Preference", "Suppression"} <= models
    writes, models = _writes(REPO / "worker" / "store" / "units.py")
    assert writes and models == {"Unit"}


@pytest.mark.parametrize("folder", sorted({p.parent for p in HANDLERS + WORKER if "migrations" not in p.parts}),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_every_folder_is_a_package_that_says_what_it_holds(folder: Path) -> None:
    init = folder / "__init__.py"
    assert init.is_file(), f"{folder.relative_to(REPO)} has no __init__.py"
    assert ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), f"{init.relative_to(REPO)} has no docstring"


# Where handlers read the organisation from the settings object itself: only to build the
# Context (handlers.context) and the keyring it holds.
SETTINGS_READERS = {("handlers/context.py", "from_settings"), ("handlers/tokens.py", "keyring_from_settings")}


@pytest.mark.parametrize("path", HANDLERS, ids=lambda p: str(p.relative_to(REPO)))
def test_handlers_take_a_typed_context_not_the_settings(path: Path) -> None:
    rel = str(path.relative_to(REPO))
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (rel, node.name) not in SETTINGS_READERS:
            names = {a.arg for a in node.args.args + node.args.kwonlyargs}
            assert "settings" not in names, f"{rel}:{node.lineno} {node.name}() takes settings: take a Context"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" \
                and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in ("ctx", "settings"):
            raise AssertionError(f"{rel}:{node.lineno} reads the context with getattr: its fields are typed")
