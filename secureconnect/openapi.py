"""``/openapi.json``: OpenAPI 3.1 generated from the registered routes and their
pydantic models — nothing is maintained by hand."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from .routing import Route

_PARAM = re.compile(r"{([^}:]+)(?::[^}]*)?}")
_REF = "#/components/schemas/{model}"


def _model_schemas(
    routes: list[Route], components: dict[str, Any]
) -> dict[tuple[type[BaseModel], JsonSchemaMode], dict[str, Any]]:
    """One pass over every body and response model: pydantic names the components and
    keeps two models of the same class name apart (chat's and video's ``ParticipantOut``
    each get their own schema instead of one hiding the other)."""
    pairs: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {}
    for route in routes:
        if route.body is not None:
            pairs[(route.body, "validation")] = None
        if route.response is not None:
            pairs[(route.response, "serialization")] = None
    if not pairs:
        return {}
    refs, defs = models_json_schema(list(pairs), ref_template=_REF)
    for name, schema in defs.get("$defs", {}).items():
        components.setdefault(name, schema)
    return {(model, mode): refs[(model, mode)] for model, mode in pairs}


def build_openapi(routes: Iterable[Route], *, title: str, version: str) -> dict[str, Any]:
    routes = list(routes)
    paths: dict[str, dict[str, Any]] = {}
    components: dict[str, Any] = {
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details with a stable `code`.",
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "code": {"type": "string"},
                "instance": {"type": "string"},
                "request_id": {"type": "string"},
            },
            "required": ["type", "title", "status", "code"],
        }
    }
    problem = {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
    }
    schemas = _model_schemas(routes, components)
    for route in routes:
        path = _PARAM.sub(r"{\1}", route.path)
        op: dict[str, Any] = {
            "operationId": f"{route.method.lower()}_{_op_name(path)}",
            "summary": route.summary or f"{route.method} {path}",
            "responses": {},
        }
        if route.tag:
            op["tags"] = [route.tag]
        params = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in _PARAM.findall(route.path)
        ]
        if route.query is not None:
            qs = route.query.model_json_schema()
            required = set(qs.get("required", []))
            for name, prop in qs.get("properties", {}).items():
                params.append({"name": name, "in": "query", "required": name in required,
                               "schema": prop})
        if params:
            op["parameters"] = params
        if route.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {
                    "schema": schemas[(route.body, "validation")]}},
            }
        if route.auth:
            op["security"] = [{"bearerAuth": []}]
        success = {status: text for status, text in route.extra_responses.items()
                   if status < 400}
        success.setdefault(route.status, _SUCCESS.get(route.status, "Success"))
        for status, text in sorted(success.items()):
            ok: dict[str, Any] = {"description": text}
            if route.response is not None and status not in _NO_CONTENT:
                ok["content"] = {"application/json": {
                    "schema": schemas[(route.response, "serialization")]}}
            elif route.timeout is False and status not in _NO_CONTENT:
                ok["content"] = {"text/event-stream": {"schema": {"type": "string"}}}
            elif status not in _NO_CONTENT:
                # no response model declared: a body of the route's media type
                schema = {} if route.content_type == "application/json" else {"type": "string"}
                ok["content"] = {route.content_type: {"schema": schema}}
            op["responses"][str(status)] = ok
        for status, text in sorted(_errors(route).items()):
            op["responses"][str(status)] = {"description": text, "content": problem}
        paths.setdefault(path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": components,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                               "bearerFormat": "JWT"}},
        },
    }


_SUCCESS = {101: "Switching Protocols (the WebSocket is open)", 201: "Created",
            202: "Accepted", 204: "No Content"}
_NO_CONTENT = {101, 204, 304}


def _errors(route: Route) -> dict[int, str]:
    """The problem responses a route can give: those of the kernel's wrapper (what
    the route declares it needs) plus the route's own ``extra_responses``."""
    errors: dict[int, str] = {}
    if _PARAM.search(route.path):
        errors[404] = "No such resource"
    if route.body is not None:
        errors.update({400: "Malformed JSON", 413: "Body too large",
                       415: "Content-Type is not application/json", 422: "Invalid body"})
    if route.query is not None:
        errors[422] = "Invalid query parameters"
    if route.auth:
        errors[401] = "Missing, invalid, expired or revoked token"
    if route.rate_limit != "none":
        errors[429] = "Rate limited"
    if route.timeout is not False:
        errors[504] = "Request timeout"
    errors.update({s: text for s, text in route.extra_responses.items() if s >= 400})
    return errors


def _op_name(path: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "_", path).strip("_") or "root"
