"""Metric queries answered by a Prometheus server (the `MetricsSource` seam's real backend), in PromQL.

A small async client for Prometheus's HTTP API (https://prometheus.io/docs/prometheus/latest/querying/api/):
instant queries, range queries and the list of metric names, plus `prometheus_value`, which answers in the
same `MetricValue` shape as our own query language.

Errors: a query Prometheus cannot parse or run (`bad_data`, HTTP 400; `execution`, HTTP 422, e.g.
many-to-many matching) is the caller's to fix, so it is a `PromQLError` (a `ToolRetry`) carrying Prometheus's
own explanation, positions included. Everything else (unreachable, 5xx, not a Prometheus) is an
`UpstreamError("prometheus", ...)`; timeouts, ours or Prometheus's, are `UpstreamTimeout`. Messages name
the endpoint and host, never the bearer token or credentials in the URL.

No retries here: queries are cheap reads and their callers (tools, the alert evaluator) run again anyway.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime
from typing import Any, Literal

import httpx2
from pydantic import BaseModel, Field

from ops_agent.errors import ToolRetry, UpstreamError, UpstreamTimeout
from ops_agent.tools.monitoring.metric_value import MetricValue

__all__ = [
    "PromQLError",
    "PromResult",
    "PromSample",
    "PromSeries",
    "PrometheusClient",
    "prometheus_value",
    "promql_series",
]

SERVICE = "prometheus"


class PromQLError(ToolRetry):
    """Prometheus refused the query; the message is its own (e.g. `1:19: parse error: unexpected <by> ...`)."""

    def __init__(self, query: str, error_type: str, explanation: str) -> None:
        self.query = query
        self.error_type = error_type
        self.explanation = explanation
        super().__init__(f"PromQL {error_type}: {explanation}")


class PromSample(BaseModel):
    labels: dict[str, str]
    value: float | None = Field(description="Null when Prometheus answered NaN or ±Inf.")


class PromSeries(BaseModel):
    labels: dict[str, str]
    points: list[tuple[float, float | None]] = Field(description="(epoch seconds, value); null for NaN or ±Inf.")


class PromResult(BaseModel):
    query: str
    result_type: Literal["vector", "scalar", "matrix", "string"]
    value: float | None = Field(
        description="A scalar, or a vector's only sample; null for no data, several samples or a non-finite value."
    )
    no_data: bool = Field(description="True when there is nothing to report: an empty result, NaN, ±Inf, a string.")
    samples: list[PromSample] = Field(default_factory=list, description="Every sample of a vector result.")
    series: list[PromSeries] = Field(default_factory=list, description="Every series of a matrix result (x[5m]).")
    evaluated_at: datetime
    warnings: list[str] = Field(default_factory=list)


class PrometheusClient:
    def __init__(
        self, http: httpx2.AsyncClient, base_url: str, *, timeout_s: float = 10, bearer_token: str | None = None
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._token = bearer_token
        url = httpx2.URL(self.base_url)
        self._where = f"{url.host}:{url.port}" if url.port else url.host  # for messages: no userinfo, no path

    async def query(self, promql: str, at: float | None = None) -> PromResult:
        """An instant query, at `at` (epoch seconds) or, by default, at Prometheus's own now."""
        form = {"query": promql, **self._timeout_param()}
        if at is not None:  # otherwise Prometheus uses its clock, so clock skew between hosts does not matter
            form["time"] = _number(at)
        data, warnings = await self._call("POST", "/api/v1/query", promql, form=form)
        try:
            return _result(promql, data, warnings, at)
        except (AttributeError, KeyError, IndexError, TypeError, ValueError):
            raise self._unexpected("/api/v1/query") from None

    async def query_range(self, promql: str, start: float, end: float, step_s: float) -> list[PromSeries]:
        form = {"query": promql, "start": _number(start), "end": _number(end), "step": _number(step_s)}
        data, _ = await self._call("POST", "/api/v1/query_range", promql, form={**form, **self._timeout_param()})
        try:
            if data["resultType"] != "matrix":
                raise ValueError(data["resultType"])
            return [_series(item) for item in data["result"]]
        except (KeyError, IndexError, TypeError, ValueError):
            raise self._unexpected("/api/v1/query_range") from None

    async def series_names(self) -> list[str]:
        """Every metric name Prometheus holds (`/api/v1/label/__name__/values`), sorted."""
        data, _ = await self._call("GET", "/api/v1/label/__name__/values", None)
        if not isinstance(data, list):
            raise self._unexpected("/api/v1/label/__name__/values")
        return sorted(str(name) for name in data)

    # -- transport -------------------------------------------------------------------------------------

    def _timeout_param(self) -> dict[str, str]:
        # Prometheus stops evaluating at the same deadline, and then says so ("timeout") before we give up.
        return {"timeout": _number(max(self.timeout_s, 0.001))}

    async def _call(
        self, method: str, path: str, promql: str | None, *, form: dict[str, str] | None = None
    ) -> tuple[Any, list[str]]:
        """Prometheus's `data` and `warnings`, or the error its envelope (or its absence) calls for."""
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        what = f"{method} {path} on {self._where}"
        try:
            response = await self.http.request(
                method, self.base_url + path, data=form, headers=headers, timeout=self.timeout_s + 1
            )
        except httpx2.TimeoutException:
            raise UpstreamTimeout(SERVICE, f"{what} timed out after {self.timeout_s:g} s") from None
        except httpx2.ConnectError:
            raise UpstreamError(SERVICE, f"cannot connect: {what}", retryable=True) from None
        except httpx2.HTTPError as exc:
            raise UpstreamError(SERVICE, f"{what} failed: {type(exc).__name__}", retryable=True) from None
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("status") not in ("success", "error"):
            hint = "; is the URL a Prometheus server (without /api/v1)?" if status < 500 else ""
            raise UpstreamError(
                SERVICE, f"{what}: HTTP {status} without Prometheus's JSON answer{hint}",
                status_code=status, retryable=status >= 500,
            )
        if body["status"] == "error":
            error_type = str(body.get("errorType") or "unknown")
            explanation = _clipped(str(body.get("error") or "no explanation"))
            if error_type in ("bad_data", "execution") and promql is not None:
                raise PromQLError(promql, error_type, explanation)
            if error_type == "timeout":
                raise UpstreamTimeout(SERVICE, f"{what}: {explanation}")
            raise UpstreamError(
                SERVICE, f"{what}: HTTP {status} {error_type}: {explanation}",
                status_code=status, retryable=status >= 500,
            )
        return body.get("data"), [str(w) for w in body.get("warnings") or []]

    def _unexpected(self, path: str) -> UpstreamError:
        return UpstreamError(SERVICE, f"{path} on {self._where}: an answer in an unexpected shape")


# -- parsing the answers -------------------------------------------------------------------------------


def _number(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _clipped(text: str, limit: int = 2000) -> str:
    """Prometheus's explanations can list every clashing series (many-to-many matching)."""
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more characters)"


def _float(text: Any) -> float | None:
    """Prometheus sends sample values as strings ("1", "NaN", "+Inf"); non-finite ones are no data."""
    value = float(text)
    return value if math.isfinite(value) else None


def _series(item: dict[str, Any]) -> PromSeries:
    points = [(float(ts), _float(value)) for ts, value in item.get("values") or []]
    return PromSeries(labels=item.get("metric") or {}, points=points)


def _result(promql: str, data: Any, warnings: list[str], at: float | None) -> PromResult:
    result_type, result = data.get("resultType"), data.get("result")
    stamp = at if at is not None else time.time()  # an empty result carries no timestamp of its own
    samples: list[PromSample] = []
    series: list[PromSeries] = []
    value: float | None = None
    no_data = True
    if result_type == "vector":
        samples = [PromSample(labels=item.get("metric") or {}, value=_float(item["value"][1])) for item in result]
        if result:
            stamp = float(result[0]["value"][0])
        if len(samples) == 1:
            value = samples[0].value
            no_data = value is None
        else:
            no_data = not samples
    elif result_type == "scalar":
        stamp, value = float(result[0]), _float(result[1])
        no_data = value is None
    elif result_type == "matrix":
        series = [_series(item) for item in result]
        no_data = not series
    elif result_type == "string":
        stamp = float(result[0])
    else:
        raise ValueError(f"unknown resultType {result_type!r}")
    return PromResult(
        query=promql,
        result_type=result_type,
        value=value,
        no_data=no_data,
        samples=samples,
        series=series,
        evaluated_at=datetime.fromtimestamp(stamp, UTC),
        warnings=warnings,
    )


# -- the MetricValue answer ------------------------------------------------------------------------------


async def prometheus_value(client: PrometheusClient, promql: str) -> MetricValue:
    """The query's single value now, in the shape our own query language answers with.

    PromQL differs from ours in two ways worth knowing: a selector matching several series is several
    values, not their sum (so this asks the caller to aggregate rather than guess), and a comparison
    filters (`x > 5` is empty when false) unless written with `bool` (`x > bool 5` is 0 or 1)."""
    promql = promql.strip()
    result = await client.query(promql)
    if result.result_type == "matrix":
        raise ToolRetry(
            f"{promql!r} is a range vector, which has no single value; wrap it in a function such as "
            "rate(x[5m]), avg_over_time(x[5m]) or max_over_time(x[5m])"
        )
    if len(result.samples) > 1:
        shown = ", ".join(_labels(sample.labels) for sample in result.samples[:5])
        more = f" and {len(result.samples) - 5} more" if len(result.samples) > 5 else ""
        raise ToolRetry(
            f"{promql!r} returns {len(result.samples)} series ({shown}{more}); a metric needs one value: "
            "aggregate them, as in sum(...), avg(...) or max(...), or narrow the selector with labels"
        )
    return MetricValue(
        query=promql,
        value=result.value,
        no_data=result.no_data,
        series=promql_series(promql),
        evaluated_at=result.evaluated_at,
    )


def _labels(labels: dict[str, str]) -> str:
    name = labels.get("__name__", "")
    inner = ", ".join(f'{key}="{value}"' for key, value in sorted(labels.items()) if key != "__name__")
    return f"{name}{{{inner}}}"


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r"""__name__\s*=\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')""")
_COMMENT = re.compile(r"#[^\n]*")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE)
_INSIDE = re.compile(r"\{[^{}]*\}|\[[^\[\]]*\]")
# A whole identifier not glued to a number (5m, 1e3, 0x1f) and not followed by "(" (a function call).
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right",
    "inf", "nan",
}


def promql_series(promql: str) -> list[str]:
    """Metric names a PromQL expression reads, best effort and without a PromQL parser (Prometheus 2.42
    has no parse endpoint): names in `{__name__="..."}`, then bare identifiers outside strings, label
    matchers, windows and by/on(...) lists that are not keywords or function calls."""
    names = [a or b for a, b in _NAME_MATCHER.findall(promql)]
    text = _COMMENT.sub(" ", _STRINGS.sub(" ", promql))
    text = _INSIDE.sub(" ", _GROUPING.sub(" ", text))
    names += [name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS]
    return list(dict.fromkeys(names))
