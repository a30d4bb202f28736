"""Agents and their reputation on Supabase: the PostgreSQL store's tables, through PostgREST (supabase-py).

The tables and the `record_reputation_event` function come from migrations/postgres (applied over the
project's direct database connection, or in its SQL editor); this store only reads and writes rows:

    GET  /rest/v1/agents?select=*&name=eq.<name>                      get_agent
    POST /rest/v1/agents?on_conflict=name  (resolution=ignore-duplicates)  get_or_create_agent
    POST /rest/v1/rpc/record_reputation_event                         record_event: one atomic UPDATE
    GET  /rest/v1/reputation_events?select=...&agent_id=eq.<id>&order=id.desc&limit=<n>

It authenticates with the service role key (`apikey` and `Authorization: Bearer`), which bypasses the
tables' row-level security. The key is never logged and never in error text: PostgREST and network
failures become `GovernanceUnavailable` naming only the PostgREST error code or the kind of failure.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
from postgrest import APIError
from supabase import AsyncClient, AsyncClientOptions
from supabase._async.client import SupabaseException

from ops_agent.errors import ConfigError, GovernanceUnavailable
from ops_agent.governance.reputation import INITIAL_SCORE, REPUTATION_DELTAS, AgentRecord, EventType

__all__ = ["SupabaseReputationStore"]

_EVENT_COLUMNS = "event_type,delta,score_after,reason,created_at"
_CHECK_VIOLATION = "23514"
_INVALID_TEXT = "22P02"  # e.g. an agent id that is not a uuid
_NOT_FOUND = ("PT404", "404")  # record_reputation_event's RAISE; PostgREST answers it with HTTP 404


def _record(row: dict[str, Any]) -> AgentRecord:
    return AgentRecord(
        str(row["id"]), row["name"], row["agent_type"], int(row["reputation_score"]), int(row["successes"]),
        _epoch(row["created_at"]),
    )


def _epoch(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def _unavailable(exc: Exception) -> GovernanceUnavailable:
    if isinstance(exc, APIError):
        reason = f"PostgREST error {exc.code or 'without a code'}"
    else:
        reason = type(exc).__name__
    return GovernanceUnavailable(f"reputation store unavailable: Supabase {reason}")


class SupabaseReputationStore:
    """`ReputationStore` on a Supabase project. `client` is a supabase-py `AsyncClient`; without one the store
    builds its own over `url` and `service_role_key`, with a `timeout_s` per request and without
    supabase-py's retries (the gate refuses on a failure, and the next call tries again)."""

    def __init__(
        self, url: str, service_role_key: str, client: AsyncClient | None = None, *, timeout_s: float = 10.0
    ) -> None:
        self._http: httpx.AsyncClient | None = None
        if client is None:
            self._http = httpx.AsyncClient(timeout=timeout_s)
            options = AsyncClientOptions(httpx_client=self._http, postgrest_client_retry=False)
            try:
                client = AsyncClient(url, service_role_key, options)
            except SupabaseException as exc:
                raise ConfigError("SUPABASE_URL must be an http:// or https:// URL and "
                                  "SUPABASE_SERVICE_ROLE_KEY must be set") from exc
        self._client = client

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<url and key hidden>)"

    async def migrate(self) -> list[str]:
        """PostgREST cannot run DDL: apply migrations/postgres over the project's database connection
        (`apply_migrations`) or in its SQL editor. This only checks that the tables are served, so that a
        missing schema or a bad key shows at start (`GovernanceUnavailable`) rather than at the first event.
        Returns the versions applied: none."""
        try:
            await self._client.table("agents").select("id").limit(1).execute()
        except (APIError, httpx.HTTPError) as exc:
            raise _unavailable(exc) from exc
        return []

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def get_or_create_agent(self, name: str, agent_type: str = "ops_agent") -> AgentRecord:
        if agent := await self.get_agent(name):
            return agent
        row = {"name": name, "agent_type": agent_type, "reputation_score": INITIAL_SCORE}
        try:
            response = await (
                self._client.table("agents").upsert(row, on_conflict="name", ignore_duplicates=True).execute()
            )
        except APIError as exc:
            if exc.code == _CHECK_VIOLATION:
                raise ValueError(f"agent_type {agent_type!r} is refused by the agents table's CHECK "
                                 "constraint") from exc
            raise _unavailable(exc) from exc
        except httpx.HTTPError as exc:
            raise _unavailable(exc) from exc
        if response.data:
            return _record(response.data[0])
        # Another process created it between our read and our insert (the insert was ignored).
        agent = await self.get_agent(name)
        if agent is None:
            raise GovernanceUnavailable(f"reputation store unavailable: agent {name!r} neither created nor found")
        return agent

    async def get_agent(self, name: str) -> AgentRecord | None:
        try:
            response = await self._client.table("agents").select("*").eq("name", name).execute()
        except (APIError, httpx.HTTPError) as exc:
            raise _unavailable(exc) from exc
        return _record(response.data[0]) if response.data else None

    async def record_event(self, agent_id: str, event_type: EventType, reason: str) -> AgentRecord:
        params = {"agent_id": agent_id, "event_type": event_type, "delta": REPUTATION_DELTAS[event_type],
                  "reason": reason}
        try:
            response = await self._client.rpc("record_reputation_event", params).execute()
        except APIError as exc:
            if exc.code in _NOT_FOUND or exc.code == _INVALID_TEXT:
                raise LookupError(f"no agent {agent_id}") from exc
            raise _unavailable(exc) from exc
        except httpx.HTTPError as exc:
            raise _unavailable(exc) from exc
        # A function returning one composite row answers with a JSON object; accept a one-row array too.
        row = response.data[0] if isinstance(response.data, list) and response.data else response.data
        if not isinstance(row, dict) or row.get("id") is None:
            raise GovernanceUnavailable("reputation store unavailable: Supabase answered the score update "
                                        "without the agent row")
        return _record(row)

    async def events(self, agent_id: str, limit: int = 50) -> list[dict]:
        try:
            response = await (
                self._client.table("reputation_events").select(_EVENT_COLUMNS).eq("agent_id", agent_id)
                .order("id", desc=True).limit(limit).execute()
            )
        except APIError as exc:
            if exc.code == _INVALID_TEXT:
                return []  # not a uuid: no agent has it
            raise _unavailable(exc) from exc
        except httpx.HTTPError as exc:
            raise _unavailable(exc) from exc
        return [
            {"event_type": row["event_type"], "delta": row["delta"], "score_after": row["score_after"],
             "reason": row["reason"], "created_at": _epoch(row["created_at"])}
            for row in response.data
        ]
