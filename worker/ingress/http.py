"""HTTP: health, metrics, the JSON API under /v1/, and the unsubscribe links /u/{token}
(aiohttp, on the worker's loop).

Promise 5: GET and HEAD never change state. `POST /u/{token}` is either an RFC 8058
one-click (body `List-Unsubscribe=One-Click`, no other proof needed: the signed
token is the proof, and it can only opt out) or a preference-page save, which must
carry the form proof the page was rendered with (CSRF). Every change is a Decision
written by handlers.state.apply, like mail.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Iterable
from urllib.parse import urlsplit

import jinja2
from aiohttp import web
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from config import Settings
from handlers.state.apply import apply
from handlers.events import page
from handlers.model import WILDCARD
from handlers.tokens import Claims, Keyring, check_form_proof, form_proof, verify
from worker.store import keys as token_keys
from worker.ops.admin import export_suppressions
from worker.ops.contacts import show as show_contact
from worker.store.db import Database
from worker.ingress import api_auth
from worker.ingress.api_requests import add_request_routes
from worker.ingress.api_rights import add_rights_routes
from worker.ingress.links import CHANNELS, BadRequest, ContactPreferences, issue, load_preferences
from worker.store.models import Outbox
from worker.store import sent_counts
from worker.ops import dashboard
from worker.ingress import openapi
from worker.ingress.metrics import Exporter, metrics_handler
from handlers.events.upstream import BadSentCounts, read_sent_counts
from worker.ingress.page_text import LANGUAGE_NAMES, LANGUAGES, TEXT, choose_language
from worker.ops.review import list_open

log = logging.getLogger("unsubd.http")

MAX_PAGE = 1000
MAX_ID = 2 ** 63 - 1                  # the largest id a BIGINT (and SQLite's INTEGER) holds
# GET /v1/updates?wait=S holds an empty answer up to S seconds (at most MAX_WAIT) until
# an update is published. A relay in this process wakes it at once; updates published
# by another process are noticed by looking again every FEED_RECHECK seconds.
MAX_WAIT = 30.0
FEED_RECHECK = 0.5
FEED_STOP = web.AppKey("feed_stop", asyncio.Event)
FORM_MAX_AGE = 2 * 24 * 3600          # seconds a rendered preference form can be saved
_UNSET: Any = object()

# The /u/ pages carry a bearer token in their URL: never cache them, never send them
# on as a Referer to anyone else, never index them, and allow no script at all.
# `same-origin`, not `no-referrer`: under `no-referrer` a browser sends `Origin: null`
# with the page's own form POST (Fetch, "append a request Origin header"), which is
# what a sandboxed cross-site frame sends too, so the save could not be told from a
# forged one (see _Links._cross_site).
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
}

_templates = jinja2.Environment(loader=jinja2.PackageLoader("worker.ingress", "templates"), autoescape=True,
                                undefined=jinja2.StrictUndefined)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _problem(status: int, title: str) -> web.Response:
    return web.json_response({"error": title, "status": status}, status=status)


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of an absolute http(s) URL, lower-cased, without the
    default port (RFC 6454 section 6.1); None for anything else (including `null`)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


def foreign_origin(request: web.Request, ours: Iterable[str | None]) -> str | None:
    """The foreign origin a POST states, or None when it states one of `ours`, the origin
    the request was addressed to (its scheme and Host), or nothing at all.

    A browser states where a form was posted from in `Origin` (or, lacking it, in
    `Referer`); `Origin: null` (a sandboxed frame, a data: URL) is foreign. Stating
    nothing is not evidence either way: the caller still requires its own proof.
    """
    stated = request.headers.get("Origin")
    if stated is None:
        stated = request.headers.get("Referer")
        if stated is None or not stated.strip():
            return None
    found = origin_of(stated)
    if found is not None and found in {*ours, origin_of(f"{request.scheme}://{request.host}")}:
        return None
    return stated.strip()[:200] or "null"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def build_app(settings: Settings, sessions: async_sessionmaker[AsyncSession],
              metrics: Callable[[], Awaitable[dict[str, Any]]], db: Database | None = None,
              keyring: Keyring | None = _UNSET, clock: Callable[[], datetime] = _utcnow,
              feed_changed: Callable[[], asyncio.Event] | None = None,
              exporter: Exporter | None = None) -> web.Application:
    """The HTTP application. Without `db` the /u/ pages can show but not save (503);
    `keyring` defaults to worker.store.keys.keyring_for(settings). `feed_changed` (the
    relay's, when one runs in this process) wakes waiting /v1/updates calls. `exporter`
    (the Worker's, whose histograms the consumer observes into) renders /metrics; without
    one the app has its own. With `metrics_port` set, /metrics is not served here but on
    its own listener (worker.ingress.metrics.metrics_app)."""
    if keyring is _UNSET:
        keyring = token_keys.keyring_for(settings)

    api_key = api_auth.middleware(settings.api_keys)     # names, scopes, 401 and 403: worker/ingress/api_auth.py

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as exc:              # noqa: BLE001 - infrastructure failure: 503, details in the log
            # The route's pattern, not the path: a path may hold an address or a token.
            resource = request.match_info.route.resource if request.match_info.route is not None else None
            log.warning("request failed: %s %s", resource.canonical if resource is not None else "-",
                        type(exc).__name__)
            return _problem(503, "temporarily unavailable, try again")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        async with sessions() as s:
            await s.execute(text("SELECT 1"))
        return web.json_response({"status": "ready"})

    # /metrics (the access rules of metrics_networks and metrics_keys): worker/ingress/metrics.py
    metrics_text = metrics_handler(settings, metrics, exporter or Exporter(),
                                   (lambda: dashboard.live(db, settings)) if db is not None else None)

    async def sent_counts_api(request: web.Request) -> web.Response:
        """Daily sent counts from a sending system: how many messages a unit sent on a day and
        channel, the complaint rate's denominator. A report replaces the count for each (day,
        unit, channel) it names, so resending is harmless. Any bad entry: 400 naming it, and
        nothing is written."""
        if db is None:
            return _problem(503, "not available in this process")
        try:
            body = await request.json()
        except ValueError:
            return _problem(400, 'the body must be JSON: {"counts": [{"day", "unit", "channel", "count"}, ...]}')
        now = clock()
        try:
            counts = read_sent_counts(body, settings.units, now.astimezone(timezone.utc).date())
        except BadSentCounts as exc:
            extra = {"entry": exc.entry} if exc.entry is not None else {}
            return web.json_response({"error": str(exc), "status": 400, **extra}, status=400)
        written = await sent_counts.record(db, counts, api_auth.operator_of(request), now)
        return web.json_response({"written": written})

    async def openapi_json(request: web.Request) -> web.Response:
        """This API described in OpenAPI 3.1, generated from the routes and their declared schemas."""
        return web.json_response(openapi.document(request.app))

    async def updates(request: web.Request) -> web.Response:
        """The changes feed: published updates with id > `after`, oldest first; with
        `wait`, an empty answer is held up to that many seconds for the next update."""
        try:
            after = int(request.query.get("after", "0"))
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return _problem(400, "'after' and 'limit' must be whole numbers")
        try:
            wait = float(request.query.get("wait", "0"))
        except ValueError:
            wait = -1.0
        if not 0 <= after <= MAX_ID or not 1 <= limit <= MAX_PAGE:     # a larger id overflows the column
            return _problem(400, f"'after' must be from 0 to {MAX_ID} and 'limit' between 1 and {MAX_PAGE}")
        if not 0 <= wait <= MAX_WAIT:
            return _problem(400, f"'wait' must be a number of seconds from 0 to {MAX_WAIT:g}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        stop = request.app[FEED_STOP]
        while True:
            changed = feed_changed() if feed_changed is not None else None   # before the read: no lost wake-up
            async with sessions() as s:
                rows = (await s.scalars(select(Outbox).where(Outbox.id > after, Outbox.published_at.is_not(None))
                                        .order_by(Outbox.id).limit(limit))).all()
            left = deadline - loop.time()
            if rows or left <= 0 or stop.is_set():
                break
            waiters = [asyncio.ensure_future(stop.wait())]
            if changed is not None:
                waiters.append(asyncio.ensure_future(changed.wait()))
            try:
                await asyncio.wait(waiters, timeout=min(left, FEED_RECHECK), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        items = [{"id": r.id, "routing_key": r.routing_key, **r.payload} for r in rows]
        return web.json_response({"updates": items, "next": rows[-1].id if rows else after})

    links = _Links(settings, sessions, db, keyring, clock)
    app = web.Application(middlewares=[errors, api_key], client_max_size=1024 * 1024)
    app[FEED_STOP] = asyncio.Event()          # set on shutdown: waiting feed calls answer at once
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if settings.metrics_port is None:
        app.router.add_get("/metrics", metrics_text)
    async def contact(request: web.Request) -> web.Response:
        """Effective preferences, suppressions and recent events of one address."""
        try:
            view = await show_contact(sessions, settings, request.match_info["address"])
        except ValueError:
            return _problem(400, "not an email address")
        if view is None:
            return _problem(404, "no contact, suppression or event for that address")
        return web.json_response(view.to_json())

    async def suppressions(request: web.Request) -> web.Response:
        """Every active suppression, for a sending system that keeps its own copy."""
        if db is None:
            return _problem(503, "not available in this process")
        return web.json_response({"suppressions": await export_suppressions(db)})

    async def review(request: web.Request) -> web.Response:
        """The open review queue, deadlines first."""
        if db is None:
            return _problem(503, "not available in this process")
        return web.json_response({"items": await list_open(db)})

    app.router.add_get("/v1/updates", updates)
    app.router.add_get("/v1/contacts/{address}", contact)
    app.router.add_get("/v1/suppressions", suppressions)
    app.router.add_get("/v1/review", review)
    app.router.add_post("/v1/tokens", links.issue_api)
    app.router.add_post("/v1/sent-counts", sent_counts_api)
    app.router.add_get("/v1/openapi.json", openapi_json)
    add_rights_routes(app, settings, db, clock)               # export, erase, change-address (issue 23)
    add_request_routes(app, settings, db, clock)              # rights requests, retention (issue 23)
    app.router.add_get("/u/{token}", links.page)            # also answers HEAD, equally without effect
    app.router.add_post("/u/{token}", links.post)
    if db is not None and settings.console.enabled:
        from worker.console.app import build_console      # imported here: the console imports this module
        app.add_subapp("/console/", build_console(settings, db, clock))
    return app


class _Links:
    """The /u/{token} pages and POST /v1/tokens."""

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession], db: Database | None,
                 keyring: Keyring | None, clock: Callable[[], datetime]) -> None:
        self.settings, self.sessions, self.db, self.keyring, self.clock = settings, sessions, db, keyring, clock
        self.origin = origin_of(settings.tokens.base_url)

    def _cross_site(self, request: web.Request) -> str | None:
        """The foreign origin a POST came from, or None when it is ours or not stated.

        A browser states where a form was posted from in `Origin` (or, lacking it, in
        `Referer`). Ours is the origin of tokens.base_url, or the origin the request
        itself was addressed to (its scheme and Host: a cross-site page cannot make a
        browser send a matching pair). `Origin: null` (a sandboxed frame, a data: URL)
        is foreign. Neither header (a mail client's server doing RFC 8058 one-click, a
        browser that sends neither) is not evidence of anything, so it passes: the
        signed token and the form proof are still required.
        """
        return foreign_origin(request, (self.origin,))

    # -- rendering ---------------------------------------------------------------------

    def _render(self, template: str, lang: str, status: int = 200, **context: Any) -> web.Response:
        html = _templates.get_template(template).render(
            lang=lang, t=TEXT[lang], org=self.settings.organisation, dpo=self.settings.dpo_contact,
            languages=[(code, LANGUAGE_NAMES[code]) for code in LANGUAGES], **context)
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8",
                            headers=PAGE_HEADERS)

    def _notice(self, lang: str, status: int, title: str, message: str, again: str | None = None) -> web.Response:
        t = TEXT[lang]
        return self._render("notice.html", lang, status, heading=t[title],
                            message=t[message].format(dpo=self.settings.dpo_contact), again=again)

    def _invalid(self, lang: str) -> web.Response:
        # One answer for every link we cannot use (not a token, bad signature, retired key,
        # no such contact): the page must not tell anyone whether a contact exists.
        return self._notice(lang, 404, "invalid_title", "invalid")

    def _unit_name(self, unit: str, lang: str) -> str:
        if unit == WILDCARD:
            return TEXT[lang]["all_units"]
        configured = self.settings.units.get(unit)
        return getattr(configured.names, lang) if configured else unit

    def _scope_name(self, claims: Claims, lang: str) -> str:
        name = self._unit_name(claims.unit, lang)
        if claims.channel != WILDCARD:
            name += f" ({TEXT[lang]['channel.' + claims.channel]})"
        return name

    def _units(self, prefs: ContactPreferences, claims: Claims) -> tuple[list[str], list[str]]:
        """The units the contact is on (the sending unit first), and the configured units it is not on.

        On: its memberships, the token's unit (it sent this mail) and units its own rows
        name. A contact on no unit we know of (never imported for one) is shown every
        unit, so that nothing they might get is out of reach.
        """
        named = {u for u, _ in prefs.rows} - {WILDCARD}
        on = set(prefs.units) | named | ({claims.unit} - {WILDCARD})
        if not on:
            on = set(self.settings.units)
        units = [u for u in self.settings.units if u in on] + sorted(on - set(self.settings.units))
        if claims.unit in units:
            units.remove(claims.unit)
            units.insert(0, claims.unit)
        return units, [u for u in self.settings.units if u not in on]

    # -- token to contact ------------------------------------------------------------------

    async def _resolve(self, token: str) -> tuple[Claims, ContactPreferences] | None:
        if self.keyring is None:
            raise web.HTTPServiceUnavailable(text="token keys are not configured (tokens.keys)")
        claims = verify(token, self.keyring)
        if claims is None:
            return None
        prefs = await load_preferences(self.sessions, claims.contact_id)
        return (claims, prefs) if prefs is not None else None

    # -- GET / HEAD: show, never change ------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        lang = choose_language(request.query.get("lang"), request.headers.get("Accept-Language"))
        token = request.match_info["token"]
        found = await self._resolve(token)
        if found is None:
            return self._invalid(lang)
        claims, prefs = found
        saved = request.query.get("saved") == "1"
        preselect = not saved       # the sending unit's opt-out, until the person has saved once
        on, not_on = self._units(prefs, claims)
        shown = page.view(prefs.rows, on, claims.unit, claims.channel, preselect)
        units = [{"name": self._unit_name(unit, lang),
                  "boxes": [{"value": f"{unit}:{channel}", "id": f"b-{unit}-{channel}", "checked": ticked,
                             "label": TEXT[lang]["channel." + channel]} for channel, ticked in shown.boxes[unit]]}
                 for unit in on]
        now = int(self.clock().timestamp())
        return self._render("page.html", lang, heading=TEXT[lang]["title"], saved=saved,
                            preselected=self._scope_name(claims, lang) if preselect else None,
                            address=prefs.address, units=units, stop_all=shown.stop_all,
                            stop_all_in_effect=page.stop_all_in_effect(prefs.rows, on),
                            not_on=[self._unit_name(u, lang) for u in not_on],
                            proof=form_proof(token, now, self.keyring, secrets.token_urlsafe(12))
                            if self.keyring else "",
                            action=f"/u/{token}?lang={lang}")

    # -- POST: one-click, or a page save ----------------------------------------------------------

    async def post(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        lang = choose_language(request.query.get("lang"), request.headers.get("Accept-Language"))
        found = await self._resolve(token)
        if found is None:
            return self._invalid(lang)
        try:
            form = await request.post()
        except (ValueError, AssertionError, web.HTTPException):
            return web.Response(status=400, text="the body must be a form: List-Unsubscribe=One-Click\n")
        if self.db is None:
            raise web.HTTPServiceUnavailable(text="this process cannot write (no database given)")
        claims, prefs = found
        if form.get("List-Unsubscribe") == "One-Click":
            # Not checked for its origin: a webmail in a browser may send it from its own
            # page, and a one-click can only opt out of what the signed token names.
            return await self._one_click(token, claims, prefs, lang)
        if "proof" in form:
            foreign = self._cross_site(request)
            if foreign is not None:
                log.warning("page save refused: posted from another site")
                lang = form.get("lang") if form.get("lang") in LANGUAGES else lang
                again = f"/u/{token}?lang={lang}"
                return self._notice(lang, 403, "cross_site_title", "cross_site", again=again)
            return await self._save(request, token, claims, prefs, form)
        return web.Response(status=400, text="one-click needs the body List-Unsubscribe=One-Click (RFC 8058)\n",
                            headers=PAGE_HEADERS)

    def _evidence(self, claims: Claims) -> dict[str, Any]:
        return {"token_key": claims.key_id, "token_unit": claims.unit, "token_channel": claims.channel,
                "contact_id": claims.contact_id}

    async def _one_click(self, token: str, claims: Claims, prefs: ContactPreferences, lang: str) -> web.Response:
        assert self.db is not None
        decision = page.one_click(prefs.address, claims.unit, claims.channel, token, self._evidence(claims))
        await apply(decision, self.db.unit_of_work(), self.clock())
        return self._notice(lang, 200, "done_title", "done")

    async def _save(self, request: web.Request, token: str, claims: Claims, prefs: ContactPreferences,
                    form: Any) -> web.Response:
        assert self.db is not None and self.keyring is not None
        lang = form.get("lang") if form.get("lang") in LANGUAGES else \
            choose_language(None, request.headers.get("Accept-Language"))
        proof = form.get("proof")
        now = self.clock()
        if not isinstance(proof, str) or not check_form_proof(proof, token, self.keyring, int(now.timestamp()),
                                                              FORM_MAX_AGE):
            return self._notice(lang, 403, "expired_title", "expired", again=f"/u/{token}?lang={lang}")
        on, _ = self._units(prefs, claims)
        shown = [(u, c) for u, _, c in (v.partition(":") for v in dict.fromkeys(form.getall("box", []))
                                        if isinstance(v, str)) if u in on and c in CHANNELS]
        wanted = {(u, c) for u, _, c in (v.partition(":") for v in form.getall("want", []) if isinstance(v, str))}
        decision = page.save(prefs.address, prefs.rows, shown, wanted, stop_all=form.get("stop_all") == "1",
                             stop_all_shown=form.get("stop_all_shown") == "1", token=token, proof=proof,
                             evidence=self._evidence(claims))
        if decision is not None:
            applied = await apply(decision, self.db.unit_of_work(), now)
            if applied.duplicate:
                # This form's proof was used already (a second submit, a replay): it
                # changes nothing now; a fresh page has a fresh proof.
                return self._notice(lang, 409, "used_title", "used", again=f"/u/{token}?lang={lang}")
        raise web.HTTPSeeOther(f"/u/{token}?lang={lang}&saved=1", headers=PAGE_HEADERS)

    # -- the API ------------------------------------------------------------------------------

    async def issue_api(self, request: web.Request) -> web.Response:
        """POST /v1/tokens {"address", "unit", "channel"?}: the header set for one recipient."""
        if self.keyring is None:
            return _problem(503, "no token keys: set tokens.keys (UNSUBD_TOKENS__KEYS)")
        try:
            body = await request.json()
        except ValueError:
            return _problem(400, "the body must be JSON: {\"address\": ..., \"unit\": ..., \"channel\": ...}")
        if not isinstance(body, dict) or not all(isinstance(body.get(k, "email"), str)
                                                 for k in ("address", "unit", "channel")) \
                or "address" not in body or "unit" not in body:
            return _problem(400, "'address' and 'unit' are required strings; 'channel' defaults to email")
        try:
            issued = await issue(self.sessions, self.settings, self.keyring, body["address"], body["unit"],
                                 body.get("channel", "email"))
        except BadRequest as exc:
            return _problem(400, str(exc))
        if issued is None:
            return _problem(404, "no contact has this address; import it first")
        return web.json_response(issued.to_json())


class HttpServer:
    """A listener for `app`: on http_host and http_port, or on `host` and `port` when given
    (the metrics listener: metrics_host, metrics_port)."""

    def __init__(self, settings: Settings, app: web.Application, host: str | None = None,
                 port: int | None = None) -> None:
        self._settings = settings
        self._runner = web.AppRunner(app, access_log=None)
        self._host = host if host is not None else settings.http_host
        self._port = port if port is not None else settings.http_port
        self.port: int | None = None

    async def start(self) -> tuple[str, int]:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        sockets = site._server.sockets if site._server else []      # noqa: SLF001 - aiohttp has no public getter
        host, port = sockets[0].getsockname()[:2] if sockets else (self._host, self._port)
        self.port = port
        log.info("http listening on %s:%s", host, port)
        return host, port

    async def stop(self) -> None:
        if FEED_STOP in self._runner.app:
            self._runner.app[FEED_STOP].set()
        await self._runner.cleanup()
