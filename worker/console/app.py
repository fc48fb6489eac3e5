"""The console's pages: an aiohttp application mounted at /console/ by worker.ingress.http.

GET pages only read. Every POST is checked, in this order, before anything is done:
a signed-in session, the origin of the form (another site's is refused), the form
token, and the user's role (a viewer's POST is refused even when it is well formed).
Actions go through worker.ops (release, opt-in, review, rights, parked) or
handlers.state.apply (a note), with `console:<user>` as the operator, so every event
says who did it. The users page (admins only) changes console users through
worker.store.users, as `unsubd users` does: they are staff accounts, not contact state,
so those changes are logged with the admin's name rather than written as events.
Sign-in attempts are limited per client address (worker.console.throttle) besides the
per-account lockout.
"""

from __future__ import annotations

import asyncio
import csv
import email
import email.policy
import hmac
import io
import json
import logging
import math
import secrets
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping
from urllib.parse import urlencode

import jinja2
from aiohttp import web
from multidict import MultiDictProxy
from sqlalchemy import func, select

from config import Settings
from handlers.events import operator as operator_commands
from handlers.mail.addresses import address_hash, normalise
from handlers.model import ALL, WILDCARD, Channel, Scope
from handlers.state.apply import apply
from worker.console import accounts
from worker.console.auth import (COOKIE_PATH, LOGIN_COOKIE, SESSION_COOKIE, Authenticate, Found, PasswordSignIn,
                                 current_session, form_token, form_token_ok, start_session)
from worker.console.text import LANGUAGES, LANGUAGE_NAMES, TEXT, choose
from worker.console.throttle import SignInLimit, client_key
from worker.ingress.http import foreign_origin, origin_of
from worker.ingress.metrics import CONSOLE_SIGN_IN_LIMITED
from worker.ops import admin, review as review_ops, rights
from worker.ops.contacts import show as show_contact
from worker.store import users
from worker.store.database import Database
from worker.store.models import Event, InboundItem, ReviewItem, Suppression
from worker.store.users import Session

log = logging.getLogger("unsubd.console")

HERE = Path(__file__).resolve().parent
LANG_COOKIE = "unsubd_console_lang"
SESSION_KEY = web.RequestKey("console_session", object)     # the request's Found session, read once
CHANNELS = [c.value for c in Channel]
RAW_LIMIT = 20_000                 # characters of a received message's text shown on the review page
MAX_HEADERS = 40
PAGE_ROWS = 500                    # rows of the suppressions page (the CSV has them all)
MAX_TEXT = 2000                    # a reason or a note
USER_DONE = ("added", "disabled", "enabled", "reset", "role")

# The console allows no script and no frame, and loads nothing from elsewhere. Styles
# come from its own stylesheet; the SVG charts use presentation attributes only.
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
}

_templates = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True,
                                undefined=jinja2.StrictUndefined)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]



# A cell a spreadsheet would read as a formula ("=", "+", "-", "@", or a tab or carriage
# return before one). Addresses may begin with these (RFC 5322 atext), and an address is
# whatever a bounce or a reply said it was, so the CSV the console offers for download
# starts such a cell with an apostrophe, which spreadsheets show but do not evaluate.
# `unsubd suppressions export` (for machines) keeps addresses exact.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_START) else value

class Refusal(Exception):
    """A request the console answers with a page that says why (status, text key, and any values)."""

    def __init__(self, status: int, key: str, **values: Any) -> None:
        super().__init__(key)
        self.status, self.key, self.values = status, key, values


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def see_other(location: str) -> web.Response:
    """A 303 to `location` (after a POST: the browser GETs the page that shows the result)."""
    return web.Response(status=303, headers={"Location": location})


def operator_name(session: Session) -> str:
    return f"console:{session.user.name}"


def operator_name_safe(name: str) -> str:
    """A console user's name for the log: as it is, or hashed when it is an address
    (names may be; addresses stay out of logs)."""
    return address_hash(name) if "@" in name else name


def message_text(raw: bytes, limit: int = RAW_LIMIT) -> dict[str, Any]:
    """A received message as text to show: its headers decoded (RFC 2047) and its text body,
    cut to `limit` characters. Never raises: what cannot be parsed is shown as it came."""
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        headers = []
        for name, value in list(msg.items())[:MAX_HEADERS]:
            try:
                shown = str(value)
            except Exception:               # noqa: BLE001 - a header the policy cannot decode
                shown = repr(value)
            headers.append((name, shown[:500]))
        body_part = msg.get_body(preferencelist=("plain", "html"))
        if body_part is not None:
            body = body_part.get_content()
            if not isinstance(body, str):
                body = bytes(body).decode("utf-8", "replace")
        else:
            payload = msg.get_payload(decode=True)
            body = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(msg.get_payload())
    except Exception:                       # noqa: BLE001 - malformed mail is data, shown raw
        headers, body = [], raw.decode("utf-8", "replace")
    return {"headers": headers, "body": body[:limit], "cut": len(body) > limit, "bytes": len(raw)}


def _scope(values: list[str], known: list[str]) -> Scope | None:
    """A unit or channel scope from ticked boxes: ALL for "*", else the known values; None for none."""
    if WILDCARD in values:
        return ALL
    picked = tuple(v for v in dict.fromkeys(values) if v in known)
    return picked or None


def _day(value: str | None, field_name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise Refusal(400, "bad_date", field=field_name) from None


@dataclass(frozen=True)
class SuppressionFilter:
    reason: str | None
    unit: str | None
    since: date | None
    until: date | None

    def query(self) -> str:
        return urlencode({k: v for k, v in (("reason", self.reason), ("unit", self.unit),
                                            ("since", self.since.isoformat() if self.since else None),
                                            ("until", self.until.isoformat() if self.until else None)) if v})


class Console:
    def __init__(self, settings: Settings, db: Database, clock: Callable[[], datetime],
                 authenticate: Authenticate) -> None:
        self.settings, self.db, self.clock, self.authenticate = settings, db, clock, authenticate
        self.origins = {o for o in (origin_of(settings.tokens.base_url),) if o}
        self.css = (HERE / "static" / "console.css").read_text(encoding="utf-8")
        c = settings.console
        self.sign_in_limit = SignInLimit(c.signin_per_minute, c.signin_burst, c.signin_clients)

    # -- language, rendering ------------------------------------------------------------

    def lang(self, request: web.Request) -> str:
        return choose(request.query.get("lang"), request.cookies.get(LANG_COOKIE),
                      request.headers.get("Accept-Language"))

    def _unit_name(self, unit: str, lang: str) -> str:
        if unit == WILDCARD:
            return TEXT[lang]["all_units"]
        configured = self.settings.units.get(unit)
        return getattr(configured.names, lang, unit) if configured else unit

    def render(self, request: web.Request, template: str, heading_key: str, status: int = 200,
               session: Session | None = None, **context: Any) -> web.Response:
        lang = self.lang(request)
        t = TEXT[lang]
        role = session.user.role if session else None
        here = request.rel_url
        html = _templates.get_template(template).render(
            lang=lang, t=t, org=self.settings.organisation, heading=t[heading_key], session=session,
            user=session.user if session else None, csrf=form_token(session.csrf_secret) if session else "",
            may_act=bool(role and accounts.may(role, accounts.ACT)),
            may_rights=bool(role and accounts.may(role, accounts.RIGHTS)),
            may_users=bool(role and accounts.may(role, accounts.USERS)),
            path=request.path, role_name=t["role." + role] if role else "",
            languages=[(code, LANGUAGE_NAMES[code], str(here.update_query(lang=code))) for code in LANGUAGES],
            unit_name=lambda u: self._unit_name(u, lang), channel_name=lambda c: t.get("channel." + c, c),
            units=list(self.settings.units), channels=CHANNELS, **context)
        response = web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
        if request.query.get("lang") in LANGUAGES:
            response.set_cookie(LANG_COOKIE, request.query["lang"], path=COOKIE_PATH, max_age=365 * 24 * 3600,
                                secure=self.settings.console.cookie_secure, httponly=True, samesite="Strict")
        return response

    def refusal_page(self, request: web.Request, refusal: Refusal, session: Session | None) -> web.Response:
        t = TEXT[self.lang(request)]
        return self.render(request, "message.html", refusal.key + ".title", refusal.status, session,
                           message=t[refusal.key].format(**refusal.values), back=request.headers.get("Referer")
                           if origin_of(request.headers.get("Referer", "")) == self._own(request) else None)

    # -- sessions and guards ----------------------------------------------------------------

    def _own(self, request: web.Request) -> str | None:
        return origin_of(f"{request.scheme}://{request.host}")

    def cross_site(self, request: web.Request) -> bool:
        """Whether a POST states another origin than ours (see worker.ingress.http._Links._cross_site).

        Ours is the origin the request was addressed to, or that of tokens.base_url (a
        proxy in front that terminates TLS). `Origin: null` is foreign. Neither header
        proves nothing either way; the form token is still required.
        """
        return foreign_origin(request, self.origins) is not None

    async def _found(self, request: web.Request) -> Found:
        if SESSION_KEY not in request:
            idle = timedelta(minutes=self.settings.console.session_idle_minutes)
            request[SESSION_KEY] = await current_session(self.db, request.cookies.get(SESSION_COOKIE), self.clock(),
                                                         idle)
        found = request[SESSION_KEY]
        assert isinstance(found, Found)
        return found

    async def session(self, request: web.Request) -> Session | None:
        return (await self._found(request)).session

    async def viewer(self, request: web.Request) -> Session:
        """The signed-in session of a GET; without one, off to the sign-in page (saying so
        when the session has just ended for want of use)."""
        found = await self._found(request)
        if found.session is None:
            query = {"next": request.rel_url.path_qs, **({"ended": "idle"} if found.idle else {})}
            raise web.HTTPSeeOther(f"{COOKIE_PATH}login?{urlencode(query)}")
        return found.session

    async def form(self, request: web.Request, need: str | None) -> tuple[Session, MultiDictProxy[Any]]:
        """The session and form of a POST, after every check; raises Refusal otherwise."""
        found = await self._found(request)
        session = found.session
        if session is None:
            raise Refusal(403, "idle" if found.idle else "signed_out", minutes=self._idle_minutes())
        if self.cross_site(request):
            log.warning("console form refused: posted from another site")
            raise Refusal(403, "cross_site")
        try:
            form = await request.post()
        except (ValueError, AssertionError):
            raise Refusal(400, "bad_form") from None
        if not form_token_ok(session.csrf_secret, form.get("csrf")):
            raise Refusal(403, "stale")
        if need is not None and not accounts.may(session.user.role, need):
            log.warning("console action refused: role %s may not %s", session.user.role, need)
            raise Refusal(403, "forbidden")
        return session, form

    def _idle_minutes(self) -> str:
        return f"{self.settings.console.session_idle_minutes:g}"

    def _text(self, form: Mapping[str, Any], name: str) -> str:
        value = form.get(name)
        return value.strip()[:MAX_TEXT] if isinstance(value, str) else ""

    # -- middleware ---------------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except Refusal as refusal:
            response = self.refusal_page(request, refusal, await self._quiet_session(request))
        except web.HTTPNotFound:
            response = self.refusal_page(request, Refusal(404, "not_found"), await self._quiet_session(request))
        except web.HTTPMethodNotAllowed:
            response = self.refusal_page(request, Refusal(405, "bad_form"), await self._quiet_session(request))
        except web.HTTPException as exc:
            for name, value in HEADERS.items():
                exc.headers.setdefault(name, value)
            raise
        except Exception as exc:            # noqa: BLE001 - a failure gets a page, never a stack trace
            log.warning("console request failed: %s %s", request.path, type(exc).__name__)
            response = self.refusal_page(request, Refusal(503, "unavailable"), None)
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    async def _quiet_session(self, request: web.Request) -> Session | None:
        try:
            return await self.session(request)
        except Exception:                   # noqa: BLE001 - the database may be what failed
            return None

    # -- static -----------------------------------------------------------------------------

    async def stylesheet(self, request: web.Request) -> web.Response:
        return web.Response(text=self.css, content_type="text/css", charset="utf-8",
                            headers={"Cache-Control": "max-age=3600"})

    # -- sign-in and sign-out -------------------------------------------------------------------

    def _next(self, value: Any) -> str:
        """Where to go after signing in: a console path of ours, never another site."""
        if isinstance(value, str) and value.startswith(COOKIE_PATH) and "//" not in value and "\\" not in value:
            return value
        return COOKIE_PATH

    async def login_page(self, request: web.Request) -> web.Response:
        found = await self._found(request)
        if found.session is not None:
            raise web.HTTPSeeOther(self._next(request.query.get("next")))
        ended = found.idle or request.query.get("ended") == "idle"
        return self._login_form(request, 200, error=None, next_path=request.query.get("next"),
                                ended=TEXT[self.lang(request)]["login.idle"].format(minutes=self._idle_minutes())
                                if ended else None)

    def _login_form(self, request: web.Request, status: int, error: str | None,
                    next_path: Any = None, ended: str | None = None) -> web.Response:
        pre = request.cookies.get(LOGIN_COOKIE)
        if not pre or len(pre) > 100:
            pre = secrets.token_urlsafe(32)
        response = self.render(request, "login.html", "login.title", status, None, login_token=pre,
                               next=self._next(next_path), error=error, ended=ended,
                               lockout=TEXT[self.lang(request)]["login.lockout"].format(
                                   n=self.settings.console.lockout_after,
                                   minutes=f"{self.settings.console.lockout_minutes:g}"))
        response.set_cookie(LOGIN_COOKIE, pre, path=COOKIE_PATH, max_age=3600,
                            secure=self.settings.console.cookie_secure, httponly=True, samesite="Strict")
        return response

    def _limited(self, request: web.Request) -> web.Response | None:
        """A 429 page when this client has spent its sign-in attempts (worker.console.throttle),
        else None. Every POST to the sign-in form counts, before anything else is looked at."""
        wait = self.sign_in_limit.take(client_key(request.remote), self.clock())
        if wait <= 0:
            return None
        CONSOLE_SIGN_IN_LIMITED.inc()
        log.warning("console sign-in refused: too many attempts from one client")
        seconds = max(1, math.ceil(wait))
        response = self.refusal_page(request, Refusal(429, "login.limited", seconds=seconds), None)
        response.headers["Retry-After"] = str(seconds)
        return response

    async def login(self, request: web.Request) -> web.Response:
        limited = self._limited(request)
        if limited is not None:
            return limited
        if self.cross_site(request):
            raise Refusal(403, "cross_site")
        try:
            form = await request.post()
        except (ValueError, AssertionError):
            raise Refusal(400, "bad_form") from None
        pre = request.cookies.get(LOGIN_COOKIE)
        given = form.get("login_token")
        if not pre or not isinstance(given, str) \
                or not hmac.compare_digest(pre.encode(), given.encode("utf-8", "surrogateescape")):
            return self._login_form(request, 403, error="login.stale", next_path=form.get("next"))
        name, password = form.get("name"), form.get("password")
        if not isinstance(name, str) or not isinstance(password, str) or not name.strip() or not password:
            return self._login_form(request, 400, error="login.missing", next_path=form.get("next"))
        now = self.clock()
        user = await self.authenticate(name, password, now)
        if user is None:
            return self._login_form(request, 401, error="login.wrong", next_path=form.get("next"))
        value = await start_session(self.db, self.settings, user, now)
        log.info("console sign-in")
        response = see_other(self._next(form.get("next")))
        response.set_cookie(SESSION_COOKIE, value, path=COOKIE_PATH,
                            max_age=int(self.settings.console.session_hours * 3600),
                            secure=self.settings.console.cookie_secure, httponly=True, samesite="Strict")
        response.del_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
        return response

    async def logout(self, request: web.Request) -> web.Response:
        session, _ = await self.form(request, None)
        await users.delete_session(self.db, session.id)
        response = see_other(f"{COOKIE_PATH}login")
        response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)
        return response

    # -- overview -----------------------------------------------------------------------------

    async def overview(self, request: web.Request) -> web.Response:
        session = await self.viewer(request)
        now = self.clock()
        async with self.db.sessions() as s:
            open_items = (await s.execute(select(ReviewItem.kind, ReviewItem.due_at)
                                          .where(ReviewItem.resolved_at.is_(None)))).all()
            suppressed = await s.scalar(select(func.count()).select_from(Suppression)
                                        .where(Suppression.active.is_(True)))
        reviews = sum(1 for kind, _ in open_items if kind != "rights_request")
        from worker.ops import requests as rights_requests

        requests, overdue = await rights_requests.counts(self.db, now)
        parked = None
        if self.settings.amqp_url is None:
            async with self.db.sessions() as s:
                parked = await s.scalar(select(func.count()).select_from(InboundItem)
                                        .where(InboundItem.status == "failed"))
        return self.render(request, "overview.html", "overview.title", session=session, reviews=reviews,
                           requests=requests, overdue=overdue,
                           suppressed=suppressed or 0, parked=parked)

    # -- review queue ----------------------------------------------------------------------------

    async def _items(self, kinds: Callable[[str], bool]) -> list[dict[str, Any]]:
        items = [i for i in await review_ops.list_open(self.db, limit=500) if kinds(i["kind"])]
        event_ids = [i["event_id"] for i in items]
        async with self.db.sessions() as s:
            events = {e.id: e for e in (await s.scalars(select(Event).where(Event.id.in_(event_ids)))).all()} \
                if event_ids else {}
            item_ids = [e.item_id for e in events.values()]
            raws = {r.id: r for r in (await s.scalars(select(InboundItem).where(InboundItem.id.in_(item_ids))))
                    .all()} if item_ids else {}
        now = self.clock()
        out = []
        for item in items:
            event = events.get(item["event_id"])
            evidence = dict(event.evidence or {}) if event is not None else {}
            raw = raws.get(event.item_id) if event is not None else None
            due = datetime.fromisoformat(item["due_at"]) if item["due_at"] else None
            out.append({**item, "event": event, "evidence": _evidence_view(evidence),
                        "message": message_text(raw.raw) if raw is not None else None,
                        "overdue": due is not None and due < now, "due": due,
                        "created": datetime.fromisoformat(item["created_at"])})
        return out

    async def review_page(self, request: web.Request) -> web.Response:
        session = await self.viewer(request)
        items = await self._items(lambda kind: kind != "rights_request")
        done = request.query.get("done")
        return self.render(request, "review.html", "review.title", session=session, items=items,
                           done=done if done in ("settled",) else None)

    async def settle(self, request: web.Request) -> web.Response:
        session, form = await self.form(request, accounts.ACT)
        try:
            review_id = int(request.match_info["id"])
        except ValueError:
            raise Refusal(404, "not_found") from None
        resolution = form.get("resolution")
        if resolution not in operator_commands.RESOLUTIONS:
            raise Refusal(400, "review.bad_resolution")
        units = _scope(form.getall("unit", []), list(self.settings.units))
        channels = _scope(form.getall("channel", []), CHANNELS)
        if resolution == "optout" and (units is None or channels is None):
            raise Refusal(400, "scope_missing")
        address = self._text(form, "address") or None
        if address is not None and normalise(address) is None:
            raise Refusal(400, "bad_address")
        try:
            await review_ops.resolve(self.db, review_id, str(resolution), self.clock(), units=units or ALL,
                                     channels=channels or ("email",), address=address,
                                     note=self._text(form, "note"), operator=operator_name(session))
        except LookupError:
            raise Refusal(404, "review.unknown", id=review_id) from None
        except review_ops.ReviewError as exc:
            raise Refusal(409, "review.refused", why=str(exc)) from None
        return see_other(f"{COOKIE_PATH}review?done=settled")

    # -- contact lookup -------------------------------------------------------------------------------

    async def contact_page(self, request: web.Request, status: int = 200, error: str | None = None) -> web.Response:
        session = await self.viewer(request)
        raw = (request.query.get("address") or "").strip()
        view, why = None, {}
        if raw:
            if normalise(raw) is None:
                status, error = 400, "bad_address"
            else:
                view = await show_contact(self.db.sessions, self.settings, raw, events=200)
                if view is None:
                    status, error = 404, "contact.unknown"
                else:
                    why = await self._suppression_reasons(view.addresses)
        grid = None
        if view is not None and view.preferences:
            states = {(p["unit"], p["channel"]): p["state"] for p in view.preferences}
            grid = [(u, [states.get((u, c), "subscribed") for c in CHANNELS])
                    for u in dict.fromkeys(p["unit"] for p in view.preferences)]
        timeline = [{**e, "when": datetime.fromisoformat(e["occurred_at"]), "evidence": _evidence_view(e["evidence"]),
                     "operator": (e["evidence"] or {}).get("operator"), "note": (e["evidence"] or {}).get("note")
                     if e["source"] == "note" else None} for e in (view.events if view else [])]
        done = request.query.get("done")
        return self.render(request, "contact.html", "contact.title", status, session, query=raw, view=view,
                           grid=grid, timeline=timeline, why=why, error=error,
                           done=done if done in ("released", "opted_in", "noted") else None)

    async def _suppression_reasons(self, addresses: list[str]) -> dict[str, dict[str, Any]]:
        """Each active suppression's event: why it was written, and its evidence."""
        async with self.db.sessions() as s:
            rows = (await s.execute(select(Suppression.address, Event.reason, Event.kind, Event.occurred_at,
                                           Event.evidence)
                                    .join(Event, Event.id == Suppression.event_id)
                                    .where(Suppression.address.in_(addresses), Suppression.active.is_(True)))).all()
        return {a: {"reason": r, "kind": k, "when": at, "evidence": _evidence_view(ev or {})}
                for a, r, k, at, ev in rows}

    def _back_to_contact(self, address: str, done: str) -> web.Response:
        return see_other(f"{COOKIE_PATH}contact?{urlencode({'address': address, 'done': done})}")

    def _address(self, form: Mapping[str, Any]) -> str:
        address = normalise(self._text(form, "address"))
        if address is None:
            raise Refusal(400, "bad_address")
        return address

    async def release(self, request: web.Request) -> web.Response:
        session, form = await self.form(request, accounts.ACT)
        address, reason = self._address(form), self._text(form, "reason")
        if not reason:
            raise Refusal(400, "reason_missing")
        await admin.release(self.db, address, reason, self.clock(), operator=operator_name(session))
        return self._back_to_contact(address, "released")

    async def opt_in(self, request: web.Request) -> web.Response:
        session, form = await self.form(request, accounts.ACT)
        address, reason = self._address(form), self._text(form, "reason")
        units = _scope(form.getall("unit", []), list(self.settings.units))
        channels = _scope(form.getall("channel", []), CHANNELS)
        if units is None or channels is None:
            raise Refusal(400, "scope_missing")
        if not reason:
            raise Refusal(400, "reason_missing")
        await admin.opt_in(self.db, address, units, channels, reason, self.clock(), operator=operator_name(session))
        return self._back_to_contact(address, "opted_in")

    async def note(self, request: web.Request) -> web.Response:
        session, form = await self.form(request, accounts.ACT)
        address, text = self._address(form), self._text(form, "text")
        if not text:
            raise Refusal(400, "note_missing")
        await apply(operator_commands.note(address, text, operator_name(session)), self.db.unit_of_work(),
                    self.clock())
        return self._back_to_contact(address, "noted")

    # -- suppressions ---------------------------------------------------------------------------------

    def _filter(self, request: web.Request) -> SuppressionFilter:
        q = request.query
        reason = (q.get("reason") or "").strip()[:64] or None
        unit = (q.get("unit") or "").strip()[:64] or None
        since, until = _day(q.get("since"), "since"), _day(q.get("until"), "until")
        if since and until and until < since:
            raise Refusal(400, "bad_range")
        return SuppressionFilter(reason, unit, since, until)

    async def _suppressions(self, f: SuppressionFilter) -> list[dict[str, Any]]:
        where = [Suppression.active.is_(True)]
        if f.reason:
            where.append(Suppression.reason == f.reason)
        if f.since:
            where.append(Suppression.created_at >= datetime.combine(f.since, time(), timezone.utc))
        if f.until:
            where.append(Suppression.created_at < datetime.combine(f.until + timedelta(days=1), time(), timezone.utc))
        async with self.db.sessions() as s:
            rows = (await s.execute(select(Suppression, Event.evidence)
                                    .outerjoin(Event, Event.id == Suppression.event_id)
                                    .where(*where).order_by(Suppression.created_at.desc(), Suppression.id.desc()))
                    ).all()
        out = []
        for sup, evidence in rows:
            unit = (evidence or {}).get("unit") if isinstance(evidence, dict) else None
            unit = unit if isinstance(unit, str) else None
            if f.unit and unit != f.unit:
                continue
            out.append({"address": sup.address, "reason": sup.reason, "unit": unit, "since": sup.created_at,
                        "contact_id": sup.contact_id, "event_id": sup.event_id})
        return out

    async def suppressions_page(self, request: web.Request) -> web.Response:
        session = await self.viewer(request)
        f = self._filter(request)
        rows = await self._suppressions(f)
        async with self.db.sessions() as s:
            reasons = sorted((await s.scalars(select(Suppression.reason).where(Suppression.active.is_(True))
                                              .distinct())).all())
        return self.render(request, "suppressions.html", "suppressions.title", session=session, rows=rows[:PAGE_ROWS],
                           total=len(rows), f=f, reasons=reasons, csv_query=f.query())

    async def suppressions_csv(self, request: web.Request) -> web.Response:
        await self.viewer(request)
        rows = await self._suppressions(self._filter(request))
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(["address", "reason", "unit", "since", "contact_id", "event_id"])
        for r in rows:
            writer.writerow([spreadsheet_safe(r["address"]), r["reason"], spreadsheet_safe(r["unit"] or ""),
                             r["since"].isoformat(), r["contact_id"] if r["contact_id"] is not None else "",
                             r["event_id"] or ""])
        stamp = self.clock().strftime("%Y%m%d")
        return web.Response(body=out.getvalue().encode("utf-8"), content_type="text/csv", charset="utf-8",
                            headers={"Content-Disposition": f'attachment; filename="suppressions-{stamp}.csv"'})

    # -- parked items ---------------------------------------------------------------------------------

    async def parked_page(self, request: web.Request) -> web.Response:
        session = await self.viewer(request)
        from worker.queue.parked import list_parked

        items = await list_parked(self.settings, self.db, 200)
        done = request.query.get("done")
        return self.render(request, "parked.html", "parked.title", session=session, items=items,
                           amqp=self.settings.amqp_url is not None,
                           replayed=int(done) if done and done.isdigit() else None)

    async def replay(self, request: web.Request) -> web.Response:
        _, form = await self.form(request, accounts.ACT)
        from worker.queue.parked import replay

        ids = None if form.get("all") == "1" else {i for i in form.getall("id", []) if isinstance(i, str)}
        if ids is not None and not ids:
            raise Refusal(400, "parked.none")
        done = await replay(self.settings, self.db, ids, self.clock())
        return see_other(f"{COOKIE_PATH}parked?done={len(done)}")

    # -- rights requests ----------------------------------------------------------------------------

    async def rights_page(self, request: web.Request) -> web.Response:
        session = await self.viewer(request)
        from worker.ops import requests as rights_requests

        now = self.clock()
        found = {i.id: i for i in await rights_requests.list_open(self.db, now)}
        shown = {i["id"]: i for i in await self._items(lambda kind: kind == "rights_request")}
        items = [{**shown[i], "type": found[i].type, "days_left": found[i].days_left, "overdue": found[i].overdue}
                 for i in found if i in shown]             # earliest due first: the overdue are first
        done = request.query.get("done")
        return self.render(request, "rights.html", "rights.title", session=session, items=items,
                           done=done if done in ("erased", "nothing", "fulfilled") else None)

    async def rights_fulfil(self, request: web.Request) -> web.Response:
        """Do what a rights request asks and close it (worker.ops.requests.fulfil). An access
        request answers with the export to download; the item is closed once it is made."""
        session, form = await self.form(request, accounts.RIGHTS)
        from worker.ops import requests as rights_requests

        try:
            review_id = int(request.match_info["id"])
        except ValueError:
            raise Refusal(404, "not_found") from None
        delivered: list[dict[str, Any]] = []
        try:
            result = await rights_requests.fulfil(
                self.db, self.settings, review_id, self.clock(), operator=operator_name(session),
                note=self._text(form, "note"), new_address=self._text(form, "new_address") or None,
                deliver=delivered.append)
        except LookupError:
            raise Refusal(404, "review.unknown", id=review_id) from None
        except ValueError as exc:                  # RequestError, or a refusal of the erasure
            raise Refusal(409, "rights.refused", why=str(exc)) from None
        if delivered:
            body = json.dumps(delivered[0], ensure_ascii=False, indent=2, default=str)
            return web.Response(body=body.encode("utf-8"), content_type="application/json", charset="utf-8",
                                headers={"Content-Disposition": f'attachment; filename="access-{review_id}.json"'})
        return see_other(f"{COOKIE_PATH}rights?done={'erased' if result.resolution == 'erased' else 'fulfilled'}")

    async def rights_export(self, request: web.Request) -> web.Response:
        _, form = await self.form(request, accounts.RIGHTS)
        address = self._address(form)
        data = await rights.export(self.db, self.settings, address)
        if data is None:
            raise Refusal(404, "contact.unknown")
        body = json.dumps(data, ensure_ascii=False, indent=2, default=str)
        stamp = self.clock().strftime("%Y%m%d")
        return web.Response(body=body.encode("utf-8"), content_type="application/json", charset="utf-8",
                            headers={"Content-Disposition": f'attachment; filename="export-{stamp}.json"'})

    async def rights_erase(self, request: web.Request) -> web.Response:
        session, form = await self.form(request, accounts.RIGHTS)
        address, reason = self._address(form), self._text(form, "reason")
        if not reason:
            raise Refusal(400, "reason_missing")
        try:
            result = await rights.erase(self.db, self.settings, address, reason, self.clock(),
                                        operator=operator_name(session))
        except ValueError as exc:
            raise Refusal(400, "rights.refused", why=str(exc)) from None
        return see_other(f"{COOKIE_PATH}rights?done={'erased' if result else 'nothing'}")

    # -- users (admins only) ---------------------------------------------------------------------------
    # The functions of `unsubd users` (worker.store.users), not `apply`: console users are
    # staff accounts, not contact state. Each change is logged with who made it.

    async def _admin(self, request: web.Request) -> Session:
        session = await self.viewer(request)
        if not accounts.may(session.user.role, accounts.USERS):
            log.warning("console users page refused: role %s", session.user.role)
            raise Refusal(403, "users.admin_only")
        return session

    async def users_page(self, request: web.Request) -> web.Response:
        session = await self._admin(request)
        done, name = request.query.get("done"), (request.query.get("user") or "")[:accounts.MAX_NAME]
        return await self._users(request, session, done=done if done in USER_DONE else None, name=name)

    async def _users(self, request: web.Request, session: Session, done: str | None = None, name: str = "",
                     generated: str | None = None) -> web.Response:
        now = self.clock()
        listed = [{"user": u, "locked": accounts.is_locked(u.locked_until, now)}
                  for u in await users.list_users(self.db)]
        return self.render(request, "users.html", "users.title", session=session, listed=listed, roles=accounts.ROLES,
                           done=done, done_name=name, generated=generated, min_password=accounts.MIN_PASSWORD)

    def _user_name(self, form: Mapping[str, Any]) -> str:
        name = self._text(form, "name").lower()
        if accounts.name_problem(name) is not None:
            raise Refusal(400, "users.bad_name", n=accounts.MAX_NAME)
        return name

    def _role(self, form: Mapping[str, Any]) -> str:
        role = self._text(form, "role")
        if accounts.role_problem(role) is not None:
            raise Refusal(400, "users.bad_role")
        return role

    def _password(self, form: Mapping[str, Any], name: str) -> tuple[str, bool]:
        """The password given, or a new one made here; (password, made here)."""
        given = form.get("password")
        if not isinstance(given, str) or given == "":
            return accounts.generate_password(), True
        if accounts.password_problem(given, name) is not None:
            raise Refusal(400, "users.bad_password", n=accounts.MIN_PASSWORD)
        return given, False

    def _audit(self, session: Session, action: str, name: str, **more: str) -> None:
        """Who did what to which user, in the log (names that are addresses are hashed)."""
        log.info("console users: %s", action, extra={"actor": operator_name_safe(session.user.name),
                                                      "user": operator_name_safe(name), **more})

    async def user_add(self, request: web.Request) -> web.Response:
        session, form = await self.form(request, accounts.USERS)
        name, role = self._user_name(form), self._role(form)
        password, made = self._password(form, name)
        hashed = await asyncio.to_thread(accounts.hash_password, password)
        try:
            await users.add_user(self.db, name, hashed, role, self.clock())
        except users.UserExists:
            raise Refusal(409, "users.exists", name=name) from None
        self._audit(session, "added", name, role=role)
        if made:
            return await self._users(request, session, "added", name, generated=password)
        return see_other(f"{COOKIE_PATH}users?{urlencode({'done': 'added', 'user': name})}")

    async def user_disable(self, request: web.Request) -> web.Response:
        return await self._set_disabled(request, True)

    async def user_enable(self, request: web.Request) -> web.Response:
        return await self._set_disabled(request, False)

    async def _set_disabled(self, request: web.Request, disabled: bool) -> web.Response:
        session, form = await self.form(request, accounts.USERS)
        name = self._user_name(form)
        try:
            found = await users.set_disabled(self.db, name, disabled, self.clock(), keep_an_admin=True)
        except users.LastAdmin:
            raise Refusal(409, "users.last_admin") from None
        if not found:
            raise Refusal(404, "users.unknown", name=name)
        done = "disabled" if disabled else "enabled"
        self._audit(session, done, name)
        return see_other(f"{COOKIE_PATH}users?{urlencode({'done': done, 'user': name})}")

    async def user_reset(self, request: web.Request) -> web.Response:
        session, form = await self.form(request, accounts.USERS)
        name = self._user_name(form)
        password, made = self._password(form, name)
        hashed = await asyncio.to_thread(accounts.hash_password, password)
        # The user's other sessions end; an admin who sets their own password stays signed in.
        if not await users.set_password(self.db, name, hashed, self.clock(),
                                        keep_session=session.id if name == session.user.name else None):
            raise Refusal(404, "users.unknown", name=name)
        self._audit(session, "password reset", name)
        if made:
            return await self._users(request, session, "reset", name, generated=password)
        return see_other(f"{COOKIE_PATH}users?{urlencode({'done': 'reset', 'user': name})}")

    async def user_role(self, request: web.Request) -> web.Response:
        session, form = await self.form(request, accounts.USERS)
        name, role = self._user_name(form), self._role(form)
        try:
            found = await users.set_role(self.db, name, role, self.clock(), keep_an_admin=True)
        except users.LastAdmin:
            raise Refusal(409, "users.last_admin") from None
        if not found:
            raise Refusal(404, "users.unknown", name=name)
        self._audit(session, "role changed", name, role=role)
        return see_other(f"{COOKIE_PATH}users?{urlencode({'done': 'role', 'user': name})}")

    # -- dashboard -------------------------------------------------------------------------------------

    async def dashboard_page(self, request: web.Request) -> web.Response:
        session = await self.viewer(request)
        from worker.console.dashboard_view import BadFilter, dashboard_context

        lang = self.lang(request)
        try:
            context = await dashboard_context(self.db, self.settings, request, lang, TEXT[lang])
        except BadFilter as exc:
            raise Refusal(400, exc.key, **exc.values) from None
        return self.render(request, "dashboard.html", "dashboard.title", session=session, **context)


def _evidence_view(evidence: Mapping[str, Any]) -> dict[str, Any]:
    """What a reviewer reads first in an event's evidence: the matched words, the bounce's
    recipients and codes, the doubts, the held actions; the rest as short key: value lines."""
    evidence = dict(evidence or {})
    matched = [str(m) for m in list(dict.fromkeys(
        [*(evidence.get("matched") or []), *(evidence.get("cues") or [])]))[:20]]
    recipients = [{k: r.get(k) for k in ("address", "action", "status", "reason", "hard", "diagnostic")}
                  for r in (evidence.get("recipients") or [])[:20] if isinstance(r, dict)]
    doubts = [str(d) for d in (evidence.get("confidence_doubts") or [])[:10]]
    held = [a for a in (evidence.get("held_actions") or [])[:10] if isinstance(a, dict)]
    skip = {"matched", "cues", "recipients", "confidence_doubts", "held_actions", "operator", "note"}
    rest = []
    for key, value in evidence.items():
        if key in skip or value in (None, "", [], {}):
            continue
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        rest.append((key, shown[:300] + ("…" if len(shown) > 300 else "")))
    return {"matched": matched, "recipients": recipients, "doubts": doubts, "held": held, "rest": rest[:25]}


def build_console(settings: Settings, db: Database, clock: Callable[[], datetime] = _utcnow,
                  authenticate: Authenticate | None = None) -> web.Application:
    """The console application, to be mounted at /console/. `authenticate` defaults to the
    local passwords (worker.console.auth.PasswordSignIn)."""
    console = Console(settings, db, clock, authenticate or PasswordSignIn(db, settings))
    app = web.Application(middlewares=[console.middleware])
    r = app.router
    r.add_get("/", console.overview)
    r.add_get("/static/console.css", console.stylesheet)
    r.add_get("/login", console.login_page)
    r.add_post("/login", console.login)
    r.add_post("/logout", console.logout)
    r.add_get("/review", console.review_page)
    r.add_post("/review/{id}", console.settle)
    r.add_get("/contact", console.contact_page)
    r.add_post("/contact/release", console.release)
    r.add_post("/contact/opt-in", console.opt_in)
    r.add_post("/contact/note", console.note)
    r.add_get("/suppressions", console.suppressions_page)
    r.add_get("/suppressions.csv", console.suppressions_csv)
    r.add_get("/parked", console.parked_page)
    r.add_post("/parked/replay", console.replay)
    r.add_get("/rights", console.rights_page)
    r.add_post("/rights/{id}/fulfil", console.rights_fulfil)
    r.add_post("/rights/export", console.rights_export)
    r.add_post("/rights/erase", console.rights_erase)
    r.add_get("/dashboard", console.dashboard_page)
    r.add_get("/users", console.users_page)
    r.add_post("/users/add", console.user_add)
    r.add_post("/users/disable", console.user_disable)
    r.add_post("/users/enable", console.user_enable)
    r.add_post("/users/reset", console.user_reset)
    r.add_post("/users/role", console.user_role)
    return app
