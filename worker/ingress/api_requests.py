"""Rights requests and retention through the JSON API (issue 23 items 5 and 6), beside the CLI.

    GET  /v1/rights[?overdue=true]      open rights items, due date first   (scope read)
    POST /v1/rights/{id}/fulfil         do what one asks and close it       (scope admin)
    POST /v1/retention/run              remove what is past its period      (scope admin)

Each runs the same worker.ops function as `unsubd rights list|fulfil` and `unsubd retention
run`; changes record the API key's name as their operator (`api:<name>`). Fulfilling an
access request answers with the export itself (the CLI writes it to a file). Errors are
JSON problems: 400 a bad body or id, 404 an unknown item, 409 an item that cannot be
fulfilled as asked (not a rights item, already closed, a missing new address), 503 when
this process has no database.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from aiohttp import web

from config import Settings
from worker.ingress.api_auth import operator_of, problem
from worker.ingress.api_rights import _body, _json
from worker.ops import requests as rights_requests
from worker.ops import retention
from worker.store.db import Database

MAX_NOTE = 2000


def add_request_routes(app: web.Application, settings: Settings, db: Database | None,
                       clock: Callable[[], datetime]) -> None:
    """Add GET /v1/rights, POST /v1/rights/{id}/fulfil and POST /v1/retention/run to `app`."""

    async def list_rights(request: web.Request) -> web.Response:
        """Open rights requests (access, erasure, rectification, objection) found in emailed
        replies, due date first, each with the days left (negative when overdue)."""
        if db is None:
            return problem(503, "not available in this process")
        flag = request.query.get("overdue", "false").lower()
        if flag not in ("true", "false", "1", "0"):
            return problem(400, "'overdue' must be true or false")
        items = await rights_requests.list_open(db, clock(), overdue=flag in ("true", "1"))
        return _json({"items": [i.to_json() for i in items]})

    async def fulfil(request: web.Request) -> web.Response:
        """Do what the rights item asks and close it: access answers with the export, erasure
        erases, objection puts the opt-out of everything in place, rectification needs
        `new_address`. Body (optional): {"note": "...", "new_address": "..."}."""
        if db is None:
            return problem(503, "not available in this process")
        try:
            review_id = int(request.match_info["id"])
        except ValueError:
            return problem(400, "the rights item id must be a whole number")
        body: dict[str, Any] = {}
        if request.can_read_body:
            got = await _body(request, '{"note": "...", "new_address": "..."}')
            if isinstance(got, web.Response):
                return got
            body = got
        note, new_address = body.get("note", ""), body.get("new_address")
        if not isinstance(note, str) or len(note) > MAX_NOTE:
            return problem(400, f"'note' must be a string of at most {MAX_NOTE} characters")
        if new_address is not None and not isinstance(new_address, str):
            return problem(400, "'new_address' must be a string")
        delivered: dict[str, Any] = {}
        try:
            done = await rights_requests.fulfil(db, settings, review_id, clock(), operator=operator_of(request),
                                                note=note.replace("\x00", ""), new_address=new_address,
                                                deliver=delivered.update)
        except LookupError as exc:
            return problem(404, str(exc))
        except ValueError as exc:                 # RequestError, and a bad new address
            return problem(409, str(exc))
        answer: dict[str, Any] = {"id": review_id, "type": done.item.type, "resolution": done.resolution,
                                  "done": done.done, "operator": operator_of(request),
                                  "event_ids": [a.event_id for a in done.applied if a.event_id]}
        if delivered:
            answer["export"] = delivered.get("export")
            answer["summary"] = delivered.get("summary")
        return _json(answer)

    async def run_retention(request: web.Request) -> web.Response:
        """Remove what is past its retention period (`[retention]` settings), as `unsubd retention
        run`: the counts per class that were due, then what was done. Body (optional):
        {"dry_run": true} only counts. Another run holding the lock: `skipped` says so."""
        if db is None:
            return problem(503, "not available in this process")
        dry_run = False
        if request.can_read_body:
            got = await _body(request, '{"dry_run": true}')
            if isinstance(got, web.Response):
                return got
            dry_run = got.get("dry_run", False)
            if not isinstance(dry_run, bool):
                return problem(400, "'dry_run' must be true or false")
        try:
            result = await retention.run(db, settings, clock(), dry_run=dry_run)
        except ValueError as exc:
            return problem(409, str(exc))
        return _json({"dry_run": result.dry_run, "due": result.due, "done": result.done,
                      "batches": result.batches, "skipped": result.skipped})

    app.router.add_get("/v1/rights", list_rights)
    app.router.add_post("/v1/rights/{id}/fulfil", fulfil)
    app.router.add_post("/v1/retention/run", run_retention)
