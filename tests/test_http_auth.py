"""The HTTP queries under the authentication rules."""

from __future__ import annotations


import pytest

from tests.support.http_api import get_json
from tests.support.inprocess import inprocess_stack


async def test_http_queries_follow_the_auth_rules(request: pytest.FixtureRequest) -> None:
    from stockstream.app import node_of
    from stockstream.auth import mint_token

    async with inprocess_stack("memory", None, require_auth=True, jwt_secret="s" * 32) as stack:
        await stack.publish("AUT", 1.0)
        await stack.publish("OTH", 2.0)
        token = mint_token(node_of(stack.app).settings, "alice", symbols=["AUT"])
        status, body = await get_json(f"{stack.url}/api/quotes/AUT")
        assert status == 401 and body["error"]["code"] == "auth_required"
        status, body = await get_json(f"{stack.url}/api/quotes/AUT", {"Authorization": f"Bearer {token}"})
        assert status == 200 and body["symbol"] == "AUT"
        status, body = await get_json(f"{stack.url}/api/history/AUT?token={token}")
        assert status == 200 and len(body["updates"]) == 1
        status, body = await get_json(f"{stack.url}/api/candles/OTH", {"Authorization": f"Bearer {token}"})
        assert status == 403 and body["error"]["code"] == "forbidden_symbol"
        status, body = await get_json(f"{stack.url}/api/quotes/AUT", {"Authorization": "Bearer nonsense"})
        assert status == 401 and body["error"]["code"] == "auth_failed"
