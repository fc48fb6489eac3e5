"""The data-subject rights routes of the JSON API (issue 23): access, erasure and rectification.

Each runs through the same worker.ops.rights function as its CLI command; changes record
the API key's name as their operator (`api:<name>`, worker.ingress.api_auth). Scopes
are in api_auth.ROUTE_SCOPES: export needs `read`, erase and change-address `admin`.

Errors are JSON problems: 400 for something that is not an address or a body that is
not the expected JSON, 422 for a missing or empty reason, 404 when nothing is held about
the address, 409 when a change of address conflicts (the new address is another
contact's, or was erased), 503 when this process cannot do it.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Callable

from aiohttp import web

from config import Settings
from handlers.mail.addresses import normalise
from worker.ingress.api_auth import operator_of, problem
from worker.ops import rights
from worker.store.db import Database

NO_STORE = {"Cache-Control": "no-store"}        # the answers are about a person


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers=NO_STORE,
                             dumps=lambda v: json.dumps(v, ensure_ascii=False, default=str))


async def _body(request: web.Request, example: str) -> dict[str, Any] | web.Response:
    """The request's JSON object, or a 400 problem that shows `example`."""
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return problem(400, f"the body must be JSON: {example}")
    if not isinstance(body, dict):
        return problem(400, f"the body must be a JSON object: {example}")
    return body


def _reason(body: dict[str, Any]) -> str | web.Response:
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.replace("\x00", "").strip():
        return problem(422, "'reason' is required: a non-empty string, kept in the audit record")
    return reason


def add_rights_routes(app: web.Application, settings: Settings, db: Database | None,
                      clock: Callable[[], datetime]) -> None:
    """Add GET /v1/contacts/{address}/export, POST .../erase and POST .../change-address to `app`."""

    async def export(request: web.Request) -> web.Response:
        """Everything held about the address (GDPR Art. 15): JSON as `unsubd contacts export`,
        or with `?format=summary` the short text for the person, as text/plain."""
        if db is None:
            return problem(503, "not available in this process")
        fmt = request.query.get("format", "json")
        if fmt not in ("json", "summary"):
            return problem(400, "'format' is json (the default) or summary")
        try:
            data = await rights.export(db, settings, request.match_info["address"])
        except ValueError:
            return problem(400, "not an email address")
        if data is None:
            return problem(404, "nothing is held about that address")
        if fmt == "summary":
            return web.Response(text=rights.summary(data) + "\n", content_type="text/plain", charset="utf-8",
                                headers=NO_STORE)
        return _json(data)

    async def erase(request: web.Request) -> web.Response:
        """Erase the address and its contact, keeping its "no" as tombstones (GDPR Art. 17).
        Body: {"reason": "..."}."""
        if db is None:
            return problem(503, "not available in this process")
        body = await _body(request, '{"reason": "..."}')
        if isinstance(body, web.Response):
            return body
        reason = _reason(body)
        if isinstance(reason, web.Response):
            return reason
        if normalise(request.match_info["address"]) is None:
            return problem(400, "not an email address")
        if rights.tombstone_keys(db, settings) is None:
            return problem(503, "no keys to hash erased addresses with: set tokens.keys (UNSUBD_TOKENS__KEYS)")
        try:
            result = await rights.erase(db, settings, request.match_info["address"], reason, clock(),
                                        operator=operator_of(request))
        except ValueError as exc:
            return problem(400, str(exc))
        if result is None:
            return problem(404, "nothing is held about that address; nothing erased")
        if result.applied is None:
            return _json({"erased": True, "changed": False, "event_id": None,
                          "detail": "already erased: only its tombstone is held; nothing changed"})
        return _json({"erased": True, "changed": True, "event_id": result.applied.event_id,
                      "addresses": result.addresses, "updates": result.applied.updates, "counts": result.counts,
                      "operator": operator_of(request)})

    async def change_address(request: web.Request) -> web.Response:
        """Correct a contact's address (GDPR Art. 16), keeping its preferences and history.
        Body: {"new_address": "...", "reason": "..."}."""
        if db is None:
            return problem(503, "not available in this process")
        body = await _body(request, '{"new_address": "...", "reason": "..."}')
        if isinstance(body, web.Response):
            return body
        new = body.get("new_address")
        if not isinstance(new, str):
            return problem(400, "'new_address' is required: the contact's correct email address")
        reason = _reason(body)
        if isinstance(reason, web.Response):
            return reason
        try:
            result = await rights.change_address(db, settings, request.match_info["address"], new, reason, clock(),
                                                 operator=operator_of(request))
        except rights.AddressConflict as exc:
            return problem(409, str(exc), conflict=exc.kind)
        except ValueError as exc:
            return problem(400, str(exc))
        if result is None:
            return problem(404, "no contact has that address; nothing changed")
        return _json({"changed": True, "event_id": result.applied.event_id, "old_address": result.old,
                      "new_address": result.new, "updates": result.applied.updates, "counts": result.counts,
                      "operator": operator_of(request)})

    app.router.add_get("/v1/contacts/{address}/export", export)
    app.router.add_post("/v1/contacts/{address}/erase", erase)
    app.router.add_post("/v1/contacts/{address}/change-address", change_address)
