"""Every body and response in /openapi.json describes its own model, nested models
included (issue 22, item 24): two plugins' models of one class name (chat's and
video's ``ParticipantOut``) once shared one component, so a call's participants were
documented as chat participants and schemathesis saw valid answers as violations."""

from __future__ import annotations

from typing import Any

from secureconnect.http.context import ROUTES


def _resolve(node: Any, defs: dict[str, Any], depth: int = 0) -> Any:
    """``node`` with every ``$ref`` replaced by what it names (titles dropped: a
    component's title is its name, which may be qualified)."""
    if depth > 40:  # a recursive model: compare up to here (both sides cut alike)
        return "..."
    if isinstance(node, dict):
        if "$ref" in node:
            return _resolve(defs[node["$ref"].rsplit("/", 1)[-1]], defs, depth + 1)
        return {k: _resolve(v, defs, depth + 1) for k, v in node.items() if k != "title"}
    if isinstance(node, list):
        return [_resolve(v, defs, depth + 1) for v in node]
    return node


async def test_each_route_documents_its_own_models(sc_client):
    client = await sc_client()
    spec = await (await client.get("/openapi.json")).json()
    components = spec["components"]["schemas"]
    wrong: list[str] = []
    checked = 0
    for route in client.app[ROUTES]:
        op = spec["paths"].get(route.path, {}).get(route.method.lower())
        if op is None:
            continue
        pairs = []
        if route.response is not None:
            content = op["responses"][str(route.status)]["content"]["application/json"]
            pairs.append((route.response, "serialization", content["schema"]))
        if route.body is not None:
            content = op["requestBody"]["content"]["application/json"]
            pairs.append((route.body, "validation", content["schema"]))
        for model, mode, documented in pairs:
            own = model.model_json_schema(mode=mode)
            want = _resolve(own, own.get("$defs", {}))
            want.pop("$defs", None)
            checked += 1
            if _resolve(documented, components) != want:
                wrong.append(f"{route.method} {route.path}: not {model.__qualname__} ({mode})")
    assert checked > 20
    assert wrong == []
