"""Deployments on the Vercel emulator: build progress, failures, cancel, build logs, listing and pagination."""

from __future__ import annotations

import asyncio
import json

from tests.vercel_contract import INVALID_REQUEST


async def test_deployment_moves_queued_building_ready(vercel, clock):
    box = await vercel(clock=clock, build_time_s=10)
    created = await box.deploy(meta={"opsAgentIdempotencyKey": "k-1"})
    assert created["id"].startswith("dpl_") and created["readyState"] == created["status"] == "QUEUED"
    assert created["url"].endswith(".vercel.app") and "://" not in created["url"]
    assert created["target"] == "production" and created["projectId"] == box.project_id
    assert created["meta"]["opsAgentIdempotencyKey"] == "k-1" and created["meta"]["githubCommitRef"] == "main"
    assert created["gitSource"]["sha"] == created["meta"]["githubCommitSha"]
    assert created["isInConcurrentBuildsQueue"] is True and "ready" not in created
    seen = [created["readyState"]]
    logs = [len((await box.api.get(f"/v3/deployments/{created['id']}/events")).json())]
    for _ in range(12):  # 0.5 s .. 11 s in 1 s steps
        clock.advance(1.0 if len(seen) > 1 else 0.5)
        seen.append((await box.get(created["id"]))["readyState"])
        logs.append(len((await box.api.get(f"/v3/deployments/{created['id']}/events")).json()))
    assert seen[:2] == ["QUEUED", "QUEUED"] and seen[2] == "BUILDING" and seen[-1] == "READY"
    assert [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]] == ["QUEUED", "BUILDING", "READY"]
    assert logs == sorted(logs) and logs[0] < logs[4] < logs[-1]  # the build log grows with the build
    ready = await box.get(created["url"])  # by hostname, too
    assert ready["id"] == created["id"] and ready["ready"] == created["createdAt"] + 10_000
    assert ready["buildingAt"] == created["createdAt"] + 1_000 and ready["aliasAssigned"] is True
    events = (await box.api.get(f"/v3/deployments/{created['id']}/events")).json()
    assert events[-1]["type"] == "deployment-state" and events[-1]["payload"]["info"]["readyState"] == "READY"
    assert [e["created"] for e in events] == sorted({e["created"] for e in events})
    missing = await box.api.get("/v13/deployments/dpl_doesnotexist")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def test_builds_finish_in_real_time_and_the_log_streams(vercel):
    box = await vercel(build_time_s=0.2)
    created = await box.deploy(target=None)
    streamed = await box.api.get(f"/v3/deployments/{created['id']}/events", params={"follow": 1})
    assert streamed.headers["content-type"].startswith("application/stream+json")
    lines = [json.loads(line) for line in streamed.text.splitlines()]
    assert lines[0]["payload"]["info"]["readyState"] == "QUEUED"
    assert lines[-1]["payload"]["info"]["readyState"] == "READY"  # the stream ends with the build
    assert (await box.get(created["id"]))["readyState"] == "READY"
    later = await box.api.get(f"/v3/deployments/{created['id']}/events", params={"since": lines[5]["created"]})
    assert [e["payload"]["id"] for e in later.json()] == [e["payload"]["id"] for e in lines[5:]]
    backward = await box.api.get(
        f"/v3/deployments/{created['id']}/events", params={"direction": "backward", "limit": 2}
    )
    assert [e["payload"]["id"] for e in backward.json()] == [e["payload"]["id"] for e in lines[::-1][:2]]


async def test_a_fail_branch_ends_in_error_with_the_error_in_the_build_log(vercel, clock):
    box = await vercel(clock=clock, build_time_s=1, fail_branches=["broken"])
    bad = await box.deploy(ref="broken")
    good = await box.deploy(ref="main")
    clock.advance(0.5)
    partial = (await box.api.get(f"/v3/deployments/{bad['id']}/events")).json()
    assert not any(e["type"] == "stderr" for e in partial)  # the error shows when the build gets there
    clock.advance(1)
    failed = await box.get(bad["id"])
    assert failed["readyState"] == "ERROR" and failed["errorCode"] == "BUILD_UTILS_SPAWN_1"
    assert failed["errorMessage"] == 'Command "npm run build" exited with 1' and "ready" not in failed
    events = (await box.api.get(f"/v3/deployments/{bad['id']}/events")).json()
    errors = [e["payload"]["text"] for e in events if e["type"] == "stderr"]
    assert 'Error: Command "npm run build" exited with 1' in errors and any("broken" in t for t in errors)
    assert events[-1]["payload"]["info"]["readyState"] == "ERROR"
    assert (await box.get(good["id"]))["readyState"] == "READY"
    assert box.production() == good["id"]  # a failed build never takes production
    listed = (await box.api.get("/v6/deployments", params={"state": "ERROR"})).json()["deployments"]
    assert [d["uid"] for d in listed] == [bad["id"]] and listed[0]["errorCode"] == "BUILD_UTILS_SPAWN_1"


async def test_failed_build_rate_fails_builds_and_a_seed_repeats_the_run(vercel, clock):
    outcomes = []
    for _ in range(2):
        box = await vercel(clock=clock, build_time_s=0, failed_build_rate=0.5, seed=11)
        outcomes.append([(await box.deploy(target=None))["readyState"] for _ in range(12)])
    assert outcomes[0] == outcomes[1] and {"READY", "ERROR"} == set(outcomes[0])
    always = await vercel(clock=clock, build_time_s=0, failed_build_rate=1.0)
    assert (await always.deploy())["readyState"] == "ERROR"


async def test_cancel_only_while_queued_or_building(vercel, clock):
    box = await vercel(clock=clock, build_time_s=10)
    created = await box.deploy()
    clock.advance(3)
    canceled = await box.api.patch(f"/v12/deployments/{created['id']}/cancel")
    assert canceled.status_code == 200 and canceled.json()["readyState"] == "CANCELED"
    assert canceled.json()["canceledAt"] == created["createdAt"] + 3000
    clock.advance(10)
    assert (await box.get(created["id"]))["readyState"] == "CANCELED" and box.production() is None
    events = (await box.api.get(f"/v3/deployments/{created['id']}/events")).json()
    assert events[-1]["payload"]["info"]["readyState"] == "CANCELED"
    again = await box.api.patch(f"/v12/deployments/{created['id']}/cancel")
    assert again.status_code == 400 and again.json()["error"]["code"] == "deployment_not_cancelable"
    done = await box.deploy()
    clock.advance(10)
    refused = await box.api.patch(f"/v12/deployments/{done['id']}/cancel")
    assert refused.status_code == 400 and "READY" in refused.json()["error"]["message"]


async def test_create_refuses_bad_bodies_naming_the_field(vercel):
    box = await vercel()
    base = {"name": "demo-app", "project": "demo-app"}
    source = {"type": "github", "ref": "main", "org": "acme", "repo": "demo-app"}
    cases = [
        ({**base}, 400, "bad_request", "`gitSource`", False),
        ({**base, "gitSource": {"type": "github", "repoId": 1}}, 400, "bad_request", "`gitSource.ref`", True),
        ({**base, "gitSource": source, "target": "qa"}, 400, "bad_request", "`target`", False),
        ({**base, "gitSource": source, "colour": "red"}, 400, "bad_request", "`colour`", True),
        ({**base, "gitSource": source, "meta": {"n": 1}}, 400, "bad_request", "`meta.n`", True),
        ({"project": "demo-app", "gitSource": source}, 400, "bad_request", "`name`", True),
        ({**base, "project": "nope", "gitSource": source}, 404, "not_found", "nope", False),
        ({**base, "gitSource": {**source, "repo": "other"}}, 400, "incorrect_git_source_info", "acme/demo-app", False),
        ({**base, "gitSource": source, "customEnvironmentSlugOrId": "qa"}, 404, "not_found", "qa", False),
        ({**base, "files": []}, 400, "no_files", "files", False),
    ]
    for body, status, code, named, malformed in cases:
        response = await box.api.post("/v13/deployments", json=body, extensions=INVALID_REQUEST if malformed else None)
        error = response.json()["error"]
        assert (response.status_code, error["code"]) == (status, code), (body, response.text)
        assert named in error["message"], (named, error["message"])
    not_json = await box.api.post(
        "/v13/deployments", content=b"{nope", headers={"content-type": "application/json"}, extensions=INVALID_REQUEST
    )
    assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]["message"]
    assert box.emu.state.snapshot()["counters"]["deployments"] == 0


async def test_redeploy_and_file_deployments(vercel, clock):
    box = await vercel(clock=clock, build_time_s=0)
    first = await box.deploy(ref="release")
    redeploy = await box.api.post(
        "/v13/deployments", json={"name": "demo-app", "deploymentId": first["id"], "target": "production"}
    )
    assert redeploy.status_code == 200 and redeploy.json()["source"] == "redeploy"
    assert redeploy.json()["gitSource"] == first["gitSource"] and redeploy.json()["id"] != first["id"]
    files = await box.api.post(
        "/v13/deployments",
        json={"name": "demo-app", "project": "demo-app", "files": [{"file": "index.html", "data": "<h1>hi</h1>"}]},
    )
    assert files.status_code == 200 and files.json()["source"] == "cli" and "gitSource" not in files.json()


async def test_listing_filters_and_pages_over_many_deployments(vercel, clock):
    box = await vercel(clock=clock, build_time_s=0)
    created = []
    for index in range(104):  # > 100: at least two pages at the maximum page size
        created.append((await box.deploy(ref="feature-x" if index % 10 == 0 else "main", target=None))["id"])
    created.append((await box.deploy())["id"])
    newest_first = created[::-1]

    default = (await box.api.get("/v6/deployments")).json()
    assert default["pagination"]["count"] == 20 and [d["uid"] for d in default["deployments"]] == newest_first[:20]
    seen, until, pages = [], None, 0
    while True:
        params = {"limit": 100, "projectId": box.project_id} | ({"until": until} if until else {})
        page = (await box.api.get("/v7/deployments", params=params)).json()
        pages += 1
        seen += [d["uid"] for d in page["deployments"]]
        assert page["pagination"]["count"] == len(page["deployments"])
        assert page["pagination"]["prev"] == page["deployments"][0]["createdAt"]
        until = page["pagination"]["next"]
        if until is None:
            break
        assert until == page["deployments"][-1]["createdAt"]
    assert pages == 2 and seen == newest_first
    capped = (await box.api.get("/v6/deployments", params={"limit": 500})).json()
    assert capped["pagination"]["count"] == 100
    middle = (await box.api.get("/v6/deployments", params={"since": default["deployments"][-1]["createdAt"]})).json()
    assert [d["uid"] for d in middle["deployments"]] == newest_first[:19]

    async def uids(**params):
        body = (await box.api.get("/v6/deployments", params={"limit": 100, **params})).json()
        return [d["uid"] for d in body["deployments"]]

    assert await uids(target="production") == [created[-1]]
    assert len(await uids(target="preview")) == 100 and await uids(target="staging") == []
    assert len(await uids(branch="feature-x")) == 11
    assert await uids(rollbackCandidate="true") == [created[-1]]
    assert len(await uids(state="READY,BUILDING")) == 100 and await uids(state="QUEUED") == []
    bad = await box.api.get("/v6/deployments", params={"state": "DONE"})
    assert bad.status_code == 400 and "DONE" in bad.json()["error"]["message"]
    unknown = await box.api.get("/v6/deployments", params={"projectId": "prj_nope"})
    assert unknown.status_code == 404


async def test_concurrent_requests_are_served_consistently(vercel):
    box = await vercel(build_time_s=0)
    bodies = await asyncio.gather(*(box.deploy(target=None) for _ in range(20)))
    assert len({b["id"] for b in bodies}) == 20 and len({b["createdAt"] for b in bodies}) == 20
    listed = (await box.api.get("/v6/deployments", params={"limit": 100})).json()
    assert {d["uid"] for d in listed["deployments"]} == {b["id"] for b in bodies}


async def test_runtime_logs_stream_what_the_deployment_logged(vercel):
    box = await vercel()
    created = await box.deploy(target=None)
    project = (await box.project())["id"]
    path = f"/v1/projects/{project}/deployments/{created['id']}/runtime-logs"
    empty = await box.api.get(path)
    assert empty.status_code == 200 and empty.text == ""
    box.emu.state.emit_runtime_log(created["id"], "GET /api/users 200", path="/api/users")
    box.emu.state.emit_runtime_log(created["id"], "Error: connect ECONNREFUSED 10.0.0.5:5432", level="error", status=500)
    response = await box.api.get(path)
    assert response.headers["content-type"].startswith("application/stream+json")
    entries = [json.loads(line) for line in response.text.splitlines()]
    assert [(e["level"], e["responseStatusCode"]) for e in entries] == [("info", 200), ("error", 500)]
    assert entries[1]["message"].startswith("Error: connect ECONNREFUSED") and entries[1]["rowId"] != entries[0]["rowId"]
    assert (await box.api.get(f"/v1/projects/{project}/deployments/dpl_missing/runtime-logs")).status_code == 404
