"""The OpenAPI 3.1 document (worker.ingress.openapi): generated from the app's router, every /v1/
route in it with its scope, valid OpenAPI 3.1, and served at /v1/openapi.json."""

from __future__ import annotations

import json

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from worker.ingress import api_auth
from worker.ingress.http import build_app
from worker.ingress.openapi import OPERATIONS, document, v1_routes
from tests.conftest import make_settings


async def no_metrics():
    return {}


def app() -> web.Application:
    return build_app(make_settings(), None, no_metrics)


def test_every_v1_route_is_in_the_document_with_its_scope_and_docstring():
    a = app()
    doc = document(a)
    routes = v1_routes(a)
    assert len(routes) >= 10 and ("POST", "/v1/sent-counts") in {(m, p) for m, p, _ in routes}
    for method, pattern, handler in routes:
        operation = doc["paths"][pattern][method.lower()]
        scope = api_auth.scope_for(method, pattern)
        assert operation["x-scope"] == scope and operation["security"] == [{"bearer": [scope]}]
        first_line = (handler.__doc__ or "").strip().split("\n")[0]
        assert first_line and first_line in operation["description"], pattern
        assert {"401", "403", "503"} <= set(operation["responses"])
    counted = sum(len(ops) for ops in doc["paths"].values())
    assert counted == len(routes)
    assert all(p.startswith("/v1/") for p in doc["paths"])


def test_every_route_has_its_schemas_declared():
    """A route added without an entry in OPERATIONS would be documented as 'any JSON object':
    this test names it, so that its author declares its request and response models."""
    missing = [(m, p) for m, p, _ in v1_routes(app()) if (m, p) not in OPERATIONS]
    assert missing == []


def test_the_document_is_valid_openapi_3_1_and_json_schema_2020_12():
    doc = document(app())
    assert doc["openapi"].startswith("3.1")
    validate(doc)                          # raises OpenAPIValidationError when not valid
    body = doc["paths"]["/v1/sent-counts"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    entry = doc["components"]["schemas"]["SentCountEntry"]
    assert body == {"$ref": "#/components/schemas/SentCounts"}
    assert entry["properties"]["count"]["minimum"] == 0 and "day" in entry["required"]
    assert doc["components"]["securitySchemes"]["bearer"] == {**doc["components"]["securitySchemes"]["bearer"],
                                                              "type": "http", "scheme": "bearer"}


def test_the_validator_can_fail():
    doc = document(app())
    doc["paths"]["/v1/sent-counts"]["post"]["responses"] = {"200": {"content": {}}}     # no description
    try:
        validate(doc)
    except OpenAPIValidationError:
        return
    raise AssertionError("an operation without a response description passed")


async def test_the_document_is_served_at_v1_openapi_json():
    a = app()
    async with TestClient(TestServer(a)) as client:
        r = await client.get("/v1/openapi.json")
        assert r.status == 200 and r.content_type == "application/json"
        assert json.loads(await r.text()) == json.loads(json.dumps(document(a)))
