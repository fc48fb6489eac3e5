"""HTTP: health, metrics and the JSON API under /v1/ (aiohttp, on the worker's loop).

Promise 5: GET never changes state.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any, Awaitable, Callable

from aiohttp import web
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from config import Settings
from worker.models import Outbox

log = logging.getLogger("unsubd.http")

MAX_PAGE = 1000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _problem(status: int, title: str) -> web.Response:
    return web.json_response({"error": title, "status": status}, status=status)


def build_app(settings: Settings, sessions: async_sessionmaker[AsyncSession],
              metrics: Callable[[], Awaitable[dict[str, Any]]]) -> web.Application:
    keys = [k.encode() for k in settings.api_keys]

    @web.middleware
    async def api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/v1/") and keys:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip().encode()
            if not any(hmac.compare_digest(given, k) for k in keys):
                return _problem(401, "missing or wrong API key (Authorization: Bearer KEY)")
        return await handler(request)

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as exc:              # noqa: BLE001 - infrastructure failure: 503, details in the log
            log.warning("request failed: %s %s", request.path, type(exc).__name__)
            return _problem(503, "temporarily unavailable, try again")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        async with sessions() as s:
            await s.execute(text("SELECT 1"))
        return web.json_response({"status": "ready"})

    async def metrics_text(request: web.Request) -> web.Response:
        lines = []
        for name, value in sorted((await metrics()).items()):
            lines.append(f"unsubd_{name} {value}")
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def updates(request: web.Request) -> web.Response:
        """The changes feed: published updates with id > `after`, oldest first."""
        try:
            after = int(request.query.get("after", "0"))
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return _problem(400, "'after' and 'limit' must be whole numbers")
        if after < 0 or not 1 <= limit <= MAX_PAGE:
            return _problem(400, f"'after' must be >= 0 and 'limit' between 1 and {MAX_PAGE}")
        async with sessions() as s:
            rows = (await s.scalars(select(Outbox).where(Outbox.id > after, Outbox.published_at.is_not(None))
                                    .order_by(Outbox.id).limit(limit))).all()
        items = [{"id": r.id, "routing_key": r.routing_key, **r.payload} for r in rows]
        return web.json_response({"updates": items, "next": rows[-1].id if rows else after})

    app = web.Application(middlewares=[errors, api_key], client_max_size=1024 * 1024)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_text)
    app.router.add_get("/v1/updates", updates)
    return app


class HttpServer:
    def __init__(self, settings: Settings, app: web.Application) -> None:
        self._settings = settings
        self._runner = web.AppRunner(app, access_log=None)
        self.port: int | None = None

    async def start(self) -> tuple[str, int]:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._settings.http_host, self._settings.http_port)
        await site.start()
        sockets = site._server.sockets if site._server else []      # noqa: SLF001 - aiohttp has no public getter
        host, port = sockets[0].getsockname()[:2] if sockets else (self._settings.http_host, self._settings.http_port)
        self.port = port
        log.info("http listening on %s:%s", host, port)
        return host, port

    async def stop(self) -> None:
        await self._runner.cleanup()
