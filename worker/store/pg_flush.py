"""PostgreSQL: a unit of work's held rows written in one statement.

Each table's rows travel as one JSON array and are inserted by a data-modifying WITH
query, so a flush is one round trip whatever the number of tables and rows, and its
SQL depends only on which tables and columns have rows (SQLite runs one executemany
per table instead: statements.SQLITE_INSERTS).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from sqlalchemy import String, Text, TypeDecorator, bindparam, cast, column, func, literal_column, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert

from worker.store.models import Contact
from worker.store.statements import INSERT_SLOTS, on_conflict

_T_CONTACT = Contact.__table__
_PG_INSERTS: dict[tuple[tuple[str, tuple[str, ...]], ...], Any] = {}


def pg_insert_all(shape: tuple[tuple[str, tuple[str, ...]], ...]) -> Any:
    """PostgreSQL: one statement that inserts the held rows of several tables (and
    sets the sequence numbers of the contacts they change).

    `shape` names the slots with rows and their columns. Each slot's rows travel as one
    JSON array (parameter `rows_<slot>`), turned back into rows by jsonb_to_recordset
    and inserted by a data-modifying WITH query; the statement's text depends only on
    the shape, so it is prepared once, whatever the number of rows. Foreign keys are
    checked at the end of the statement, when every part has run.
    """
    stmt = _PG_INSERTS.get(shape)
    if stmt is not None:
        return stmt
    parts = []
    for slot, names in shape:
        if slot == "contact_seq":             # rows of CONTACT_SEQ's parameters
            c = _T_CONTACT.c
            rows = _json_rows(slot, [column("b_id", c.id.type), column("b_seq", c.seq.type),
                                     column("b_now", _record_type(c.updated_at.type))])
            parts.append(update(_T_CONTACT).where(c.id == rows.c.b_id)
                         .values(seq=rows.c.b_seq, updated_at=rows.c.b_now).cte(f"w_{slot}"))
            continue
        table = INSERT_SLOTS[slot]
        rows = _json_rows(slot, [column(n, _record_type(table.c[n].type)) for n in names])
        ins = pg_insert(table).from_select(list(names), select(*(rows.c[n] for n in names)))
        if slot in ("suppression", "preference", "soft_bounce"):
            ins = on_conflict(table, ins)
        parts.append(ins.cte(f"w_{slot}"))
    stmt = _PG_INSERTS[shape] = select(literal_column("1")).add_cte(*parts)
    return stmt


def _json_rows(slot: str, columns: list[Any]) -> Any:
    """The rows passed as the JSON array parameter `rows_<slot>`, as a table."""
    return (func.jsonb_to_recordset(cast(bindparam(f"rows_{slot}", type_=Text()), JSONB))
            .table_valued(*columns).render_derived(name=f"r_{slot}", with_types=True))


def _record_type(type_: Any) -> Any:
    """The type a column's value is read as from the JSON rows. Text for strings, so
    that the INSERT itself checks their length, as it does for a bound value."""
    if isinstance(type_, TypeDecorator):
        type_ = type_.impl
    return Text() if isinstance(type_, String) else type_


# A JSON escape of U+0000 that is not itself an escaped backslash followed by "u0000".
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def pg_json(rows: list[dict[str, Any]]) -> str:
    """`rows` as the JSON array a flush passes to PostgreSQL.

    PostgreSQL's text and jsonb cannot hold U+0000, and evidence quotes hostile mail
    (NUL bytes in headers and bodies are in the corpus): each NUL becomes a visible
    U+FFFD instead of failing the transaction.
    """
    text = json.dumps(rows, default=_json_value, separators=(",", ":"))
    return _NUL_ESCAPE.sub(r"\1\\ufffd", text) if "\\u0000" in text else text


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use UTC-aware datetimes")
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} cannot be written as a JSON row")
