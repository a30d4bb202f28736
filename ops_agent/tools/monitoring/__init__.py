"""Monitoring: system metrics and service health, declared for the registry."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from ops_agent.registry import Intent, ToolContext, ToolInput, ToolSpec, mentioned
from ops_agent.tools.monitoring.custom import (
    CustomMetric,
    CustomMetrics,
    PerformanceReport,
    performance,
)
from ops_agent.tools.monitoring.health import HealthChecker, ServiceHealth
from ops_agent.tools.monitoring.metric_value import MetricValue
from ops_agent.tools.monitoring.monitoring_tool import HealthReport, MonitoringTool
from ops_agent.tools.monitoring.sampler import DiskUsage, ProcessUsage, SystemMetrics, SystemSampler

__all__ = [
    "CustomMetrics",
    "DiskUsage",
    "HealthChecker",
    "HealthReport",
    "MonitoringTool",
    "ProcessUsage",
    "ServiceHealth",
    "SystemMetrics",
    "SystemSampler",
    "monitoring_specs",
]


class GetSystemMetricsInput(ToolInput):
    detail: bool = Field(
        False, description="Also list CPU per core and the top processes by CPU and by memory (a longer answer)."
    )


class CheckServiceHealthInput(ToolInput):
    service: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Name of a service from the config's `services:`; omit to check every configured service.",
    )


# A service named before "service/api/app" or after "is the", e.g. "health of the billing service".
_NAMED_SERVICE = re.compile(
    r"\b(?:of|for|on|check|is|ping)\s+(?:the\s+)?([a-z0-9][\w.-]*)\s+(?:service|api|app|endpoint|server)\b"
    r"|\bis\s+(?:the\s+)?([a-z0-9][\w.-]*)\s+(?:up|down|healthy|alive|reachable|responding)\b",
    re.I,
)
_ALL_SERVICES = re.compile(r"\b(all|every|each|configured|our|the)\s+(services|apis|apps|endpoints)\b", re.I)
_NOT_NAMES = {"the", "a", "an", "all", "every", "each", "our", "my", "this", "that", "configured", "it"}


def _health_arguments(clause: str, facts: Mapping[str, Any]) -> list[dict[str, Any]] | str:
    services: list[str] = list(facts.get("services", ()))
    named = mentioned(clause, services)
    if named:
        return [{"service": name} for name in named]
    if _ALL_SERVICES.search(clause):
        return [{}]
    match = _NAMED_SERVICE.search(clause)
    candidate = next((group for group in (match.groups() if match else ()) if group), None)
    if candidate and candidate.lower() not in _NOT_NAMES:
        known = ", ".join(services) or "none are configured"
        return f"no configured service is called {candidate!r} (configured services: {known})"
    return [{}]


class RecordMetricInput(ToolInput):
    name: str = Field(
        min_length=1, max_length=200, pattern=r"^[a-zA-Z_][a-zA-Z0-9_:.]*$",
        description="Series name, e.g. api_response_time_ms.",
    )
    value: float = Field(allow_inf_nan=False, description="The measured value.")
    labels: dict[str, str] = Field(
        default_factory=dict, max_length=16, description='Labels, e.g. {"service": "api", "route": "/login"}.'
    )
    ts: float | None = Field(None, gt=0, description="Epoch seconds; default now.")


class Recorded(BaseModel):
    name: str
    labels: dict[str, str]
    value: float


class AddCustomMetricInput(ToolInput):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[a-zA-Z_][a-zA-Z0-9_.:-]*$", description="Metric name.")
    query: str = Field(
        min_length=1, max_length=2000,
        description='Query over stored series, e.g. avg(response_time_ms{service="api"}[5m]) or errors / requests * 100.',
    )
    description: str | None = Field(None, max_length=500)
    language: Literal["ops", "promql"] = Field(
        "ops", description="ops: ops-agent's query language over its series; promql: the configured Prometheus."
    )


class CustomMetricNameInput(ToolInput):
    name: str | None = Field(None, min_length=1, max_length=100, description="One metric; omit for all.")


class QueryMetricsInput(ToolInput):
    query: str = Field(min_length=1, max_length=2000, description="Query over stored series; see MONITORING_GUIDE.")
    language: Literal["ops", "promql"] = Field(
        "ops", description="ops: ops-agent's query language over its series; promql: the configured Prometheus."
    )


class PerformanceInput(ToolInput):
    service: str | None = Field(None, min_length=1, max_length=64, description="One service; omit for all.")
    window_s: int = Field(300, ge=10, le=86400, description="Seconds back from now.")


class CustomMetricList(BaseModel):
    metrics: list[CustomMetric]


# "add a custom metric api_latency as avg(response_time)", "define metric x = errors / requests * 100"
_DEFINE_METRIC = re.compile(
    r"(?i)\b(?:add|define|create)\s+(?:a\s+)?(?:custom\s+)?metric\s+([a-zA-Z_][\w.:-]*)\s+(?:as|=|:)\s+(.+)$"
)
# "query avg(system_cpu_percent[5m])", "what is p95(response_time_ms[1h])"
# A name (a run of [\w.:] with a letter) then a bracket. Each run is tried once from its start, up to its first
# letter: `\S*[a-z_][\w.:]*` backtracked over every split of a long word (quadratic).
_QUERY = re.compile(
    r"(?i)\b(?:query|evaluate|what\s+is|what's)\s+(\S*?(?<![\w.:])(?>[\w.:]*?[a-z_])[\w.:]*+\s*+(?:\(|\{|\[).*)$"
)


def _define_metric_arguments(clause: str, facts: Mapping[str, Any]) -> list[dict[str, Any]] | str:
    match = _DEFINE_METRIC.search(clause)
    return [{"name": match.group(1), "query": match.group(2).strip()}] if match else "say: add metric NAME as QUERY"


def _query_arguments(clause: str, facts: Mapping[str, Any]) -> list[dict[str, Any]] | str:
    match = _QUERY.search(clause)
    return [{"query": match.group(1).strip().rstrip("?")}] if match else "say: query QUERY"


def _performance_line(report: PerformanceReport) -> str:
    if not report.services:
        return report.note or "no data"
    return "; ".join(
        f"{p.service} p50 {p.p50_ms} ms, p95 {p.p95_ms} ms, p99 {p.p99_ms} ms"
        + (f", {p.throughput_per_s}/s" if p.throughput_per_s is not None else "")
        for p in report.services
    )


def _performance_arguments(clause: str, facts: Mapping[str, Any]) -> list[dict[str, Any]] | str:
    return [{"service": name} for name in mentioned(clause, facts.get("services", ()))] or [{}]


def _metrics_line(m: SystemMetrics) -> str:
    disk = m.disks[0].percent if m.disks else 0.0
    return (
        f"CPU {m.cpu_percent:.1f}% of {m.cpu_count} cores, load {m.load_average[0]:.2f}, "
        f"memory {m.memory_percent:.1f}%, swap {m.swap_percent:.1f}%, disk / {disk:.1f}%, "
        f"{m.process_count} processes"
    )


def _health_line(report: HealthReport) -> str:
    if not report.services:
        return report.note or "no services checked"
    parts = [
        f"{s.name} {s.status}" + (f" ({s.latency_ms:.0f} ms)" if s.status == "up" else f" ({s.error})")
        for s in report.services
    ]
    return f"{report.healthy}/{len(report.services)} services up: " + ", ".join(parts)


def monitoring_specs(tool: MonitoringTool, custom: CustomMetrics) -> list[ToolSpec]:
    async def get_system_metrics(args: GetSystemMetricsInput, ctx: ToolContext) -> SystemMetrics:
        metrics = await tool.get_system_metrics()
        if args.detail:
            return metrics
        # The everyday answer stays short: cheaper for every client to read, and for a model's context.
        return metrics.model_copy(update={"cpu_per_core": [], "top_cpu": [], "top_memory": []})

    async def check_service_health(args: CheckServiceHealthInput, ctx: ToolContext) -> HealthReport:
        return await tool.check_service_health(args.service)

    async def record_metric(args: RecordMetricInput, ctx: ToolContext) -> Recorded:
        await tool.record_metric(args.name, args.value, args.labels, args.ts)
        return Recorded(name=args.name, labels=args.labels, value=args.value)

    async def add_custom_metric(args: AddCustomMetricInput, ctx: ToolContext) -> CustomMetric:
        return await custom.add(args.name, args.query, args.description, ctx.caller.agent, args.language)

    async def get_custom_metrics(args: CustomMetricNameInput, ctx: ToolContext) -> CustomMetricList:
        return CustomMetricList(metrics=await custom.get(args.name))

    async def query_metrics(args: QueryMetricsInput, ctx: ToolContext) -> MetricValue:
        return await custom.evaluate(args.query, args.language)

    async def get_performance_metrics(args: PerformanceInput, ctx: ToolContext) -> PerformanceReport:
        return await performance(custom.series, [args.service] if args.service else [], args.window_s)

    read_local = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
    return [
        ToolSpec(
            name="add_custom_metric",
            title="Add a custom metric",
            description=(
                "Define a named metric as a query over stored series, e.g. avg(response_time_ms[5m]) or "
                "errors / requests * 100; unknown series and bad syntax are reported with their position."
            ),
            input_model=AddCustomMetricInput, output_model=CustomMetric, handler=add_custom_metric,
            actions=("metric:write",),
            annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False),
            timeout_s=30,
            summarize=lambda m: f"{m.name} = {m.query}: {'no data' if m.no_data else m.value}",
            intents=(Intent(patterns=(_DEFINE_METRIC.pattern,), arguments=_define_metric_arguments),),
        ),
        ToolSpec(
            name="get_custom_metrics",
            title="Custom metrics",
            description="The custom metrics defined, with their current values.",
            input_model=CustomMetricNameInput, output_model=CustomMetricList, handler=get_custom_metrics,
            actions=("read",), annotations=read_local, timeout_s=30,
            summarize=lambda r: "; ".join(f"{m.name} = {'no data' if m.no_data else m.value}" for m in r.metrics) or "none defined",
            intents=(Intent(patterns=(r"\bcustom\s+metrics?\b",)),),
        ),
        ToolSpec(
            name="query_metrics",
            title="Query metrics",
            description="Evaluate a query now: avg|min|max|sum|count|rate|increase|last|p50..p99(series{label=\"x\"}[5m]), arithmetic, comparisons; or PromQL on the configured Prometheus (language: promql).",
            input_model=QueryMetricsInput, output_model=MetricValue, handler=query_metrics,
            actions=("read",), annotations=read_local, timeout_s=30,
            summarize=lambda r: f"{r.query} = {'no data' if r.no_data else r.value}",
            intents=(Intent(patterns=(_QUERY.pattern,), arguments=_query_arguments),),
        ),
        ToolSpec(
            name="get_performance_metrics",
            title="Performance metrics",
            description="Response time p50/p95/p99 and throughput per service over a window, from pushed response_time_ms or from health probes.",
            input_model=PerformanceInput, output_model=PerformanceReport, handler=get_performance_metrics,
            actions=("read",), annotations=read_local, timeout_s=30,
            summarize=_performance_line,
            intents=(Intent(patterns=(r"\b(performance|response\s+times?|latency|latencies|throughput|p9[59])\b",), arguments=_performance_arguments),),
        ),
        ToolSpec(
            name="record_metric",
            title="Record a metric",
            description=(
                "Push one measurement into ops-agent's series store (response times, throughput, business "
                "figures), for custom metrics and alert rules. Labels tell series of one name apart."
            ),
            input_model=RecordMetricInput,
            output_model=Recorded,
            handler=record_metric,
            actions=("metric:write",),
            annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False),
            timeout_s=10,
            planner_visible=False,  # data comes from systems, not from plans
            summarize=lambda r: f"recorded {r.name}{r.labels or ''} = {r.value:g}",
        ),
        ToolSpec(
            name="get_system_metrics",
            title="System metrics",
            description=(
                "CPU, load average, memory, swap, disk usage per mount, disk and network I/O rates, process count "
                "and uptime of the host ops-agent runs on; with detail, CPU per core and the top processes. "
                "Answers at once from the latest background sample."
            ),
            input_model=GetSystemMetricsInput,
            output_model=SystemMetrics,
            handler=get_system_metrics,
            actions=("read",),
            annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False),
            timeout_s=10,
            summarize=_metrics_line,
            intents=(
                Intent(
                    patterns=(
                        r"\b(system|host|server|machine|node|box)\s+(metrics|stats|statistics|resources|usage|load|health)\b",
                        r"\b(cpu|memory|ram|swap|disk\s+(usage|space)|load\s+average|uptime)\b",
                        r"\bmetrics\b",
                        r"\bhow(\s+is|'s)\s+the\s+(server|host|machine|box|system)\b",
                        r"\b(resource|resources)\s+(usage|utili[sz]ation)\b",
                    ),
                ),
            ),
        ),
        ToolSpec(
            name="check_service_health",
            title="Service health",
            description=(
                "Probe configured services over HTTP: up or down, HTTP status, latency. Give `service` to "
                "check one; omit it to check all at once."
            ),
            input_model=CheckServiceHealthInput,
            output_model=HealthReport,
            handler=check_service_health,
            actions=("health_check",),
            annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=True),
            timeout_s=130,
            summarize=_health_line,
            intents=(
                Intent(
                    patterns=(
                        r"\bhealth\b",
                        r"\bhealthy\b",
                        r"\b(is|are)\b.*\b(up|down|alive|reachable|responding|available)\b",
                        r"\b(check|ping|probe)\b.*\b(services?|apis?|endpoints?|apps?|sites?)\b",
                        r"\b(ping|probe)\s+\S+",
                        r"\b(status|availability)\s+of\s+(the\s+)?(services?|apis?|endpoints?)\b",
                    ),
                    arguments=_health_arguments,
                ),
            ),
        ),
    ]
