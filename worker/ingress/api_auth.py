"""Who may call the JSON API under /v1/: named API keys with scopes (issue 24, item 5).

Each key in `api_keys` (config.settings.ApiKey) has a name and scopes: `read`, `write`,
`admin`. Each /v1/ route needs one scope, declared in ROUTE_SCOPES by (method, path
pattern as aiohttp writes it); a route missing from it needs `read` for GET and HEAD,
and `admin` for anything else (the safe side). The middleware answers:

- no key, or a key that matches none: 401 (`WWW-Authenticate: Bearer`, RFC 6750 section 3);
- a key without the route's scope: 403, a JSON problem that names the scope;
- otherwise the request goes on with `request[API_KEY_NAME]` (the key's name) and
  `request[API_SCOPES]` set. Changes made through the API record `api:<name>` as their
  operator (`operator_of`), so the audit trail says which key acted.

With no keys configured, config.settings refuses a non-loopback `http_host`, and the API
is open on loopback as before: requests act as `api:loopback` with every scope.

Keys are compared in constant time, each against every configured key.
"""

from __future__ import annotations

import hmac
from typing import Awaitable, Callable, Sequence

from aiohttp import web

from config.settings import API_SCOPES, ApiKey

# What the middleware puts on the request: the key's name, and its scopes.
API_KEY_NAME = web.RequestKey("api_key_name", str)
API_SCOPES_KEY = web.RequestKey("api_scopes", frozenset)
LOOPBACK = "loopback"                    # the name requests act under when no keys are configured

# (method, path pattern) -> the scope the route needs. Other modules that add /v1/ routes
# add their entries here (the OpenAPI document reads it too).
ROUTE_SCOPES: dict[tuple[str, str], str] = {
    ("GET", "/v1/updates"): "read",
    ("GET", "/v1/contacts/{address}"): "read",
    ("GET", "/v1/suppressions"): "read",
    ("GET", "/v1/review"): "read",
    ("POST", "/v1/tokens"): "write",
    ("POST", "/v1/sent-counts"): "write",
    ("GET", "/v1/openapi.json"): "read",
    ("GET", "/v1/contacts/{address}/export"): "read",
    ("POST", "/v1/contacts/{address}/erase"): "admin",
    ("POST", "/v1/contacts/{address}/change-address"): "admin",
    ("GET", "/v1/rights"): "read",
    ("POST", "/v1/rights/{id}/fulfil"): "admin",
    ("POST", "/v1/retention/run"): "admin",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem(status: int, title: str, **extra: object) -> web.Response:
    """A JSON problem, in the shape every /v1/ error has: {"error": ..., "status": ...}."""
    return web.json_response({"error": title, "status": status, **extra}, status=status)


def bearer(request: web.Request) -> str | None:
    """The credentials of `Authorization: Bearer X`, or None. The scheme is matched
    without regard to case (RFC 9110 section 11.1, RFC 6750 section 2.1)."""
    scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def scope_for(method: str, pattern: str | None) -> str:
    """The scope a /v1/ request needs: ROUTE_SCOPES, else `read` for GET and HEAD, `admin` otherwise."""
    method = "GET" if method.upper() == "HEAD" else method.upper()
    if pattern is not None and (method, pattern) in ROUTE_SCOPES:
        return ROUTE_SCOPES[(method, pattern)]
    return "read" if method == "GET" else "admin"


def match_key(given: str | None, keys: Sequence[ApiKey]) -> ApiKey | None:
    """The configured key `given` is, or None. Every key is compared (constant time each)."""
    if given is None:
        return None
    data = given.encode("utf-8", "surrogateescape")
    found = None
    for key in keys:
        if hmac.compare_digest(data, key.key.get_secret_value().encode("utf-8")) and found is None:
            found = key
    return found


def operator_of(request: web.Request) -> str:
    """Who acted, as events record it: `api:<key name>` (`api:loopback` without keys)."""
    return f"api:{request.get(API_KEY_NAME, LOOPBACK)}"[:64]


def _pattern(request: web.Request) -> str | None:
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else None


def middleware(keys: Sequence[ApiKey]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The aiohttp middleware that checks /v1/ requests against `keys` (see the module's text)."""
    keys = tuple(keys)

    @web.middleware
    async def api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/v1/"):
            return await handler(request)
        if not keys:
            request[API_KEY_NAME] = LOOPBACK
            request[API_SCOPES_KEY] = frozenset(API_SCOPES)
            return await handler(request)
        key = match_key(bearer(request), keys)
        if key is None:
            response = problem(401, "missing or wrong API key (Authorization: Bearer KEY)")
            response.headers["WWW-Authenticate"] = 'Bearer realm="unsubd"'
            return response
        pattern = _pattern(request)
        needed = scope_for(request.method, pattern)
        if needed not in key.scopes:
            return problem(403, f"the API key {key.name!r} lacks the {needed!r} scope that "
                                f"{request.method} {pattern or 'this path'} needs", scope=needed)
        request[API_KEY_NAME] = key.name
        request[API_SCOPES_KEY] = frozenset(key.scopes)
        return await handler(request)

    return api_key
