from __future__ import annotations

from openapi_spec_validator import validate


async def test_openapi_is_valid_31_and_lists_plugin_routes(sc_client):
    client = await sc_client()
    r = await client.get("/openapi.json")
    assert r.status == 200
    spec = await r.json()
    assert spec["openapi"].startswith("3.1")
    validate(spec)
    assert "/health/ready" in spec["paths"]
    assert "/v1/example/hello" in spec["paths"]  # the third-party plugin's route
    hello = spec["paths"]["/v1/example/hello"]["get"]
    assert hello["security"] == [{"bearerAuth": []}]
    assert "401" in hello["responses"]
