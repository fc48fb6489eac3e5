"""The OpenAPI 3.1 document of the JSON API (`GET /v1/openapi.json`), generated from the code.

Nothing in it is written by hand as JSON: the paths are the app's own /v1/ routes, read
from its router; each operation's description is its handler's docstring; its scope
comes from worker.ingress.api_auth (`scope_for`); and its request and response bodies
are the pydantic models below, whose `model_json_schema()` is JSON Schema 2020-12, the
dialect OpenAPI 3.1 uses. OPERATIONS says which model each route reads and answers
with; a /v1/ route missing from it still appears, answering "a JSON object", so that
the document never leaves a route out (tests/unit/test_openapi.py checks both).

Every error of the API is a problem object (`Problem`): {"error": "...", "status": N}.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal, Mapping

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from handlers.events.upstream import MAX_SENT, MAX_SENT_ENTRIES, SENT_CHANNELS
from worker.ingress import api_auth

TITLE = "unsubd JSON API"
VERSION = "1"
JSON = "application/json"


class _Open(BaseModel):
    """Objects that may carry more members than the ones named (later versions add some)."""

    model_config = ConfigDict(extra="allow")


class Problem(_Open):
    """What every error answers: a sentence saying what was wrong, and the HTTP status."""

    error: str
    status: int


class Update(_Open):
    """One published update (docs/update.schema.json has the members after `routing_key`)."""

    id: int
    routing_key: str


class UpdatesPage(BaseModel):
    updates: list[Update]
    next: int = Field(description="The `after` to ask with next: the last id here, or the `after` asked with.")


class ContactView(_Open):
    address: str
    contact_id: int | None
    name: str | None
    addresses: list[str]
    units: list[str]
    preferences: Any
    preference_rows: Any
    suppressions: list[Any]
    events: list[Any]
    erased: bool | None = None


class SuppressionRow(_Open):
    address: str
    reason: str
    since: str
    contact_id: int | None


class Suppressions(BaseModel):
    suppressions: list[SuppressionRow]


class ReviewEntry(_Open):
    id: int
    kind: str
    address: str | None
    reason: str
    event_id: str
    created_at: str
    due_at: str | None


class ReviewQueue(BaseModel):
    items: list[ReviewEntry]


class TokenRequest(BaseModel):
    address: str = Field(description="The recipient's email address (a contact imported before).")
    unit: str = Field(description="The sending unit's key.")
    channel: str = Field("email", description="The channel, or '*' for every channel.")


class IssuedHeaders(_Open):
    token: str
    contact_id: int
    address: str
    unit: str
    channel: str
    headers: dict[str, str]
    preferences_url: str
    return_path: str | None
    reply_to: str | None


class SentCountEntry(BaseModel):
    day: date = Field(description="The day (UTC), YYYY-MM-DD: not in the future, at most 400 days ago.")
    unit: str = Field(description="A configured unit's key.")
    channel: Literal[SENT_CHANNELS] = "email"   # type: ignore[valid-type]
    count: int = Field(ge=0, le=MAX_SENT, description="Messages sent that day by the unit on the channel.")


class SentCounts(BaseModel):
    counts: list[SentCountEntry] = Field(min_length=1, max_length=MAX_SENT_ENTRIES)


class SentCountsWritten(BaseModel):
    written: int = Field(description="How many entries were stored (each replacing any earlier count).")


class BadSentCountsProblem(Problem):
    entry: int | None = Field(None, description="The index of the bad entry in `counts`, when one is to blame.")


class Reason(_Open):
    reason: str = Field(description="Why: kept in the audit record.")


class ChangeAddress(_Open):
    new_address: str
    reason: str


class RightsItem(_Open):
    """An open rights request: what is asked, about whom, and by when."""

    id: int
    type: str | None = Field(description="access, erasure, rectification or objection; null when unclear.")
    address: str | None
    created_at: str
    due: str | None = Field(description="YYYY-MM-DD: one calendar month after the request arrived.")
    days_left: int | None = Field(description="Negative once overdue.")
    overdue: bool


class RightsItems(_Open):
    items: list[RightsItem]


class Fulfil(_Open):
    note: str = Field("", description="Kept in the audit record.")
    new_address: str | None = Field(None, description="A rectification request's corrected address.")


class Fulfilled(_Open):
    id: int
    type: str | None
    resolution: str
    done: str
    event_ids: list[str]


class RetentionRun(_Open):
    dry_run: bool = Field(False, description="Only count what is due.")


class RetentionResult(_Open):
    dry_run: bool
    due: dict[str, int]
    done: dict[str, int]
    batches: int
    skipped: str | None


class ContactExport(_Open):
    """Everything held about the address, as `unsubd contacts export` writes it."""


class Erased(_Open):
    erased: bool
    changed: bool
    event_id: str | None


class AddressChanged(_Open):
    changed: bool
    event_id: str | None
    old_address: str
    new_address: str


class OpenApiDocument(_Open):
    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]


@dataclass(frozen=True)
class Query:
    """A query parameter: its name, JSON Schema and meaning."""

    name: str
    schema: Mapping[str, Any]
    description: str


@dataclass(frozen=True)
class Operation:
    """What one route reads and answers: `responses` maps a status to its model (None: no
    body is promised; the string "text" for text/plain beside JSON)."""

    responses: Mapping[int, Any]
    body: type[BaseModel] | None = None
    query: tuple[Query, ...] = ()
    summary: str = ""
    text_too: tuple[int, ...] = field(default=())     # statuses that may answer text/plain instead


OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/v1/updates"): Operation(
        {200: UpdatesPage, 400: Problem}, summary="The changes feed",
        query=(Query("after", {"type": "integer", "minimum": 0, "maximum": 2 ** 63 - 1, "default": 0}, "Updates with a greater id."),
               Query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                     "At most this many."),
               Query("wait", {"type": "number", "minimum": 0, "maximum": 30, "default": 0},
                     "Hold an empty answer up to this many seconds for the next update."))),
    ("GET", "/v1/contacts/{address}"): Operation(
        {200: ContactView, 400: Problem, 404: Problem}, summary="One address: preferences, suppressions, events"),
    ("GET", "/v1/suppressions"): Operation({200: Suppressions}, summary="Active suppressions"),
    ("GET", "/v1/review"): Operation({200: ReviewQueue}, summary="The open review queue"),
    ("POST", "/v1/tokens"): Operation(
        {200: IssuedHeaders, 400: Problem, 404: Problem}, body=TokenRequest, summary="Headers for one recipient"),
    ("POST", "/v1/sent-counts"): Operation(
        {200: SentCountsWritten, 400: BadSentCountsProblem}, body=SentCounts, summary="Daily sent counts"),
    ("GET", "/v1/openapi.json"): Operation({200: OpenApiDocument}, summary="This document"),
    ("GET", "/v1/contacts/{address}/export"): Operation(
        {200: ContactExport, 400: Problem, 404: Problem}, summary="Everything held about an address",
        query=(Query("format", {"type": "string", "enum": ["json", "summary"], "default": "json"},
                     "json, or summary: a short text for the person (text/plain)."),),
        text_too=(200,)),
    ("POST", "/v1/contacts/{address}/erase"): Operation(
        {200: Erased, 400: Problem, 404: Problem, 422: Problem}, body=Reason, summary="Erase an address"),
    ("POST", "/v1/contacts/{address}/change-address"): Operation(
        {200: AddressChanged, 400: Problem, 404: Problem, 409: Problem, 422: Problem}, body=ChangeAddress,
        summary="Correct an address"),
    ("GET", "/v1/rights"): Operation(
        {200: RightsItems, 400: Problem}, summary="Open rights requests, due date first",
        query=(Query("overdue", {"type": "boolean", "default": False}, "Only the overdue ones."),)),
    ("POST", "/v1/rights/{id}/fulfil"): Operation(
        {200: Fulfilled, 400: Problem, 404: Problem, 409: Problem}, body=Fulfil, summary="Fulfil a rights request"),
    ("POST", "/v1/retention/run"): Operation(
        {200: RetentionResult, 400: Problem, 409: Problem}, body=RetentionRun, summary="Run retention"),
}
FALLBACK = Operation({200: _Open})

# Every /v1/ route may answer these: no or a wrong key, a key without the scope, and a
# passing failure of the database (try again).
COMMON = {401: "missing or wrong API key", 403: "the API key lacks the scope this route needs",
          503: "temporarily unavailable, or not available in this process"}


def v1_routes(app: web.Application) -> list[tuple[str, str, Any]]:
    """(method, path pattern, handler) of every /v1/ route, in the order they were added (HEAD left out)."""
    out = []
    for route in app.router.routes():
        resource = route.resource
        pattern = resource.canonical if resource is not None else ""
        if pattern.startswith("/v1/") and route.method not in ("HEAD", "*"):
            out.append((route.method, pattern, route.handler))
    return out


class _Schemas:
    """components.schemas, filled as the operations name models."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, model: Any, mode: Literal["validation", "serialization"]) -> dict[str, Any]:
        name = model.__name__
        if name not in self.components:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
            for sub, definition in schema.pop("$defs", {}).items():
                self.components.setdefault(sub, definition)
            self.components[name] = schema
        return {"$ref": f"#/components/schemas/{name}"}


def _description(handler: Any) -> str:
    return inspect.cleandoc(getattr(handler, "__doc__", None) or "") or "(no description)"


def _operation_id(method: str, pattern: str) -> str:
    return method.lower() + "_" + "_".join(w for w in re.split(r"[^A-Za-z0-9]+", pattern[len("/v1/"):]) if w)


def document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `app`'s /v1/ routes."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for method, pattern, handler in v1_routes(app):
        spec = OPERATIONS.get((method, pattern), FALLBACK)
        scope = api_auth.scope_for(method, pattern)
        parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                      for name in re.findall(r"\{([^}:]+)", pattern)]
        parameters += [{"name": q.name, "in": "query", "required": False, "schema": dict(q.schema),
                        "description": q.description} for q in spec.query]
        responses: dict[str, Any] = {}
        for status, model in sorted(spec.responses.items()):
            content = {JSON: {"schema": schemas.ref(model, "serialization")}}
            if status in spec.text_too:
                content["text/plain"] = {"schema": {"type": "string"}}
            doc = (model.__doc__ or "").strip().split("\n")[0]
            responses[str(status)] = {"description": doc or model.__name__, "content": content}
        for status, text in COMMON.items():
            responses.setdefault(str(status), {"description": text,
                                               "content": {JSON: {"schema": schemas.ref(Problem, "serialization")}}})
        if spec.body is not None:
            responses.setdefault("400", {"description": "the body is not what this route reads",
                                         "content": {JSON: {"schema": schemas.ref(Problem, "serialization")}}})
        operation: dict[str, Any] = {
            "operationId": _operation_id(method, pattern),
            "summary": spec.summary or pattern,
            "description": _description(handler) + f"\n\nNeeds an API key with the `{scope}` scope.",
            "security": [{"bearer": [scope]}],
            "x-scope": scope,
            "responses": responses,
        }
        if parameters:
            operation["parameters"] = parameters
        if spec.body is not None:
            operation["requestBody"] = {"required": True,
                                        "content": {JSON: {"schema": schemas.ref(spec.body, "validation")}}}
        paths.setdefault(pattern, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION,
                 "description": "The JSON API of unsubd. Every route needs `Authorization: Bearer KEY` with a key "
                                "that has the route's scope (read, write or admin); without configured keys the "
                                "API answers on loopback only, to anyone there."},
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "An API key from `api_keys`; its scopes are read, "
                                                          "write and admin."}},
        },
    }
