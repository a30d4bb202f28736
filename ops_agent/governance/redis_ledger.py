"""`RedisCostLedger`: the `CostLedger` shared by every worker on every machine, on one Redis.

Semantics follow `SqliteCostLedger`: per agent, tokens and integer micro-USD over a rolling hour and a
rolling day; `reserve` holds the worst case of one LLM request and refuses it with `BudgetExceeded` when
usage + outstanding reservations + the worst case would pass a limit; `settle` replaces the reservation
by the real usage; `record` adds usage directly. Every operation is one Lua script, so concurrent reserves
from any number of processes can never overspend a budget together.

Where it differs, on purpose:

- Usage is kept in buckets (`bucket_s`, a minute by default). A bucket counts in a window while any part
  of it is inside the window, so spend leaves a window up to one bucket later than in SQLite (never earlier:
  the error is on the safe side).
- **Lease expiry books the worst case.** A reservation not settled within `lease_s` (its process crashed or
  hung) is booked as spent at its worst case and stops being "held". SQLite forgets such a reservation; we
  do not, because a process that died after the LLM replied really spent the money, and forgetting it
  could overspend. If the settle arrives late (the process was only slow), the booking is corrected to
  the real usage, for up to a day after the lease ended.
- Without an injected `clock`, time is the Redis server's (`TIME`), so workers with skewed clocks agree on
  the windows. Tests inject a clock to move through windows without sleeping.
- The model named in `settle`/`record` is not stored (the budget does not depend on it).

Warnings: when a reserve, settle or record takes any window's usage (settled + held) to 80% or 95% of its
limit, one event per threshold crossed is added to the `governance:events` stream; it is raised again only
after usage fell below the threshold and crosses it anew. `settle` and `record` do not receive limits, so
they warn against the limits of the agent's latest `reserve` (else the constructor's `limits`).

Redis failures surface as `GovernanceUnavailable` (connection lost, timeout, server loading) or
`UpstreamError("redis", ...)`, with no URL or password in the message.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis.asyncio
import redis.exceptions

from ops_agent.errors import BudgetExceeded, GovernanceUnavailable, UpstreamError
from ops_agent.governance.ledger import (
    DAY_S,
    HOUR_S,
    LEASE_S,
    BudgetLimits,
    BudgetUsage,
)
from ops_agent.governance.redis_keys import DEFAULT_PREFIX, GovernanceKeys
from ops_agent.stores.redis_text import as_fields, as_text

__all__ = ["WARNING_THRESHOLDS_PCT", "BudgetWarning", "RedisCostLedger"]

log = logging.getLogger(__name__)

WARNING_THRESHOLDS_PCT = (80, 95)
BUCKET_S = 60.0
EVENTS_MAXLEN = 10_000

# KEYS: see GovernanceKeys.agent_keys. ARGV: op, now_ms (-1: the server's clock), bucket_ms, hour_ms, day_ms,
# reservation key prefix, agent id, 4 fallback limits (-1: none), events maxlen, then the op's own arguments.
_LUA = """
local K_TOKENS, K_MICROS, K_LEASES, K_WARNED, K_LIMITS, K_EVENTS, K_SEQ =
    KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local op = ARGV[1]
local now_ms = tonumber(ARGV[2])
if now_ms < 0 then
    local t = redis.call('TIME')
    now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local bucket_ms, hour_ms, day_ms = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local res_prefix, agent = ARGV[6], ARGV[7]
local fallback = {tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])}
local maxlen = ARGV[12]
local THRESHOLDS = {__THRESHOLDS__}

local function int(n) return string.format('%d', n) end
local function bucket_of(ms) return math.floor(ms / bucket_ms) end
-- a bucket counts while any part of it lies inside (now - window, now]
local function in_window(b, window_ms) return (b + 1) * bucket_ms > now_ms - window_ms end

local function book(b, tokens, micros)
    redis.call('HINCRBY', K_TOKENS, int(b), int(tokens))
    redis.call('HINCRBY', K_MICROS, int(b), int(micros))
end

-- add (tokens, micros) spent in bucket b to usage u = {hour_tokens, hour_micros, day_tokens, day_micros}
local function add(u, b, tokens, micros)
    if in_window(b, day_ms) then
        u[3], u[4] = u[3] + tokens, u[4] + micros
        if in_window(b, hour_ms) then u[1], u[2] = u[1] + tokens, u[2] + micros end
    end
end

-- book every held reservation whose lease ended at its worst case
local function reap()
    local ended = redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', int(now_ms))
    for _, id in ipairs(ended) do
        local key = res_prefix .. id
        local r = redis.call('HMGET', key, 'tokens', 'usd_micros', 'created_ms', 'state')
        if r[1] and r[4] == 'held' then
            book(bucket_of(tonumber(r[3])), tonumber(r[1]), tonumber(r[2]))
            redis.call('HSET', key, 'state', 'expired')
        end
        redis.call('ZREM', K_LEASES, id)
    end
end

-- settled and booked usage plus held reservations; drops buckets that left the day
local function totals()
    local u = {0, 0, 0, 0}
    local stale = {}
    for _, k in ipairs({K_TOKENS, K_MICROS}) do
        local h = redis.call('HGETALL', k)
        for i = 1, #h, 2 do
            local b, v = tonumber(h[i]), tonumber(h[i + 1])
            if not in_window(b, day_ms) then
                stale[#stale + 1] = h[i]
            elseif k == K_TOKENS then
                add(u, b, v, 0)
            else
                add(u, b, 0, v)
            end
        end
    end
    if #stale > 0 then
        redis.call('HDEL', K_TOKENS, unpack(stale))
        redis.call('HDEL', K_MICROS, unpack(stale))
    end
    local held = redis.call('ZRANGEBYSCORE', K_LEASES, '(' .. int(now_ms), '+inf')
    for _, id in ipairs(held) do
        local r = redis.call('HMGET', res_prefix .. id, 'tokens', 'usd_micros', 'created_ms')
        if r[1] then add(u, bucket_of(tonumber(r[3])), tonumber(r[1]), tonumber(r[2])) end
    end
    return u
end

local function over(spent, more, limit)
    return spent + more > limit or (more == 0 and spent >= limit)
end

local function stored_limits()
    local l = redis.call('HMGET', K_LIMITS, 'hourly_tokens', 'daily_tokens', 'hourly_usd_micros', 'daily_usd_micros')
    if l[1] then return {tonumber(l[1]), tonumber(l[2]), tonumber(l[3]), tonumber(l[4])} end
    if fallback[1] >= 0 then return fallback end
    return nil
end

local function level(used, limit)
    local l = 0
    if limit and limit > 0 then
        for _, t in ipairs(THRESHOLDS) do
            if used * 100 >= limit * t then l = t end
        end
    end
    return l
end

-- window, metric, index into usage, index into limits
local WINDOWS = {{'hour', 'tokens', 1, 1}, {'hour', 'usd_micros', 2, 3}, {'day', 'tokens', 3, 2}, {'day', 'usd_micros', 4, 4}}

local function warn(before, after, lim)
    if not lim then return end
    for _, w in ipairs(WINDOWS) do
        local field = w[1] .. ':' .. w[2]
        local limit = lim[w[4]]
        local was = tonumber(redis.call('HGET', K_WARNED, field) or '0')
        local armed = math.min(was, level(before[w[3]], limit))
        local now_level = level(after[w[3]], limit)
        for _, t in ipairs(THRESHOLDS) do
            if t > armed and t <= now_level then
                redis.call('XADD', K_EVENTS, 'MAXLEN', '~', maxlen, '*', 'agent_id', agent, 'window', w[1],
                    'metric', w[2], 'threshold_pct', t, 'used', int(after[w[3]]), 'limit', int(limit),
                    'at_ms', int(now_ms))
            end
        end
        if now_level ~= was then redis.call('HSET', K_WARNED, field, now_level) end
    end
end

local function moved(u, b, tokens, micros)
    local after = {u[1], u[2], u[3], u[4]}
    add(after, b, tokens, micros)
    return after
end

reap()
if op == 'usage' then
    return totals()
elseif op == 'reserve' then
    local tokens, micros = tonumber(ARGV[13]), tonumber(ARGV[14])
    local lim = {tonumber(ARGV[15]), tonumber(ARGV[16]), tonumber(ARGV[17]), tonumber(ARGV[18])}
    local lease_ms = tonumber(ARGV[19])
    redis.call('HSET', K_LIMITS, 'hourly_tokens', int(lim[1]), 'daily_tokens', int(lim[2]),
        'hourly_usd_micros', int(lim[3]), 'daily_usd_micros', int(lim[4]))
    local u = totals()
    if over(u[1], tokens, lim[1]) or over(u[3], tokens, lim[2]) or over(u[2], micros, lim[3])
        or over(u[4], micros, lim[4]) then
        return {0, u[1], u[2], u[3], u[4]}
    end
    local id = redis.call('INCR', K_SEQ)
    local key = res_prefix .. id
    redis.call('HSET', key, 'agent_id', agent, 'tokens', int(tokens), 'usd_micros', int(micros),
        'created_ms', int(now_ms), 'lease_until_ms', int(now_ms + lease_ms), 'state', 'held')
    redis.call('PEXPIRE', key, int(lease_ms + day_ms))
    redis.call('ZADD', K_LEASES, int(now_ms + lease_ms), id)
    warn(u, moved(u, bucket_of(now_ms), tokens, micros), lim)
    return {id, u[1], u[2], u[3], u[4]}
elseif op == 'settle' then
    local id, tokens, micros = ARGV[13], tonumber(ARGV[14]), tonumber(ARGV[15])
    local key = res_prefix .. id
    local r = redis.call('HMGET', key, 'agent_id', 'tokens', 'usd_micros', 'created_ms', 'state')
    if r[1] ~= agent then return {-1} end
    local u = totals()
    local b = bucket_of(tonumber(r[4]))
    if r[5] == 'held' or in_window(b, day_ms) then
        -- held: its worst case leaves the held set; expired: its booked worst case is corrected
        local dt, dm = tokens - tonumber(r[2]), micros - tonumber(r[3])
        if r[5] == 'held' then
            redis.call('ZREM', K_LEASES, id)
            book(b, tokens, micros)
        else
            book(b, dt, dm)
        end
        warn(u, moved(u, b, dt, dm), stored_limits())
    end
    redis.call('DEL', key)
    return {1}
elseif op == 'record' then
    local tokens, micros = tonumber(ARGV[13]), tonumber(ARGV[14])
    local u = totals()
    local b = bucket_of(now_ms)
    book(b, tokens, micros)
    warn(u, moved(u, b, tokens, micros), stored_limits())
    return {1}
end
return redis.error_reply('unknown ledger op ' .. tostring(op))
""".replace("__THRESHOLDS__", ", ".join(str(t) for t in WARNING_THRESHOLDS_PCT))


@dataclass(frozen=True, slots=True)
class BudgetWarning:
    """One budget warning event: `window` is "hour" or "day", `metric` "tokens" or "usd_micros"."""

    id: str
    agent_id: str
    window: str
    metric: str
    threshold_pct: int
    used: int
    limit: int
    at_ms: int


class RedisCostLedger:
    def __init__(
        self,
        redis_client: redis.asyncio.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        lease_s: float = LEASE_S,
        bucket_s: float = BUCKET_S,
        limits: BudgetLimits | None = None,
        clock: Callable[[], float] | None = None,
        events_maxlen: int = EVENTS_MAXLEN,
    ) -> None:
        """`limits` are only the fallback for warnings from settle/record before any reserve; `clock` returns
        epoch seconds (None: the Redis server's clock)."""
        self.redis = redis_client
        self.keys = GovernanceKeys(prefix)
        self.lease_ms = _ms(lease_s)
        self.bucket_ms = _ms(bucket_s)
        self.limits = limits
        self.clock = clock
        self.events_maxlen = events_maxlen
        self._script = redis_client.register_script(_LUA)

    async def usage(self, agent_id: str) -> BudgetUsage:
        result = await self._run("usage", agent_id)
        return BudgetUsage(*(int(v) for v in result))

    async def reserve(self, agent_id: str, tokens: int, micros: int, limits: BudgetLimits) -> int:
        result = await self._run(
            "reserve",
            agent_id,
            tokens,
            micros,
            limits.hourly_tokens,
            limits.daily_tokens,
            limits.hourly_usd_micros,
            limits.daily_usd_micros,
            self.lease_ms,
        )
        reservation_id, used = int(result[0]), BudgetUsage(*(int(v) for v in result[1:]))
        if reservation_id == 0:
            limits.check(used, tokens, micros)  # raises with the same text as SqliteCostLedger
            raise BudgetExceeded("budget exceeded")  # unreachable unless Lua and Python disagree
        return reservation_id

    async def settle(self, reservation_id: int, tokens: int, micros: int, model: str | None = None) -> None:
        with _redis_errors():
            agent = await self.redis.hget(self.keys.reservation(reservation_id), "agent_id")
        if agent is None:
            log.warning("settle of reservation %s ignored: unknown, already settled or long expired", reservation_id)
            return
        result = await self._run("settle", as_text(agent), str(reservation_id), tokens, micros)
        if int(result[0]) != 1:
            log.warning("settle of reservation %s ignored: settled concurrently", reservation_id)

    async def record(self, agent_id: str, tokens: int, micros: int, model: str | None = None) -> None:
        await self._run("record", agent_id, tokens, micros)

    async def events(self, since_id: str = "0-0", count: int = 100) -> list[BudgetWarning]:
        """Budget warnings after `since_id` (exclusive), oldest first; pass the last id back to page on."""
        with _redis_errors():
            entries = await self.redis.xrange(self.keys.events, min=f"({since_id}", max="+", count=count)
        warnings = []
        for entry_id, raw in entries:
            values = as_fields(raw)
            warnings.append(
                BudgetWarning(
                    id=as_text(entry_id),
                    agent_id=values["agent_id"],
                    window=values["window"],
                    metric=values["metric"],
                    threshold_pct=int(values["threshold_pct"]),
                    used=int(values["used"]),
                    limit=int(values["limit"]),
                    at_ms=int(values["at_ms"]),
                )
            )
        return warnings

    async def _run(self, op: str, agent_id: str, *arguments: int | str) -> list:
        fallback = self.limits
        fallback_args = (
            [fallback.hourly_tokens, fallback.daily_tokens, fallback.hourly_usd_micros, fallback.daily_usd_micros]
            if fallback is not None
            else [-1, -1, -1, -1]
        )
        now_ms = _ms(self.clock()) if self.clock is not None else -1
        args = [op, now_ms, self.bucket_ms, _ms(HOUR_S), _ms(DAY_S), self.keys.reservation_prefix, agent_id]
        args += [*fallback_args, self.events_maxlen, *arguments]
        with _redis_errors():
            return await self._script(keys=self.keys.agent_keys(agent_id), args=args)


def _ms(seconds: float) -> int:
    return math.floor(seconds * 1000)



@contextmanager
def _redis_errors() -> Iterator[None]:
    """The seam: redis-py's exceptions become ours, naming the failure but never the URL or password."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        what = "timed out" if isinstance(exc, redis.exceptions.TimeoutError) else "unreachable"
        raise GovernanceUnavailable(f"governance unavailable (redis {what}): the cost ledger cannot be used") from exc
    except redis.exceptions.RedisError as exc:
        raise UpstreamError("redis", f"cost ledger command failed ({type(exc).__name__})") from exc
