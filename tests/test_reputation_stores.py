"""The reputation stores: one behaviour suite run against SQLite and a real PostgreSQL, the PostgreSQL
migrations and failure modes, and the Supabase store at the HTTP edge against PostgREST's shapes."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import traceback
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import respx
from psycopg import errors as pg_errors

from ops_agent.errors import GovernanceUnavailable
from ops_agent.governance.policy import PolicyTable, level_for_score
from ops_agent.governance.postgres_reputation import (
    APPLICATION_NAME,
    MIGRATIONS_TABLE,
    PostgresReputationStore,
    migration_scripts,
)
from ops_agent.governance.reputation import INITIAL_SCORE, REPUTATION_DELTAS, AgentRecord, SqliteReputationStore
from ops_agent.governance.supabase_reputation import SupabaseReputationStore
from ops_agent.stores.sqlite import SqliteDatabase
from tests.postgres import create_schema
from tests.processes import free_port


def assert_no_secret(exc: BaseException, *secrets: str) -> None:
    """No secret in the error's text, its repr, its public message, or anywhere in its formatted chain."""
    shown = [str(exc), repr(exc), getattr(exc, "public_message", ""), "".join(traceback.format_exception(exc))]
    for secret in secrets:
        for text in shown:
            assert secret not in text


# --- one behaviour suite, every store --------------------------------------------------------------------


@dataclass
class Backend:
    store: Any
    refused_type_error: type[BaseException]  # what an agent_type outside the CHECK constraint raises


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        db = SqliteDatabase(tmp_path / "reputation.db")
        await db.open()
        store = SqliteReputationStore(db)
        await store.migrate()
        try:
            # The embedded store lets SQLite's own error out; the PostgreSQL and Supabase ones say ValueError.
            yield Backend(store, sqlite3.IntegrityError)
        finally:
            await db.close()
    else:
        store = PostgresReputationStore(create_schema(request.getfixturevalue("postgres_url")))
        await store.migrate()
        try:
            yield Backend(store, ValueError)
        finally:
            await store.close()


async def test_a_new_agent_starts_at_the_initial_score_and_is_created_once(backend: Backend) -> None:
    store = backend.store
    assert await store.get_agent("ops_agent") is None
    agent = await store.get_or_create_agent("ops_agent")
    assert (agent.name, agent.agent_type, agent.score, agent.successes) == ("ops_agent", "ops_agent", INITIAL_SCORE, 0)
    assert uuid.UUID(agent.id)
    assert agent.created_at > 0
    assert await store.get_or_create_agent("ops_agent") == agent
    assert await store.get_agent("ops_agent") == agent
    peer = await store.get_or_create_agent("peer-1", "peer_agent")
    assert peer.agent_type == "peer_agent" and peer.id != agent.id


async def test_each_event_applies_the_seed_delta_and_only_success_counts_for_probation(backend: Backend) -> None:
    store = backend.store
    agent = await store.get_or_create_agent("ops_agent")
    expected_score, expected_successes = agent.score, 0
    for event in ("task_success", "task_failure", "budget_exceeded", "permission_denied", "task_success"):
        updated = await store.record_event(agent.id, event, f"because {event}")
        expected_score += REPUTATION_DELTAS[event]
        expected_successes += event == "task_success"
        assert (updated.score, updated.successes) == (expected_score, expected_successes)
        assert (updated.id, updated.name, updated.created_at) == (agent.id, agent.name, agent.created_at)
    assert await store.get_agent("ops_agent") == updated


async def test_the_score_never_goes_below_zero(backend: Backend) -> None:
    store = backend.store
    agent = await store.get_or_create_agent("clumsy", "mcp_client")
    for _ in range(11):
        agent = await store.record_event(agent.id, "budget_exceeded", "over budget")
    assert agent.score == 0
    agent = await store.record_event(agent.id, "task_success", "recovering")
    assert agent.score == 2
    history = await store.events(agent.id, limit=3)
    assert [event["score_after"] for event in history] == [2, 0, 0]


async def test_events_are_newest_first_with_their_fields_and_a_limit(backend: Backend) -> None:
    store = backend.store
    agent = await store.get_or_create_agent("ops_agent")
    other = await store.get_or_create_agent("other", "peer_agent")
    await store.record_event(agent.id, "task_success", "deployed preview")
    await store.record_event(other.id, "task_failure", "not mine")
    await store.record_event(agent.id, "permission_denied", "tried production")
    history = await store.events(agent.id)
    assert [{k: v for k, v in event.items() if k != "created_at"} for event in history] == [
        {"event_type": "permission_denied", "delta": -8, "score_after": 94, "reason": "tried production"},
        {"event_type": "task_success", "delta": 2, "score_after": 102, "reason": "deployed preview"},
    ]
    assert all(isinstance(event["created_at"], float) for event in history)
    assert history[0]["created_at"] >= history[1]["created_at"]
    assert len(await store.events(agent.id, limit=1)) == 1
    assert await store.events(str(uuid.uuid4())) == []


async def test_the_permission_level_derives_from_score_and_probation(backend: Backend) -> None:
    store, policy = backend.store, PolicyTable.load()
    agent = await store.get_or_create_agent("ops_agent")
    assert policy.level_for(agent.score, agent.successes, probation_tasks=5) == "sandbox_only"  # the seed's start
    for _ in range(5):
        agent = await store.record_event(agent.id, "task_success", "ok")
    assert (agent.score, policy.level_for(agent.score, agent.successes, probation_tasks=5)) == (110, "staging_access")
    for _ in range(3):
        agent = await store.record_event(agent.id, "budget_exceeded", "over")
    assert policy.level_for(agent.score, agent.successes, probation_tasks=5) == "sandbox_only"


async def test_an_unknown_agent_type_is_refused_by_the_check_constraint(backend: Backend) -> None:
    with pytest.raises(backend.refused_type_error):
        await backend.store.get_or_create_agent("robot", "robot_overlord")
    assert await backend.store.get_agent("robot") is None


async def test_an_event_for_an_unknown_agent_is_a_lookup_error(backend: Backend) -> None:
    with pytest.raises(LookupError):
        await backend.store.record_event(str(uuid.uuid4()), "task_success", "who?")


async def test_fifty_concurrent_events_on_one_agent_lose_no_update(backend: Backend) -> None:
    store = backend.store
    agent = await store.get_or_create_agent("busy")
    results = await asyncio.gather(*(store.record_event(agent.id, "task_success", f"task {n}") for n in range(50)))
    final = await store.get_agent("busy")
    assert (final.score, final.successes) == (INITIAL_SCORE + 2 * 50, 50)
    # Every event saw a different score: each one was applied on top of the one before.
    assert sorted(record.score for record in results) == list(range(INITIAL_SCORE + 2, INITIAL_SCORE + 101, 2))
    history = await store.events(agent.id, limit=100)
    assert sorted(event["score_after"] for event in history) == list(range(INITIAL_SCORE + 2, INITIAL_SCORE + 101, 2))


async def test_concurrent_registrations_of_one_name_create_one_agent(backend: Backend) -> None:
    agents = await asyncio.gather(*(backend.store.get_or_create_agent("twin") for _ in range(20)))
    assert len({agent.id for agent in agents}) == 1


# --- PostgreSQL: migrations, constraints, concurrency across processes, failures -----------------------------


@pytest.fixture
async def pg_url(postgres_url: str) -> str:
    return create_schema(postgres_url)


@pytest.fixture
async def pg_store(pg_url: str) -> AsyncIterator[PostgresReputationStore]:
    store = PostgresReputationStore(pg_url)
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()


async def test_migrations_apply_once_even_when_processes_start_together(pg_url: str) -> None:
    stores = [PostgresReputationStore(pg_url) for _ in range(4)]
    try:
        applied = await asyncio.gather(*(store.migrate() for store in stores))
        assert sorted(applied) == [[], [], [], ["001_governance"]]
        assert await stores[0].migrate() == []
    finally:
        for store in stores:
            await store.close()
    with psycopg.connect(pg_url) as conn:
        versions = conn.execute(f"SELECT version FROM {MIGRATIONS_TABLE}").fetchall()
    assert versions == [(version,) for version, _ in migration_scripts()] == [("001_governance",)]


async def test_the_agent_type_check_constraint_lists_the_seed_types(
    pg_store: PostgresReputationStore, pg_url: str
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for agent_type in ("ops_agent", "mcp_client", "peer_agent"):
            conn.execute("INSERT INTO agents (name, agent_type) VALUES (%s, %s)", (f"a-{agent_type}", agent_type))
        with pytest.raises(pg_errors.CheckViolation) as refused:
            conn.execute("INSERT INTO agents (name, agent_type) VALUES ('x', 'robot')")
        assert refused.value.diag.constraint_name == "agents_agent_type_check"
        with pytest.raises(pg_errors.CheckViolation):
            conn.execute(
                "INSERT INTO reputation_events (agent_id, event_type, delta, score_after, reason) "
                "SELECT id, 'bribe', 50, 150, 'no' FROM agents LIMIT 1"
            )
        default = conn.execute("INSERT INTO agents (name, agent_type) VALUES ('d', 'ops_agent') "
                               "RETURNING reputation_score, successes, permission_level").fetchone()
    assert default == (INITIAL_SCORE, 0, "staging_access")


async def test_the_stored_permission_level_follows_the_policy_score_table(
    pg_store: PostgresReputationStore, pg_url: str
) -> None:
    levels = PolicyTable.load().levels
    edges = {floor + edge for floor in levels.values() for edge in (-1, 0, 1)}
    scores = sorted(score for score in edges | {0, 1, 500} if score >= 0)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO agents (name, agent_type) VALUES ('probe', 'ops_agent')")
        for score in scores:
            level = conn.execute(
                "UPDATE agents SET reputation_score = %s WHERE name = 'probe' RETURNING permission_level", (score,)
            ).fetchone()[0]
            assert level == level_for_score(score, levels), score


async def test_fifty_events_from_two_processes_lose_no_update(pg_store: PostgresReputationStore, pg_url: str) -> None:
    second = PostgresReputationStore(pg_url, max_connections=25)
    try:
        agent = await pg_store.get_or_create_agent("shared")
        events = ["task_failure" if n % 5 == 0 else "task_success" for n in range(50)]
        await asyncio.gather(*(
            (pg_store if n % 2 else second).record_event(agent.id, event, "x") for n, event in enumerate(events)
        ))
        final = await second.get_agent("shared")
    finally:
        await second.close()
    assert final.score == INITIAL_SCORE + 40 * 2 - 10 * 3
    assert final.successes == 40


async def test_an_unreachable_server_is_governance_unavailable_without_the_url(postgres_url: str) -> None:
    password = "S3cret-unreachable-pw"
    url = f"postgresql://ops:{password}@127.0.0.1:{free_port()}/governance"
    store = PostgresReputationStore(url, connect_timeout_s=2)
    with pytest.raises(GovernanceUnavailable) as caught:
        await store.get_agent("ops_agent")
    assert caught.value.public_message == (
        "reputation store unavailable: cannot connect to PostgreSQL (server unreachable or refusing connections)"
    )
    assert_no_secret(caught.value, password, url)
    assert password not in repr(store)


async def test_a_wrong_password_is_governance_unavailable_without_either_password(postgres_url: str) -> None:
    role, right, wrong = f"ops_{uuid.uuid4().hex[:8]}", "Right-pw-9f3k2", "Wrong-pw-7d1q8"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{right}'")
    port = postgres_url.rsplit(":", 1)[1].split("/")[0]
    url = f"postgresql://{role}:{wrong}@127.0.0.1:{port}/postgres"
    store = PostgresReputationStore(url)
    with pytest.raises(GovernanceUnavailable) as caught:
        await store.get_or_create_agent("ops_agent")
    assert caught.value.public_message.endswith("cannot connect to PostgreSQL (authentication refused)")
    # The error text leaves the process; the chain (for our own logs, which are redacted) may name the role.
    for text in (str(caught.value), repr(caught.value), caught.value.public_message):
        assert wrong not in text and right not in text and url not in text and role not in text
    assert_no_secret(caught.value, wrong, right)


async def test_missing_tables_are_governance_unavailable(pg_url: str) -> None:
    store = PostgresReputationStore(pg_url)  # never migrated
    try:
        with pytest.raises(GovernanceUnavailable, match="UndefinedTable, SQLSTATE 42P01"):
            await store.get_agent("ops_agent")
    finally:
        await store.close()


async def test_the_store_recovers_when_its_connections_are_cut(
    pg_store: PostgresReputationStore, postgres_url: str
) -> None:
    agent = await pg_store.get_or_create_agent("ops_agent")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        cut = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                           (APPLICATION_NAME,)).fetchall()
    assert cut == [(True,)]
    with pytest.raises(GovernanceUnavailable):
        await pg_store.get_agent("ops_agent")
    assert await pg_store.get_agent("ops_agent") == agent  # a new connection, no restart


# --- Supabase through PostgREST, at the HTTP edge -------------------------------------------------------------

SUPABASE_URL = "https://abcdefghijklmnop.supabase.co"
REST = f"{SUPABASE_URL}/rest/v1"
# Shaped like a real service role key (a JWT), so that the redactor's shapes would also see it.
SERVICE_KEY = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2VydmljZS1yb2xlLXNpZ25hdHVyZQ"
AGENT_ID = "7df3273c-1c9c-49cf-9fb3-41d8494768d8"  # the seed's example agent id


def agent_row(score: int = INITIAL_SCORE, successes: int = 0, **changes: Any) -> dict[str, Any]:
    """An `agents` row as PostgREST serialises it (to_json of the row: ISO timestamps, every column)."""
    return {
        "id": AGENT_ID, "name": "ops_agent", "agent_type": "ops_agent", "reputation_score": score,
        "successes": successes, "permission_level": level_for_score(score, PolicyTable.load().levels),
        "created_at": "2025-06-01T09:30:00.123456+00:00", "updated_at": "2025-06-01T09:30:00.123456+00:00",
        **changes,
    }


def postgrest_error(status: int, code: str, message: str, details: str | None = None) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "details": details, "hint": None, "message": message})


@pytest.fixture
async def supabase() -> AsyncIterator[tuple[SupabaseReputationStore, respx.MockRouter]]:
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        store = SupabaseReputationStore(SUPABASE_URL, SERVICE_KEY)
        try:
            yield store, router
        finally:
            await store.close()


def assert_service_role_auth(request: httpx.Request) -> None:
    assert request.headers["apikey"] == SERVICE_KEY
    assert request.headers["authorization"] == f"Bearer {SERVICE_KEY}"


async def test_supabase_get_agent_reads_one_row_by_name(supabase) -> None:
    store, router = supabase
    route = router.get(f"{REST}/agents", params={"select": "*", "name": "eq.ops_agent"})
    route.respond(200, json=[agent_row()])
    agent = await store.get_agent("ops_agent")
    assert agent == AgentRecord(AGENT_ID, "ops_agent", "ops_agent", 100, 0, 1748770200.123456)
    request = route.calls.last.request
    assert_service_role_auth(request)
    assert request.url.path == "/rest/v1/agents"
    assert dict(request.url.params) == {"select": "*", "name": "eq.ops_agent"}

    router.get(f"{REST}/agents", params={"name": "eq.nobody"}).respond(200, json=[])
    assert await store.get_agent("nobody") is None


async def test_supabase_migrate_checks_the_tables_are_served(supabase) -> None:
    store, router = supabase
    probe = router.get(f"{REST}/agents", params={"select": "id", "limit": "1"}).mock(side_effect=[
        httpx.Response(200, json=[]),
        postgrest_error(404, "PGRST205", "Could not find the table 'public.agents' in the schema cache"),
    ])
    assert await store.migrate() == []
    assert_service_role_auth(probe.calls.last.request)
    with pytest.raises(GovernanceUnavailable, match="PostgREST error PGRST205"):
        await store.migrate()


async def test_supabase_get_or_create_inserts_with_representation_when_missing(supabase) -> None:
    store, router = supabase
    router.get(f"{REST}/agents").respond(200, json=[])
    insert = router.post(f"{REST}/agents").respond(201, json=[agent_row(agent_type="mcp_client", name="client-1")])
    agent = await store.get_or_create_agent("client-1", "mcp_client")
    assert (agent.name, agent.agent_type, agent.score) == ("client-1", "mcp_client", 100)
    request = insert.calls.last.request
    assert_service_role_auth(request)
    assert dict(request.url.params) == {"on_conflict": "name"}
    assert set(request.headers["prefer"].split(",")) == {"return=representation", "resolution=ignore-duplicates"}
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"name": "client-1", "agent_type": "mcp_client", "reputation_score": 100}


async def test_supabase_get_or_create_reads_again_when_another_process_won_the_insert(supabase) -> None:
    store, router = supabase
    reads = router.get(f"{REST}/agents").mock(side_effect=[httpx.Response(200, json=[]),
                                                          httpx.Response(200, json=[agent_row(score=96)])])
    router.post(f"{REST}/agents").respond(201, json=[])  # ignored as a duplicate: an empty representation
    agent = await store.get_or_create_agent("ops_agent")
    assert (agent.id, agent.score) == (AGENT_ID, 96)
    assert reads.call_count == 2


async def test_supabase_existing_agent_is_not_inserted(supabase) -> None:
    store, router = supabase
    router.get(f"{REST}/agents").respond(200, json=[agent_row(score=130, successes=9)])
    insert = router.post(f"{REST}/agents")
    agent = await store.get_or_create_agent("ops_agent")
    assert (agent.score, agent.successes) == (130, 9)
    assert not insert.called


async def test_supabase_record_event_calls_the_atomic_rpc(supabase) -> None:
    store, router = supabase
    rpc = router.post(f"{REST}/rpc/record_reputation_event").respond(200, json=agent_row(score=92, successes=0))
    agent = await store.record_event(AGENT_ID, "permission_denied", "tried deploy:production")
    assert (agent.id, agent.score) == (AGENT_ID, 92)
    request = rpc.calls.last.request
    assert_service_role_auth(request)
    assert request.url.query == b""
    assert json.loads(request.content) == {
        "agent_id": AGENT_ID, "event_type": "permission_denied", "delta": -8, "reason": "tried deploy:production",
    }


async def test_supabase_record_event_for_an_unknown_agent_is_a_lookup_error(supabase) -> None:
    store, router = supabase
    router.post(f"{REST}/rpc/record_reputation_event").mock(
        return_value=postgrest_error(404, "PT404", f"no agent {AGENT_ID}")
    )
    with pytest.raises(LookupError):
        await store.record_event(AGENT_ID, "task_success", "x")


async def test_supabase_refused_agent_type_is_a_value_error(supabase) -> None:
    store, router = supabase
    router.get(f"{REST}/agents").respond(200, json=[])
    router.post(f"{REST}/agents").mock(return_value=postgrest_error(
        400, "23514", 'new row for relation "agents" violates check constraint "agents_agent_type_check"',
        "Failing row contains (…, robot, robot_overlord, 100, 0, …).",
    ))
    with pytest.raises(ValueError, match="agent_type 'robot_overlord'"):
        await store.get_or_create_agent("robot", "robot_overlord")


async def test_supabase_events_are_read_newest_first(supabase) -> None:
    store, router = supabase
    route = router.get(f"{REST}/reputation_events").respond(200, json=[
        {"event_type": "task_failure", "delta": -3, "score_after": 99, "reason": "build failed",
         "created_at": "2025-06-01T10:00:01+00:00"},
        {"event_type": "task_success", "delta": 2, "score_after": 102, "reason": "deployed",
         "created_at": "2025-06-01T10:00:00.5+00:00"},
    ])
    history = await store.events(AGENT_ID, limit=10)
    assert history == [
        {"event_type": "task_failure", "delta": -3, "score_after": 99, "reason": "build failed",
         "created_at": 1748772001.0},
        {"event_type": "task_success", "delta": 2, "score_after": 102, "reason": "deployed",
         "created_at": 1748772000.5},
    ]
    assert dict(route.calls.last.request.url.params) == {
        "select": "event_type,delta,score_after,reason,created_at", "agent_id": f"eq.{AGENT_ID}",
        "order": "id.desc", "limit": "10",
    }


@pytest.mark.parametrize("answer", [
    postgrest_error(401, "PGRST301", "JWSError JWSInvalidSignature"),
    postgrest_error(500, "XX000", "internal error"),
    httpx.Response(503, text="<html>Service Unavailable</html>"),
    httpx.ConnectError,
    httpx.ReadTimeout,
], ids=["401", "500", "503-html", "connect-error", "read-timeout"])
async def test_supabase_failures_are_governance_unavailable_without_the_key(
    supabase, answer: httpx.Response | type[Exception], caplog: pytest.LogCaptureFixture
) -> None:
    store, router = supabase
    route = router.route(host="abcdefghijklmnop.supabase.co")
    if isinstance(answer, httpx.Response):
        route.mock(return_value=answer)
    else:
        route.mock(side_effect=answer)
    calls = [store.get_agent("ops_agent"), store.get_or_create_agent("ops_agent"),
             store.record_event(AGENT_ID, "task_success", "ok"), store.events(AGENT_ID)]
    for call in calls:
        with pytest.raises(GovernanceUnavailable) as caught:
            await call
        assert caught.value.public_message.startswith("reputation store unavailable: Supabase ")
        assert_no_secret(caught.value, SERVICE_KEY)
    assert SERVICE_KEY not in caplog.text
    assert SERVICE_KEY not in repr(store)


async def test_supabase_and_postgres_agree_on_the_rpc_contract(
    supabase, pg_store: PostgresReputationStore, pg_url: str
) -> None:
    """The RPC's parameters are the JSON keys the Supabase store sends, and the row the function returns,
    serialised as PostgREST does (to_json), maps to the record the PostgreSQL store returns."""
    store, router = supabase
    agent = await pg_store.get_or_create_agent("ops_agent")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        names = conn.execute("SELECT proargnames FROM pg_proc WHERE proname = 'record_reputation_event'").fetchone()[0]
        row = conn.execute("SELECT to_json(record_reputation_event(%s::uuid, 'task_success', 2, 'contract'))",
                           (agent.id,)).fetchone()[0]
    rpc = router.post(f"{REST}/rpc/record_reputation_event").respond(200, json=row)
    via_supabase = await store.record_event(agent.id, "task_success", "contract")
    assert set(json.loads(rpc.calls.last.request.content)) == set(names)
    assert via_supabase == await pg_store.get_agent("ops_agent")
    assert via_supabase.score == INITIAL_SCORE + 2


async def test_database_url_moves_reputation_to_postgresql_and_an_outage_starts_degraded(tmp_path, postgres_url):
    from ops_agent.governance.postgres_reputation import PostgresReputationStore
    from ops_agent.services import open_services
    from tests.conftest import make_settings

    url = create_schema(postgres_url)
    async with open_services(make_settings(tmp_path, DATABASE_URL=url), background=False) as services:
        assert isinstance(services.gate.reputation, PostgresReputationStore) and not services.gate.degraded
        await services.registry.invoke(services.identity, "record_metric", {"name": "x", "value": 1.0})
        status = await services.gate.status(services.settings.governance.agent_name)
        assert status["reputation_score"] == 100
    dead = "postgresql://ops:s3cretpw@127.0.0.1:9/ops"  # nothing listens on port 9
    async with open_services(make_settings(tmp_path / "b", DATABASE_URL=dead), background=False) as services:
        assert services.gate.degraded and "s3cretpw" not in (services.gate.degraded_reason or "")
