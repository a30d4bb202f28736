"""The Vercel client's error paths, through an injected httpx2 transport answering with the contract's shapes.

Whole flows against the emulator over a real socket are in tests/test_deployment.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx2
import pytest

from ops_agent.errors import UpstreamTimeout
from ops_agent.tools.deployment import VercelClient, VercelError

TOKEN = "vercel-token-abcdef123456"
DEPLOYMENT = {"id": "dpl_abc", "readyState": "READY", "url": "demo-abc.vercel.app", "name": "demo", "projectId": "prj_1"}


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def client_with(handler: Callable[[httpx2.Request], httpx2.Response], **options) -> tuple[VercelClient, list]:
    seen: list[httpx2.Request] = []

    def record(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return handler(request)

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(record))
    options.setdefault("backoff_s", 0.001)
    return VercelClient(http, base_url="https://api.vercel.com", token=TOKEN, team_id="team_1", **options), seen


async def test_requests_carry_the_token_and_team_and_escape_ids():
    client, seen = client_with(lambda request: httpx2.Response(200, json=DEPLOYMENT))
    assert (await client.get_deployment("dpl_abc"))["id"] == "dpl_abc"
    await client.get_deployment("../v9/projects/x")
    first, second = seen
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    assert first.url.params["teamId"] == "team_1"
    assert first.url.path == "/v13/deployments/dpl_abc"
    assert second.url.raw_path.startswith(b"/v13/deployments/..%2Fv9%2Fprojects%2Fx")


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "bad_request"), (401, "unauthorized"), (403, "forbidden"), (404, "not_found"), (409, "conflict")],
)
async def test_client_errors_are_typed_and_never_retried(status, code):
    client, seen = client_with(lambda request: httpx2.Response(status, json=error_body(code, "nope")))
    with pytest.raises(VercelError) as caught:
        await client.get_deployment("dpl_abc")
    assert len(seen) == 1
    error = caught.value
    assert (error.status_code, error.code, error.retryable) == (status, code, False)
    assert f"HTTP {status} {code}: nope" in error.public_message
    assert TOKEN not in error.public_message


async def test_rate_limits_honour_retry_after_then_succeed():
    answers = iter([
        httpx2.Response(429, json=error_body("rate_limited", "slow down"), headers={"Retry-After": "0"}),
        httpx2.Response(429, json=error_body("too_many_requests", "slow down"), headers={"Retry-After": "0"}),
        httpx2.Response(200, json=DEPLOYMENT),
    ])
    client, seen = client_with(lambda request: next(answers))
    assert (await client.get_deployment("dpl_abc"))["id"] == "dpl_abc"
    assert len(seen) == 3


async def test_a_retry_after_beyond_the_cap_is_not_waited_for():
    client, seen = client_with(
        lambda request: httpx2.Response(429, json=error_body("rate_limited", "later"), headers={"Retry-After": "3600"}),
        max_retry_after_s=60,
    )
    with pytest.raises(VercelError) as caught:
        await client.get_deployment("dpl_abc")
    assert len(seen) == 1 and caught.value.retry_after_s == 3600


async def test_server_errors_are_retried_for_safe_requests_only():
    client, seen = client_with(lambda request: httpx2.Response(503, json=error_body("internal_server_error", "x")))
    with pytest.raises(VercelError) as caught:
        await client.get_deployment("dpl_abc")
    assert len(seen) == 6 and caught.value.retryable  # max_attempts
    client, seen = client_with(lambda request: httpx2.Response(500, json=error_body("internal_server_error", "x")))
    with pytest.raises(VercelError):
        await client.create_deployment({"name": "demo"})
    assert len(seen) == 1  # a create may have happened: its caller reconciles instead of repeating


async def test_rate_limited_creates_are_retried():
    answers = iter([
        httpx2.Response(429, json=error_body("rate_limited", "x"), headers={"Retry-After": "0"}),
        httpx2.Response(200, json=DEPLOYMENT),
    ])
    client, seen = client_with(lambda request: next(answers))
    assert (await client.create_deployment({"name": "demo"}))["id"] == "dpl_abc"
    assert len(seen) == 2


async def test_connection_failures_before_sending_are_retried_even_for_creates():
    calls = 0

    def handler(request: httpx2.Request) -> httpx2.Response:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise httpx2.ConnectError("refused", request=request)
        return httpx2.Response(200, json=DEPLOYMENT)

    client, _ = client_with(handler)
    assert (await client.create_deployment({"name": "demo"}))["id"] == "dpl_abc"
    assert calls == 3


async def test_timeouts_are_upstream_timeouts():
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("slow", request=request)

    client, seen = client_with(handler, max_attempts=2)
    with pytest.raises(UpstreamTimeout, match="timed out"):
        await client.get_deployment("dpl_abc")
    assert len(seen) == 2
    client, seen = client_with(handler)
    with pytest.raises(UpstreamTimeout):
        await client.create_deployment({"name": "demo"})
    assert len(seen) == 1


async def test_malformed_json_is_a_clear_error():
    client, _ = client_with(lambda request: httpx2.Response(200, content=b"<html>gateway</html>"))
    with pytest.raises(VercelError, match="not JSON"):
        await client.get_deployment("dpl_abc")
    client, _ = client_with(lambda request: httpx2.Response(502, content=b"<html>bad gateway</html>"), max_attempts=1)
    with pytest.raises(VercelError) as caught:
        await client.get_deployment("dpl_abc")
    assert caught.value.status_code == 502 and caught.value.code is None


async def test_pagination_follows_next_with_until():
    pages = {
        None: {"deployments": [{"uid": "dpl_3"}, {"uid": "dpl_2"}], "pagination": {"count": 2, "next": 200, "prev": None}},
        "200": {"deployments": [{"uid": "dpl_1"}], "pagination": {"count": 1, "next": None, "prev": 300}},
    }
    client, seen = client_with(lambda request: httpx2.Response(200, json=pages[request.url.params.get("until")]))
    ids = [item["uid"] async for item in client.iter_deployments(projectId="prj_1", limit=2)]
    assert ids == ["dpl_3", "dpl_2", "dpl_1"]
    assert [r.url.params.get("until") for r in seen] == [None, "200"]
    assert all(r.url.params["projectId"] == "prj_1" and r.url.params["limit"] == "2" for r in seen)


async def test_list_endpoint_version_is_configurable():
    client, seen = client_with(lambda request: httpx2.Response(200, json={"deployments": [], "pagination": {}}), list_version=7)
    await client.list_deployments()
    assert seen[0].url.path == "/v7/deployments"


async def test_rollback_uses_the_sdk_path_and_env_bodies_are_json():
    client, seen = client_with(lambda request: httpx2.Response(201, content=b""))
    await client.rollback("prj_1", "dpl_old", description="undo dpl_new")
    assert seen[0].method == "POST" and seen[0].url.path == "/v1/projects/prj_1/rollback/dpl_old"
    assert seen[0].url.params["description"] == "undo dpl_new"
    client, seen = client_with(lambda request: httpx2.Response(201, json={"created": {}, "failed": []}))
    await client.create_env("demo", {"key": "A", "value": "secret-value", "type": "sensitive", "target": ["preview"]})
    assert json.loads(seen[0].content)["key"] == "A" and seen[0].url.params["upsert"] == "true"
