"""Every Redis key name of governance, in one place. Nothing else spells a governance key.

With the default prefix "ops:" the schema is:

    ops:governance:usage:{agent}:tokens        hash   bucket start (epoch minute) -> tokens settled or booked
    ops:governance:usage:{agent}:usd_micros    hash   bucket start (epoch minute) -> micro-USD settled or booked
    ops:governance:leases:{agent}              zset   reservation id, scored by its lease end (epoch ms)
    ops:governance:reservation:{id}            hash   agent, tokens, usd_micros, created_ms, lease_until_ms, state
    ops:governance:reservation_seq             string INCR counter handing out reservation ids
    ops:governance:warned:{agent}              hash   "{window}:{metric}" -> highest warning threshold (%) raised
    ops:governance:limits:{agent}              hash   the limits of the agent's latest reserve (for settle/record)
    ops:governance:events                      stream budget warnings (agent, window, metric, threshold_pct, ...)

The Lua scripts receive the per-agent keys as KEYS; only `reservation:{id}` is built inside a script (the
id is made there), from `reservation_prefix`. So the schema targets a standalone Redis, not Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_PREFIX", "GovernanceKeys"]

DEFAULT_PREFIX = "ops:"


@dataclass(frozen=True, slots=True)
class GovernanceKeys:
    prefix: str = DEFAULT_PREFIX

    @property
    def base(self) -> str:
        return f"{self.prefix}governance:"

    def usage_tokens(self, agent_id: str) -> str:
        return f"{self.base}usage:{agent_id}:tokens"

    def usage_usd_micros(self, agent_id: str) -> str:
        return f"{self.base}usage:{agent_id}:usd_micros"

    def leases(self, agent_id: str) -> str:
        return f"{self.base}leases:{agent_id}"

    @property
    def reservation_prefix(self) -> str:
        return f"{self.base}reservation:"

    def reservation(self, reservation_id: int) -> str:
        return f"{self.reservation_prefix}{reservation_id}"

    @property
    def reservation_seq(self) -> str:
        return f"{self.base}reservation_seq"

    def warned(self, agent_id: str) -> str:
        return f"{self.base}warned:{agent_id}"

    def limits(self, agent_id: str) -> str:
        return f"{self.base}limits:{agent_id}"

    @property
    def events(self) -> str:
        return f"{self.base}events"

    def agent_keys(self, agent_id: str) -> list[str]:
        """The KEYS every ledger script takes, in this order (the scripts index them by position)."""
        return [
            self.usage_tokens(agent_id),
            self.usage_usd_micros(agent_id),
            self.leases(agent_id),
            self.warned(agent_id),
            self.limits(agent_id),
            self.events,
            self.reservation_seq,
        ]
