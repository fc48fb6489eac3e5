"""The contract test (issue 24 item 5): schemathesis reads /v1/openapi.json from the live service
and sends what the document allows (and, for each operation, what it does not), checking
that nothing answers 5xx, that every status is one the document lists, and that every body
matches its declared schema and content type.

The service is the real HTTP app (worker.ingress.http.build_app) on a real socket, on a
SQLite database migrated and holding a contact, a suppression and a review item, served
from a thread of its own (schemathesis's calls are blocking). Bounded: a few dozen examples
per operation, well under a minute in all.
"""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from handlers.model import Action, ActionType, Decision, Kind
from handlers.state.apply import apply
from worker.app import prepare_database
from worker.ingress.http import FEED_STOP, build_app
from worker.ops.contacts import import_rows, parse_csv
from worker.store.db import Database
from tests.conftest import make_settings

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc)
KEY = "contract-test-key-" + "k" * 20
AUTH = {"Authorization": f"Bearer {KEY}"}
ENV = {"UNSUBD_API_KEYS": json.dumps([{"name": "contract", "key": KEY, "scopes": ["read", "write", "admin"]}]),
       "UNSUBD_TOKENS__KEYS": json.dumps({"c1": "a-contract-test-token-key-long-enough"})}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
POSITIVE, NEGATIVE = 15, 8           # examples per operation


class Service:
    """build_app on 127.0.0.1 (a free port), on its own loop in a thread."""

    def __init__(self, tmp: Path) -> None:
        self.settings = make_settings(f"sqlite+aiosqlite:///{tmp / 'contract.db'}", **ENV)
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.stop: asyncio.Event | None = None
        self.port = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="contract-service", daemon=True)

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:       # noqa: BLE001 - shown by the test
            self.error = exc
            self.started.set()

    async def _serve(self) -> None:
        from aiohttp import web

        db = Database.connect(self.settings.database_url)
        await prepare_database(self.settings, db, lambda: NOW)
        await seed(db, self.settings)

        async def figures() -> dict[str, Any]:
            return {}

        app = build_app(self.settings, db.sessions, figures, db=db, clock=lambda: datetime.now(timezone.utc))
        app[FEED_STOP].set()                  # /v1/updates?wait=S answers at once: no example waits
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]     # noqa: SLF001
        self.stop = asyncio.Event()
        self.started.set()
        await self.stop.wait()
        await runner.cleanup()
        await db.close()

    def __enter__(self) -> Service:
        self.thread.start()
        assert self.started.wait(30), "the service did not start"
        if self.error is not None:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        if self.stop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)


async def seed(db: Database, settings: Any) -> None:
    csv = "address,name,units,recipient_id\nanna@example.se,Anna,alumni,R-1\nbo@example.se,Bo,events,R-2\n"
    await import_rows(db, parse_csv(csv, settings), NOW, "seed.csv", operator="contract")
    bounce = Action(ActionType.SUPPRESS, "bo@example.se", status="5.1.1", reason="user_unknown", hard=True)
    await apply(Decision(item_id="seed-bounce", kind=Kind.BOUNCE, actions=(bounce,), reason="dsn 5.1.1"),
                db.unit_of_work(), NOW)
    await apply(Decision(item_id="seed-review", kind=Kind.OPTOUT, review=True, reason="unclear request"),
                db.unit_of_work(), NOW)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with Service(tmp_path_factory.mktemp("contract")) as s:
        yield s


def _operations(service: Service) -> list[Any]:
    base = f"http://127.0.0.1:{service.port}"
    schema = schemathesis.openapi.from_url(f"{base}/v1/openapi.json", headers=AUTH, timeout=10)
    return [result.ok() for result in schema.get_all_operations()]


def _run(operation: Any, base: str, mode: Any, examples: int) -> int:
    calls = 0

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def exercise(case: Any) -> None:
        nonlocal calls
        response = case.call(base_url=base, headers=AUTH, timeout=15)
        calls += 1
        case.validate_response(response, checks=CHECKS)

    exercise()
    return calls


def test_the_live_service_keeps_its_openapi_contract(service):
    base = f"http://127.0.0.1:{service.port}"
    operations = _operations(service)
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /v1/sent-counts", "GET /v1/updates", "GET /v1/contacts/{address}", "POST /v1/tokens"}
    for operation in operations:
        calls = _run(operation, base, schemathesis.GenerationMode.POSITIVE, POSITIVE)
        assert calls >= 1, f"{operation.method} {operation.path}: no example ran"
        if operation.method.upper() == "POST" or operation.query:
            _run(operation, base, schemathesis.GenerationMode.NEGATIVE, NEGATIVE)


def test_a_broken_contract_is_caught(service):
    """The checks can fail: a document that promises a shape the service does not answer."""
    base = f"http://127.0.0.1:{service.port}"
    (review,) = [op for op in _operations(service) if op.path == "/v1/review"]
    review.definition.raw["responses"]["200"]["content"]["application/json"]["schema"] = {
        "type": "object", "required": ["nothing-has-this"]}
    with pytest.raises(BaseExceptionGroup) as caught:       # schemathesis's FailureGroup
        _run(review, base, schemathesis.GenerationMode.POSITIVE, 1)
    found = getattr(caught.value, "exceptions", None) or [caught.value]
    assert any(type(e).__name__ == "JsonSchemaError" and "nothing-has-this" in str(e) for e in found), found
