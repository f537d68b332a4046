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


_Key = tuple[type[BaseModel], JsonSchemaMode]


def _model_schemas(routes: list[Route]) -> tuple[dict[Any, dict[str, Any]], dict[str, Any]]:
    """Every body and response model in one pass: a ``$ref`` per (model, mode) and the
    component schemas. Generated together, two models of one class name (chat's and
    video's ``ParticipantOut``) get distinct component names instead of one
    silently standing for both."""
    keys: list[_Key] = []
    for route in routes:
        if route.body is not None:
            keys.append((route.body, "validation"))
        if route.response is not None:
            keys.append((route.response, "serialization"))
    keys = list(dict.fromkeys(keys))
    if not keys:
        return {}, {}
    refs, top = models_json_schema(keys, ref_template=_REF)
    return {k: dict(v) for k, v in refs.items()}, dict(top.get("$defs", {}))


def build_openapi(routes: Iterable[Route], *, title: str, version: str) -> dict[str, Any]:
    routes = list(routes)
    refs, schemas = _model_schemas(routes)
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
        },
        **schemas,
    }
    problem = {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
    }
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
                    "schema": refs[(route.body, "validation")]}},
            }
        ok: dict[str, Any] = {"description": _SUCCESS.get(route.status, "Success")}
        if route.status in _NO_CONTENT:
            pass
        elif route.response is not None:
            ok["content"] = {"application/json": {
                "schema": refs[(route.response, "serialization")]}}
        elif route.timeout is False:
            # each event's data is a JSON event (docs/websocket.md), not one string
            ok["content"] = {"text/event-stream": {"schema": {}}}
        else:
            # no response model declared: a body of the route's media type
            schema = {} if route.content_type == "application/json" else {"type": "string"}
            ok["content"] = {route.content_type: {"schema": schema}}
        op["responses"][str(route.status)] = ok
        errors = _standard_errors(route, has_path_params=bool(_PARAM.findall(route.path)))
        errors.update(route.extra_responses)
        if route.auth or route.self_authenticated:
            op["security"] = [{"bearerAuth": []}]
        for status, text in sorted(errors.items()):
            if status < 400:  # another success answer: the route's own body, if any
                op["responses"][str(status)] = {
                    "description": text, **({"content": ok["content"]} if "content" in ok
                                            and status not in _NO_CONTENT else {})}
                continue
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


def _standard_errors(route: Route, *, has_path_params: bool) -> dict[int, str]:
    """What the kernel's pipeline may answer on any route of this shape, whatever the
    handler does: every one of these is a problem+json with a stable code."""
    errors: dict[int, str] = {
        429: "Rate limited",
        503: "A dependency (database) is unavailable or timed out",
        504: "Request timeout",
    }
    if route.body is not None:
        errors.update({400: "Malformed JSON, or nested deeper than http.max_json_depth",
                       413: "Body larger than the route's limit",
                       415: "Content-Type is not application/json",
                       422: "Invalid body (per-field `errors`), or not valid Unicode"})
    if route.query is not None:
        errors.update({400: "Invalid query parameter", 422: "Invalid query parameter"})
    if route.auth:
        errors.update({401: "Missing, invalid, expired or revoked token",
                       403: "Not allowed for this caller"})
    if has_path_params:
        errors.update({403: "Not allowed for this caller", 404: "No such resource"})
    return errors


def _op_name(path: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "_", path).strip("_") or "root"
