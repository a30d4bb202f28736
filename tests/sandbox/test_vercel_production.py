"""What production serves on the Vercel emulator: auto-assignment, instant rollback, promote, aliases,
custom environments."""

from __future__ import annotations


async def test_production_follows_ready_production_deployments(vercel, clock):
    box = await vercel(clock=clock, build_time_s=1)
    project = await box.project()
    assert project["targets"] == {} and project["link"]["productionBranch"] == "main"
    assert (project["link"]["org"], project["link"]["repo"]) == ("acme", "demo-app")
    first = await box.deploy()
    clock.advance(0.5)
    assert box.production() is None  # not before the build is READY
    clock.advance(1)
    assert box.production() == first["id"]
    project = await box.project()
    assert project["targets"]["production"]["id"] == first["id"]
    assert project["targets"]["production"]["readySubstate"] == "PROMOTED"
    assert "demo-app.vercel.app" in (await box.get(first["id"]))["alias"]

    preview = await box.deploy(ref="feature", target=None)
    second = await box.deploy()
    clock.advance(2)
    assert box.production() == second["id"]  # the preview built too, and changed nothing
    assert (await box.get(preview["id"]))["target"] is None and "readySubstate" not in await box.get(preview["id"])
    assert "demo-app.vercel.app" not in (await box.get(first["id"]))["alias"]
    listed = (await box.api.get("/v6/deployments", params={"projectId": "demo-app"})).json()["deployments"]
    items = {d["uid"]: d for d in listed}
    assert items[first["id"]]["isRollbackCandidate"] is True and items[preview["id"]]["isRollbackCandidate"] is False
    assert [d["id"] for d in (await box.project())["latestDeployments"]] == [second["id"], preview["id"], first["id"]]


async def test_rollback_repoints_production_and_stops_auto_assignment_until_a_promote(vercel, clock):
    box = await vercel(clock=clock, build_time_s=1)
    good = await box.deploy()
    clock.advance(2)
    bad = await box.deploy()
    clock.advance(2)
    assert box.production() == bad["id"]

    rolled = await box.api.post(
        f"/v1/projects/{box.project_id}/rollback/{good['id']}", params={"description": "bad release"}
    )
    assert rolled.status_code == 201 and rolled.content == b""
    assert box.production() == good["id"] and box.emu.state.auto_assign("demo-app") is False
    project = await box.project()
    assert project["targets"]["production"]["id"] == good["id"]
    assert project["lastRollbackTarget"]["toDeploymentId"] == good["id"]
    assert project["lastRollbackTarget"]["jobStatus"] == "succeeded"
    assert project["lastAliasRequest"] == {
        "fromDeploymentId": bad["id"], "toDeploymentId": good["id"], "jobStatus": "succeeded",
        "requestedAt": project["lastAliasRequest"]["requestedAt"], "type": "rollback",
    }
    assert project["rollbackDescription"]["description"] == "bad release"

    fix = await box.deploy()
    clock.advance(2)
    staged = await box.get(fix["id"])
    assert staged["readyState"] == "READY" and staged["readySubstate"] == "STAGED"
    assert box.production() == good["id"]  # auto-assignment is off after a rollback

    promoted = await box.api.post(f"/v10/projects/{box.project_id}/promote/{fix['id']}")
    assert promoted.status_code == 201
    assert box.production() == fix["id"] and box.emu.state.auto_assign("demo-app") is True
    project = await box.project()
    assert project["lastRollbackTarget"] is None and project["lastAliasRequest"]["type"] == "promote"
    assert (await box.get(fix["id"]))["readySubstate"] == "PROMOTED"
    following = await box.deploy()
    clock.advance(2)
    assert box.production() == following["id"]  # auto-assignment is back

    cli = await box.api.post(f"/v9/projects/{box.project_id}/rollback/{good['id']}", json={})
    assert cli.status_code == 201 and box.production() == good["id"]  # the CLI's path works as well


async def test_invalid_rollback_and_promote_targets_are_refused(vercel, clock):
    box = await vercel(clock=clock, build_time_s=1, fail_branches=["broken"])
    live = await box.deploy()
    clock.advance(2)
    preview = await box.deploy(ref="feature", target=None)
    failed = await box.deploy(ref="broken")
    clock.advance(2)
    newer = await box.deploy()
    clock.advance(2)
    await box.api.post(f"/v1/projects/{box.project_id}/rollback/{live['id']}")  # newer -> live, auto off
    staged = await box.deploy()
    clock.advance(2)
    building = await box.deploy()
    clock.advance(0.5)
    assert (await box.get(staged["id"]))["readySubstate"] == "STAGED"
    assert (await box.get(building["id"]))["readyState"] == "BUILDING"

    rollback = f"/v1/projects/{box.project_id}/rollback/"
    promote = f"/v10/projects/{box.project_id}/promote/"
    cases = [
        (rollback + preview["id"], 400, "invalid_rollback_target"),
        (rollback + failed["id"], 409, "deployment_not_ready"),
        (rollback + building["id"], 409, "deployment_not_ready"),
        (rollback + staged["id"], 409, "not_rollback_candidate"),
        (rollback + live["id"], 409, "rollback_target_is_current"),
        (rollback + "dpl_nope", 404, "not_found"),
        (f"/v1/projects/prj_nope/rollback/{newer['id']}", 404, "not_found"),
        (promote + preview["id"], 400, "invalid_promote_target"),
        (promote + building["id"], 409, "deployment_not_ready"),
        (promote + newer["id"], 409, "deployment_already_promoted"),
        (promote + "dpl_nope", 404, "not_found"),
    ]
    for path, status, code in cases:
        response = await box.api.post(path)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), (path, response.text)
    assert box.production() == live["id"] and box.emu.state.auto_assign("demo-app") is False


async def test_aliases_move_between_deployments(vercel, clock):
    box = await vercel(clock=clock, build_time_s=1)
    first = await box.deploy()
    clock.advance(2)
    second = await box.deploy()
    clock.advance(2)
    listed = (await box.api.get(f"/v2/deployments/{second['id']}/aliases")).json()["aliases"]
    assert {a["alias"] for a in listed} == {"demo-app.vercel.app", "demo-app-git-main-sandbox.vercel.app"}
    assert (await box.api.get(f"/v2/deployments/{first['id']}/aliases")).json() == {"aliases": []}

    assigned = await box.api.post(f"/v2/deployments/{first['id']}/aliases", json={"alias": "www.acme.test"})
    assert assigned.status_code == 200 and assigned.json()["oldDeploymentId"] is None
    moved = await box.api.post(f"/v2/deployments/{second['id']}/aliases", json={"alias": "www.acme.test"})
    assert moved.json()["oldDeploymentId"] == first["id"] and moved.json()["uid"] == assigned.json()["uid"]
    found = (await box.api.get("/v4/aliases/www.acme.test")).json()
    assert found["deploymentId"] == second["id"] and found["deployment"]["url"] == second["url"]
    assert (await box.api.get(f"/v4/aliases/{found['uid']}")).json()["alias"] == "www.acme.test"
    production_alias = (await box.api.get("/v4/aliases/demo-app.vercel.app", params={"projectId": "demo-app"})).json()
    assert production_alias["deploymentId"] == second["id"]

    not_ready = await box.deploy(ref="feature", target=None)
    early = await box.api.post(f"/v2/deployments/{not_ready['id']}/aliases", json={"alias": "early.acme.test"})
    assert early.status_code == 409 and early.json()["error"]["code"] == "deployment_not_ready"
    assert (await box.api.get("/v4/aliases/nope.acme.test")).status_code == 404
    assert (await box.api.get("/v2/deployments/dpl_nope/aliases")).status_code == 404


async def test_custom_environment_staging(vercel, clock):
    box = await vercel(clock=clock, build_time_s=0)
    environments = (await box.api.get("/v9/projects/demo-app/custom-environments")).json()["environments"]
    assert [e["slug"] for e in environments] == ["staging"] and environments[0]["id"].startswith("env_")
    staging_id = environments[0]["id"]
    by_slug = (await box.api.get("/v9/projects/demo-app/custom-environments/staging")).json()
    assert by_slug["id"] == staging_id
    assert (await box.api.get(f"/v9/projects/demo-app/custom-environments/{staging_id}")).json()["slug"] == "staging"
    assert (await box.api.get("/v9/projects/demo-app/custom-environments/qa")).status_code == 404

    created = await box.deploy(ref="release", target=None, customEnvironmentSlugOrId="staging")
    assert created["target"] is None and created["customEnvironment"]["id"] == staging_id
    assert box.production() is None
    assert "demo-app-env-staging-sandbox.vercel.app" in created["alias"]
    by_target = await box.deploy(ref="release", target="staging")
    assert by_target["target"] == "staging" and by_target["customEnvironment"]["slug"] == "staging"
    listed = (await box.api.get("/v6/deployments", params={"target": "staging"})).json()["deployments"]
    assert [d["uid"] for d in listed] == [by_target["id"]] and listed[0]["customEnvironment"]["id"] == staging_id
    environment = (await box.api.get("/v9/projects/demo-app/custom-environments/staging")).json()
    assert environment["currentDeploymentAliases"] == ["demo-app-env-staging-sandbox.vercel.app"]
