"""The Vercel emulator's edges: authentication and team scoping, environment variables, injected faults,
rate limits, the inspection endpoint, unknown paths, the command line, and the contract check itself."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

from sandbox.vercel import EmulatorConfig, ProjectConfig, VercelEmulator
from tests.vercel_contract import FIXTURES, INVALID_REQUEST, SUBSET, ContractViolation

REPO = Path(__file__).parents[2]
SHARED_SUBSET = REPO.parent / "shared" / "contracts" / "vercel-openapi-subset.json"


async def test_auth_token_and_team_scoping(vercel):
    box = await vercel(
        tokens={"sandbox-token": "team_sandbox", "other-token": "team_other"},
        projects=[
            ProjectConfig(name="demo-app", link={"org": "acme", "repo": "demo-app"}),
            ProjectConfig(name="other-app", team_id="team_other"),
        ],
    )
    anonymous = await box.make_client(token=None)
    missing = await anonymous.get("/v9/projects/demo-app", extensions=INVALID_REQUEST)
    assert missing.status_code == 401 and missing.json()["error"]["missingToken"] is True
    stranger = await box.make_client(token="not-a-token")
    forbidden = await stranger.get("/v9/projects/demo-app")
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
    wrong_team = await box.api.get("/v9/projects/demo-app", params={"teamId": "team_other"})
    assert wrong_team.status_code == 403 and wrong_team.json()["error"]["code"] == "forbidden"
    wrong_slug = await box.api.get("/v9/projects/demo-app", params={"slug": "other"})
    assert wrong_slug.status_code == 403
    assert (await box.api.get("/v9/projects/demo-app", params={"slug": "sandbox"})).status_code == 200
    no_team = await box.make_client(team_id=None)  # acts on the token's team
    assert (await no_team.get("/v9/projects/demo-app")).json()["accountId"] == "team_sandbox"
    other = await box.make_client(token="other-token", team_id="team_other")
    assert (await other.get("/v9/projects/other-app")).json()["accountId"] == "team_other"
    assert (await other.get("/v9/projects/demo-app")).status_code == 404  # another team's: as if absent
    assert (await box.api.get("/v9/projects/other-app")).status_code == 404
    mine = await box.deploy()
    assert (await other.get(f"/v13/deployments/{mine['id']}")).status_code == 404
    assert (await other.get("/v6/deployments")).json()["deployments"] == []
    assert box.emu.state.snapshot()["counters"]["deployments"] == 1  # refused requests did nothing


async def test_env_vars_crud_with_upsert_and_hidden_values(vercel, clock):
    box = await vercel(clock=clock, build_time_s=0)
    url = "/v10/projects/demo-app/env"
    secret = {"key": "API_KEY", "type": "encrypted", "target": ["production"]}
    created = await box.api.post(url, json={**secret, "value": "s3cret-1"})
    assert created.status_code == 201 and created.json()["failed"] == []
    variable = created.json()["created"]
    assert variable["key"] == "API_KEY" and variable["value"] != "s3cret-1" and variable["decrypted"] is False

    listed = (await box.api.get(url)).json()["envs"]
    assert [(v["key"], v["decrypted"]) for v in listed] == [("API_KEY", False)] and "s3cret-1" not in json.dumps(listed)
    decrypted = (await box.api.get(url, params={"decrypt": "true"})).json()["envs"]
    assert decrypted[0]["value"] == "s3cret-1" and decrypted[0]["decrypted"] is True
    one = (await box.api.get(f"/v1/projects/demo-app/env/{variable['id']}")).json()
    assert one["value"] == "s3cret-1" and one["decrypted"] is True

    clash = await box.api.post(url, json={**secret, "value": "s3cret-2"})
    assert clash.status_code == 400 and clash.json()["error"]["code"] == "ENV_CONFLICT"
    upserted = await box.api.post(url, params={"upsert": "true"}, json={**secret, "value": "s3cret-2"})
    assert upserted.status_code == 201 and upserted.json()["created"]["id"] == variable["id"]
    assert (await box.api.get(f"/v1/projects/demo-app/env/{variable['id']}")).json()["value"] == "s3cret-2"

    staging_id = box.emu.state.projects[box.project_id].custom_environment("staging").id
    batch = await box.api.post(
        url,
        json=[
            {**secret, "value": "again"},
            {"key": "PUBLIC_URL", "value": "https://demo.test", "type": "plain", "target": ["preview", "development"]},
            {"key": "TOKEN", "value": "tok-9", "type": "sensitive", "customEnvironmentIds": [staging_id]},
        ],
    )
    assert batch.status_code == 201 and [v["key"] for v in batch.json()["created"]] == ["PUBLIC_URL", "TOKEN"]
    assert [f["error"]["code"] for f in batch.json()["failed"]] == ["ENV_CONFLICT"]
    shown = {v["key"]: v for v in (await box.api.get(url, params={"decrypt": "true"})).json()["envs"]}
    assert shown["PUBLIC_URL"]["value"] == "https://demo.test"  # plain values are not secret
    assert shown["TOKEN"]["value"] != "tok-9" and shown["TOKEN"]["decrypted"] is False  # sensitive: never
    token = (await box.api.get(f"/v1/projects/demo-app/env/{shown['TOKEN']['id']}")).json()
    assert "value" not in token and token["decrypted"] is False
    in_staging = (await box.api.get(url, params={"customEnvironmentSlug": "staging"})).json()["envs"]
    assert [v["key"] for v in in_staging] == ["TOKEN"]

    assert (await box.deploy())["env"] == ["API_KEY"]  # production build gets production variables
    assert (await box.deploy(target=None))["env"] == ["PUBLIC_URL"]
    assert (await box.deploy(target=None, customEnvironmentSlugOrId="staging"))["env"] == ["TOKEN"]

    edited = await box.api.patch(
        f"/v9/projects/demo-app/env/{variable['id']}", json={"value": "s3cret-3", "target": ["production", "preview"]}
    )
    assert edited.status_code == 200 and edited.json()["target"] == ["production", "preview"]
    assert (await box.api.get(f"/v1/projects/demo-app/env/{variable['id']}")).json()["value"] == "s3cret-3"
    renamed = await box.api.patch(f"/v9/projects/demo-app/env/{variable['id']}", json={"key": "PUBLIC_URL"})
    assert renamed.status_code == 400 and renamed.json()["error"]["code"] == "ENV_CONFLICT"
    removed = await box.api.delete(f"/v9/projects/demo-app/env/{variable['id']}")
    assert removed.status_code == 200 and removed.json()["id"] == variable["id"]
    assert "API_KEY" not in {v["key"] for v in (await box.api.get(url)).json()["envs"]}
    assert (await box.api.delete(f"/v9/projects/demo-app/env/{variable['id']}")).status_code == 404

    bad_cases = [
        ({"key": "X", "value": "1", "type": "plain"}, "`target`", True),
        ({"key": "9X", "value": "1", "type": "plain", "target": ["preview"]}, "`key`", False),
        ({"key": "X", "value": "1", "type": "weird", "target": ["preview"]}, "`type`", True),
        ({"key": "X", "value": "1", "type": "plain", "target": ["production"], "gitBranch": "f"}, "`gitBranch`", False),
        ({"key": "X", "value": "1", "type": "plain", "customEnvironmentIds": ["env_nope"]}, "env_nope", False),
    ]
    for body, named, malformed in bad_cases:
        response = await box.api.post(url, json=body, extensions=INVALID_REQUEST if malformed else None)
        assert response.status_code == 400 and named in response.json()["error"]["message"], response.text


async def test_transient_faults_fail_every_request_before_anything_happens(vercel):
    box = await vercel(transient_error_rate=1.0)
    statuses = set()
    body = {"name": "demo-app", "project": "demo-app", "gitSource": {"type": "github", "ref": "main", "repoId": 1}}
    for _ in range(25):
        response = await box.api.post("/v13/deployments", json=body)
        statuses.add(response.status_code)
        assert response.status_code in (429, 500, 502, 503)
        if response.status_code in (429, 503):
            assert response.headers["Retry-After"] == "0"
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "too_many_requests"
    assert statuses == {429, 500, 502, 503}
    anonymous = await box.make_client(token=None)  # before authentication, too
    refused = await anonymous.get("/v9/projects/demo-app", extensions=INVALID_REQUEST)
    assert refused.status_code in (429, 500, 502, 503)
    counters = (await box.api.get("/_sandbox/state")).json()["counters"]
    assert counters["createDeploymentRequests"] == 25 and counters["deployments"] == 0
    assert sum(counters["faults"].values()) == 26

    documented = json.loads((FIXTURES / "errors.json").read_text())["examples"]
    assert {"too_many_requests", "internal_server_error"} <= {e["error"]["code"] for e in documented.values()}


async def test_a_lost_response_still_creates_the_deployment(vercel):
    box = await vercel(lost_response_rate=1.0, build_time_s=0)
    response = await box.api.post(
        "/v13/deployments",
        json={
            "name": "demo-app", "project": "demo-app", "target": "production",
            "gitSource": {"type": "github", "ref": "main", "org": "acme", "repo": "demo-app"},
            "meta": {"opsAgentIdempotencyKey": "deploy-42"},
        },
    )
    assert response.status_code == 500 and response.json()["error"]["code"] == "internal_server_error"
    found = (await box.api.get("/v6/deployments", params={"projectId": "demo-app"})).json()["deployments"]
    assert [d["meta"]["opsAgentIdempotencyKey"] for d in found] == ["deploy-42"]  # findable by its meta key
    assert box.production() == found[0]["uid"]
    counters = box.emu.state.snapshot()["counters"]
    assert counters["createDeploymentRequests"] == 1 and counters["deployments"] == 1
    assert counters["faults"] == {"lostResponses": 1}
    assert (await box.api.get("/v9/projects/demo-app")).status_code == 200  # other operations answer


async def test_rate_limit_per_operation_and_slow_responses(vercel):
    box = await vercel(rate_limit=3, slow_response_s=0.05)
    remaining = []
    for _ in range(3):
        response = await box.api.get("/v9/projects/demo-app")
        remaining.append(int(response.headers["X-RateLimit-Remaining"]))
        assert response.headers["X-RateLimit-Limit"] == "3"
    assert remaining == [2, 1, 0]
    limited = await box.api.get("/v9/projects/demo-app")
    error = limited.json()["error"]
    assert limited.status_code == 429 and error["code"] == "rate_limited" and error["limit"]["total"] == 3
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert int(limited.headers["X-RateLimit-Reset"]) >= time.time()
    assert (await box.api.get("/v6/deployments")).status_code == 200  # counted per operation
    started = time.perf_counter()
    await asyncio.gather(*(box.api.get("/v6/deployments") for _ in range(2)))
    assert time.perf_counter() - started >= 0.05  # latency added (concurrently, not serially)


async def test_unknown_paths_and_methods_answer_in_vercels_shape(vercel):
    box = await vercel()
    unknown = await box.api.get("/v99/nothing")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    wrong_method = await box.api.put("/v13/deployments")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_unknown"
    assert (await box.api.get("/v9/projects/nope")).status_code == 404


async def test_sandbox_state_shows_production_deployments_and_counters(vercel, clock):
    box = await vercel(clock=clock, build_time_s=1)
    created = await box.deploy(meta={"ticket": "OPS-1"})
    clock.advance(2)
    variable = {"key": "A", "value": "secret-value", "type": "encrypted", "target": ["production"]}
    assert (await box.api.post("/v10/projects/demo-app/env", json=variable)).status_code == 201
    state = (await box.api.get("/_sandbox/state")).json()
    project = state["projects"][0]
    assert project["production"] == {"deploymentId": created["id"], "url": created["url"]}
    assert project["autoAssignProduction"] is True and project["envKeys"] == ["A"]
    assert state["deployments"][0]["state"] == "READY" and state["deployments"][0]["meta"]["ticket"] == "OPS-1"
    assert state["aliases"]["demo-app.vercel.app"] == created["id"]
    assert state["counters"]["byOperation"] == {"createDeployment": 1, "createProjectEnv": 1}
    assert "secret-value" not in json.dumps(state) and "sandbox-token" not in json.dumps(state)


def test_the_emulator_runs_as_a_plain_context_manager():
    with VercelEmulator(EmulatorConfig(build_time_s=0)) as emu:
        assert emu.base_url.startswith("http://127.0.0.1:")
        assert (emu.token, emu.team_id) == ("sandbox-token", "team_sandbox")
        with httpx2.Client(base_url=emu.base_url, headers={"Authorization": f"Bearer {emu.token}"}) as client:
            assert client.get("/v9/projects/demo-app").json()["name"] == "demo-app"
            assert client.get("/_sandbox/state").json()["counters"]["requests"] == 1
    with pytest.raises(httpx2.ConnectError):  # stopped: the port no longer answers
        httpx2.get(f"{emu.base_url}/_sandbox/state", timeout=2)


def test_command_line_runs_the_emulator_and_prints_how_to_reach_it(tmp_path):
    config = tmp_path / "vercel.yaml"
    config.write_text("tokens: {cli-token: team_cli}\nbuild_time_s: 0\nfail_branches: [broken]\n")
    command = [sys.executable, "-m", "sandbox", "--port", "0", "--config", str(config), "--log-level", "warning"]
    with subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as process:
        try:
            lines = [process.stdout.readline() for _ in range(4)]
            settings = dict(line.strip().split("=", 1) for line in lines[1:])
            assert settings["VERCEL_TOKEN"] == "cli-token" and settings["VERCEL_TEAM_ID"] == "team_cli"
            auth = {"Authorization": "Bearer cli-token"}
            with httpx2.Client(base_url=settings["VERCEL_API_URL"], headers=auth) as client:
                source = {"type": "github", "ref": "broken", "org": "acme", "repo": "demo-app"}
                created = client.post("/v13/deployments", json={"name": "demo-app", "gitSource": source})
                assert created.json()["readyState"] == "ERROR"  # build_time_s 0, and `broken` always fails
        finally:
            process.terminate()
            process.communicate(timeout=10)
    bad = subprocess.run(
        [sys.executable, "-m", "sandbox", "vercel", "--fail-rate", "2"], cwd=REPO, capture_output=True, text=True,
        timeout=30,
    )
    assert bad.returncode == 2 and "failed_build_rate" in bad.stderr


def test_the_contract_check_rejects_what_the_subset_forbids(contract):
    request = httpx2.Request("GET", "http://127.0.0.1/v13/deployments/dpl_1", headers={"Authorization": "Bearer t"})
    body = {"id": "dpl_1", "url": "x.vercel.app", "readyState": "READY"}  # far from the full deployment shape
    with pytest.raises(ContractViolation, match="breaks the subset"):
        contract.check(request, httpx2.Response(200, json=body))
    with pytest.raises(ContractViolation, match="not a Vercel error body"):
        contract.check(request, httpx2.Response(502, json={"message": "bad gateway"}))
    anonymous = httpx2.Request("GET", "http://127.0.0.1/v9/projects/demo-app")
    with pytest.raises(ContractViolation, match="subset rejects"):
        contract.check(anonymous, httpx2.Response(401, json={"error": {"code": "unauthorized", "message": "no"}}))


def test_the_fixture_copy_of_the_subset_is_current():
    if not SHARED_SUBSET.exists():
        pytest.skip(f"no shared contracts beside this checkout ({SHARED_SUBSET.parent}); using the fixture copy")
    assert SUBSET.read_bytes() == SHARED_SUBSET.read_bytes(), f"copy {SHARED_SUBSET} to {SUBSET}"
