"""The answer to a metric query, whichever language asked it (ops-agent's own, or PromQL)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

__all__ = ["MetricValue"]


class MetricValue(BaseModel):
    query: str = Field(description="The query in canonical form.")
    value: float | bool | None = Field(description="The result; null when there is no data.")
    no_data: bool = Field(description="True when the series had no points in the window (not the same as 0).")
    series: list[str] = Field(description="The series the query reads.")
    evaluated_at: datetime
