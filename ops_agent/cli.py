"""`ops-agent`: the command line. Settings are loaded once, here, and passed down."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape  # log text is data: its brackets are not markup
from rich.table import Table

from ops_agent.config import Settings, load_settings
from ops_agent.errors import ConfigError, OpsAgentError
from ops_agent.governance import Caller
from ops_agent.ooda import Act, Finish
from ops_agent.services import Services, configure_logging, open_services

__all__ = ["app", "main"]

app = typer.Typer(
    name="ops-agent",
    help="An operations agent: deploy, monitor, read logs, alert and notify, behind a governance gate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)
T = TypeVar("T")

ConfigOption = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="YAML config file (default: $OPS_AGENT_CONFIG, else built-in defaults)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Log warnings and errors only.")]


def _fail(message: str, code: int) -> typer.Exit:
    """Print an error on one unwrapped line (so it can be grepped) and return the exit to raise."""
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(code)


def _settings(config: Path | None, quiet: bool = False) -> Settings:
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        raise _fail(exc.public_message, 2) from None
    if quiet:
        settings = settings.model_copy(update={"log_level": "WARNING"})
    configure_logging(settings)
    return settings


def _with_services(settings: Settings, work: Callable[[Services], Awaitable[T]], *, background: bool = False) -> T:
    """Run `work` with the services open; background work (evaluator, delivery, followers) only for `serve`."""

    async def run() -> T:
        async with open_services(settings, background=background) as services:
            return await work(services)

    try:
        return asyncio.run(run())
    except ConfigError as exc:
        raise _fail(exc.public_message, 2) from None
    except OpsAgentError as exc:
        raise _fail(exc.public_message, 1) from None


def _caller(services: Services) -> Caller:
    return Caller(services.settings.governance.agent_name, via="cli")


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@app.command()
def run(
    task: Annotated[str, typer.Argument(help="What to do, in plain language.")],
    priority: Annotated[str, typer.Option(help="low, medium, high or critical.")] = "medium",
    config: ConfigOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Carry out a task: observe, plan, act (every step through the gate), report."""
    settings = _settings(config, quiet)

    async def work(services: Services) -> dict:
        with err.status("working…") as status:

            async def progress(done: float, total: float | None, message: str | None) -> None:
                status.update(message or "working…")

            report = await services.registry.invoke(
                _caller(services), "execute_task", {"task": task, "priority": priority}, progress=progress
            )
        return report.model_dump(mode="json")

    report = _with_services(settings, work)
    if as_json:
        _print_json(report)
    else:
        colour = {"completed": "green", "partial": "yellow", "approval_required": "yellow"}.get(report["status"], "red")
        out.print(f"[bold {colour}]{report['status']}[/] · planner {report['planner']} · {report['task_id']}")
        table = Table("step", "tool", "arguments", "result", show_lines=False)
        for number, step in enumerate(report["steps"], 1):
            result = step["summary"] or "ok" if step["ok"] else f"[red]{step['error']}[/red]"
            table.add_row(str(number), step["tool"], json.dumps(step["arguments"]), result)
        if report["steps"]:
            out.print(table)
        if report["planner"] != "rules" or not report["steps"]:  # the rule planner's summary is the table
            out.print(report["summary"], highlight=False)
        for item in report["not_understood"]:
            out.print(f"[yellow]not understood:[/yellow] {item}", highlight=False)
        for held in report["approval_required"]:
            out.print(f"[yellow]held for approval:[/yellow] {held} (ops-agent approvals approve {held})", highlight=False)
        cost = report["cost"]
        out.print(f"[dim]cost: {cost['tokens']} tokens, ${cost['usd']:.4f}; {report['duration_s']} s[/dim]")
    raise typer.Exit(0 if report["status"] == "completed" else 1)


@app.command()
def plan(
    task: Annotated[str, typer.Argument(help="What to do, in plain language.")],
    priority: Annotated[str, typer.Option(help="low, medium, high or critical.")] = "medium",
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the tool calls the planner would make first, with their arguments. Executes nothing."""
    settings = _settings(config, quiet=True)

    async def work(services: Services) -> dict:
        decision = await services.loop.preview(task, priority, _caller(services))
        if isinstance(decision, Act):
            calls = [{"tool": c.tool, "arguments": c.arguments} for c in decision.calls]
            return {"planner": services.loop.planner.name, "calls": calls, "not_understood": decision.not_understood}
        assert isinstance(decision, Finish)
        return {
            "planner": services.loop.planner.name,
            "calls": [],
            "not_understood": decision.not_understood,
            "answer": decision.summary,
        }

    result = _with_services(settings, work)
    if as_json:
        _print_json(result)
        return
    out.print(f"planner: {result['planner']}")
    for number, call in enumerate(result["calls"], 1):
        out.print(f"  {number}. {call['tool']} {json.dumps(call['arguments'])}", highlight=False)
    if not result["calls"]:
        out.print("  (no tool calls)")
    for item in result["not_understood"]:
        out.print(f"[yellow]not understood:[/yellow] {item}", highlight=False)


@app.command()
def serve(
    transport: Annotated[str, typer.Option(help="stdio (for Claude Desktop) or http (streamable HTTP).")] = "stdio",
    host: Annotated[Optional[str], typer.Option(help="HTTP bind address (default from config: 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(help="HTTP port (default from config: 8000).")] = None,
    config: ConfigOption = None,
) -> None:
    """Serve every tool over MCP."""
    from mcp_server import serve_http, serve_stdio

    if transport not in ("stdio", "http"):
        raise _fail(f"--transport: expected stdio or http, got {transport!r}", 2)
    settings = _settings(config)
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    if overrides:
        settings = settings.model_copy(update={"mcp": settings.mcp.model_copy(update=overrides)})
    _with_services(settings, serve_stdio if transport == "stdio" else serve_http, background=True)


@app.command()
def tools(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """List the tool registry: names, governance actions, annotations and schemas."""
    settings = _settings(config, quiet=True)

    async def work(services: Services) -> list[dict]:
        return [
            {
                "name": spec.name,
                "title": spec.title,
                "description": spec.description,
                "actions": {a: services.gate.policy.rule(a).min_level for a in spec.actions},
                "annotations": spec.annotations.model_dump(by_alias=True, exclude_none=True),
                "input_schema": spec.input_schema(),
                "output_schema": spec.output_schema(),
            }
            for spec in services.registry.specs()
        ]

    specs = _with_services(settings, work)
    if as_json:
        _print_json(specs)
        return
    table = Table("tool", "actions (minimum level)", "hints", "arguments", "title")
    for spec in specs:
        arguments = ", ".join(
            f"{name}{'' if name in spec['input_schema'].get('required', []) else '?'}"
            for name in spec["input_schema"].get("properties", {})
        )
        hints = ", ".join(k.removesuffix("Hint") for k, v in spec["annotations"].items() if v is True)
        actions = ", ".join(f"{a} ({level})" for a, level in spec["actions"].items())
        table.add_row(spec["name"], actions, hints, arguments or "-", spec["title"] or "")
    out.print(table)


@app.command()
def call(
    tool: Annotated[str, typer.Argument(help="Tool name, as `ops-agent tools` lists it.")],
    arguments: Annotated[Optional[list[str]], typer.Argument(help="KEY=VALUE pairs; VALUE may be JSON.")] = None,
    args_json: Annotated[Optional[str], typer.Option("--args", help="All arguments as one JSON object.")] = None,
    config: ConfigOption = None,
    quiet: QuietOption = False,
) -> None:
    """Call one tool directly (through the gate) and print its JSON result."""
    settings = _settings(config, quiet)
    try:
        payload = _parse_arguments(arguments or [], args_json)
    except ValueError as exc:
        raise _fail(exc, 2) from None

    async def work(services: Services) -> dict:
        result = await services.registry.invoke(_caller(services), tool, payload)
        return result.model_dump(mode="json")

    _print_json(_with_services(settings, work))


@app.command()
def deploy(
    project: Annotated[str, typer.Argument(help="Vercel project name or id.")],
    environment: Annotated[str, typer.Option("--env", "-e", help="production, staging or preview.")] = "preview",
    branch: Annotated[Optional[str], typer.Option(help="Git branch (default: production branch or main).")] = None,
    low_risk: Annotated[bool, typer.Option("--low-risk", help="Mark a production change as low-risk.")] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Return once the deployment is created.")] = False,
    idempotency_key: Annotated[Optional[str], typer.Option(help="Repeat with the same key: carried out once.")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Deploy a branch to Vercel (through the gate), following the build live."""
    arguments = {"project": project, "environment": environment, "branch": branch, "low_risk": low_risk,
                 "wait": not no_wait, "idempotency_key": idempotency_key}
    result = _call_with_progress(config, quiet, "deploy", arguments)
    if as_json:
        _print_json(result)
        return
    colour = "green" if result["state"] == "READY" else "yellow"
    out.print(f"[bold {colour}]{result['state']}[/] {result['id']} {result['environment']} · {result['deployment_url']}")
    if result.get("reused"):
        out.print("[dim]this request was already carried out (same idempotency key): nothing new was deployed[/dim]")


@app.command()
def rollback(
    deployment_id: Annotated[Optional[str], typer.Argument(help="The production deployment to undo.")] = None,
    to: Annotated[Optional[str], typer.Option("--to", help="Roll back to this deployment id.")] = None,
    project: Annotated[Optional[str], typer.Option(help="Project (needed without a deployment id).")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Undo a production deployment: production returns to the previous READY one (no rebuild)."""
    arguments = {"deployment_id": deployment_id, "target_deployment_id": to, "project": project}
    result = _call_with_progress(config, quiet, "rollback", arguments)
    if as_json:
        _print_json(result)
    else:
        out.print(result["note"], highlight=False)


@app.command()
def deployments(
    project: Annotated[Optional[str], typer.Option(help="Only this project.")] = None,
    environment: Annotated[Optional[str], typer.Option("--env", "-e", help="production, staging or preview.")] = None,
    action: Annotated[Optional[str], typer.Option(help="deploy, rollback, promote or cancel.")] = None,
    outcome: Annotated[Optional[str], typer.Option(help="pending, ready, failed, canceled or done.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """The deployment history: who deployed, rolled back or promoted what, when, where, and how it ended."""
    arguments = {"project": project, "environment": environment, "action": action, "outcome": outcome, "limit": limit}
    result = _call_with_progress(config, True, "list_deployment_history", arguments)
    if as_json:
        _print_json(result["entries"])
        return
    table = Table("when (UTC)", "action", "by", "project", "env", "branch", "deployment", "outcome", "s")
    for e in result["entries"]:
        table.add_row(
            e["requested_at"][:19].replace("T", " "), e["action"], e["requested_by"], e["project"], e["environment"],
            e["branch"] or "", e["deployment_id"] or "", e["outcome"], f"{e['duration_s']:.1f}" if e["duration_s"] else "",
        )
    out.print(table)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def sandbox(ctx: typer.Context) -> None:
    """Run the local stand-ins (the Vercel API emulator): `python -m sandbox` with the same arguments."""
    # A new process, not an import: ops_agent never depends on the sandbox package.
    os.execv(sys.executable, [sys.executable, "-m", "sandbox", *ctx.args])


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def demo(ctx: typer.Context) -> None:
    """One incident end to end on the local sandbox: deploy a good version and a bad one, then watch the
    agent detect, page, diagnose and roll back (`--dashboard-port`, `--linger S`, `--scenario FILE`)."""
    os.execv(sys.executable, [sys.executable, "-m", "sandbox", "demo", *ctx.args])


def _call_with_progress(config: Path | None, quiet: bool, tool: str, arguments: dict[str, Any]) -> dict:
    """One governed tool call from the CLI, with its progress shown live on stderr. Options left unset
    (None) are left out, so the tool's own defaults apply."""
    settings = _settings(config, quiet)
    arguments = {key: value for key, value in arguments.items() if value is not None}

    async def work(services: Services) -> dict:
        with err.status(f"{tool}…") as status:

            async def progress(done: float, total: float | None, message: str | None) -> None:
                if message:
                    status.update(f"{tool}: {message[:100]}")
                    if not quiet and tool != "list_deployment_history":
                        err.print(f"[dim]{message}[/dim]", highlight=False, markup=False)

            result = await services.registry.invoke(_caller(services), tool, arguments, progress=progress)
        return result.model_dump(mode="json")

    return _with_services(settings, work)


@app.command()
def governance(
    agent: Annotated[Optional[str], typer.Option(help="Agent name (default: this agent).")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show an agent's reputation score, permission level, and budget used and left."""
    settings = _settings(config, quiet=True)
    name = agent or settings.governance.agent_name
    status = _with_services(settings, lambda services: services.gate.status(name))
    if as_json:
        _print_json(status)
        return
    if status["mode"] == "degraded":
        out.print(f"[red]degraded mode[/red]: {status['reason']} (fail_open: {status['fail_open']})")
        return
    out.print(f"agent [bold]{status['agent']}[/bold] ({status['agent_id']})")
    probation = status["probation"]
    out.print(
        f"permission level [bold]{status['permission_level']}[/bold], reputation score {status['reputation_score']}, "
        f"probation {probation['successes']}/{probation['required']} successful tasks"
    )
    table = Table("budget", "used", "limit", "left")
    for window, figures in status["budget"].items():
        used, limit = figures["used"], figures["limit"]
        show = (lambda v: f"${v:.4f}") if window.endswith("usd") else (lambda v: f"{v:,}")
        table.add_row(window.replace("_", " "), show(used), show(limit), show(max(limit - used, 0)))
    out.print(table)
    for event in status["recent_events"]:
        out.print(f"  {event['event_type']} {event['delta']:+d} → {event['score_after']}: {event['reason']}")


@app.command()
def audit(
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many records, newest first.")] = 20,
    agent: Annotated[Optional[str], typer.Option(help="Only this agent's records.")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
    verify: Annotated[bool, typer.Option("--verify", help="Check the hash chain instead; exit 1 if broken.")] = False,
) -> None:
    """Show the newest audit records: who called what, the gate's decision and the outcome."""
    settings = _settings(config, quiet=True)
    if verify:
        _audit_verify(settings, as_json)
        return
    records = _with_services(settings, lambda services: services.gate.audit.recent(limit, agent))
    if as_json:
        _print_json(records)
        return
    table = Table("id", "agent", "via", "tool", "action", "decision", "outcome", "ms", "error")
    for r in records:
        table.add_row(
            str(r["id"]), r["agent"], r["via"], r["tool"], r["action"] or "-", r["decision"], r["outcome"],
            f"{r['duration_ms']:.1f}", r["error"] or "",
        )
    out.print(table)


def _audit_verify(settings: Settings, as_json: bool) -> None:
    """`ops-agent audit --verify`: walk the hash chain; exit 0 if intact, else 1 naming the first bad record."""
    result = _with_services(settings, lambda services: services.gate.audit.verify())
    if as_json:
        _print_json(dataclasses.asdict(result))
    elif result.ok:
        out.print(f"audit trail intact: {result.records_checked} records", highlight=False)
        if result.unchained_records:
            out.print(f"({result.unchained_records} earlier records predate the chain and were not checked)")
        if result.head_hash:
            out.print(f"head hash: {result.head_hash}", highlight=False)
        if result.note:
            out.print(result.note, highlight=False)
    if not result.ok:
        raise _fail(f"audit trail broken: {result.problem}", 1)


approvals_app = typer.Typer(help="Steps of tasks held for the operator (approval_required).", no_args_is_help=True)
app.add_typer(approvals_app, name="approvals")


@approvals_app.command("list")
def approvals_list(
    every: Annotated[bool, typer.Option("--all", help="Every held step, not only the pending ones.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Held steps, newest first: what the planner wanted to do, and why it was held."""
    settings = _settings(config, quiet=True)

    async def work(services: Services) -> list[dict]:
        held = await services.approvals.list(None if every else "pending", limit)
        return [approval.public(services.redactor) for approval in held]

    held = _with_services(settings, work)
    if as_json:
        _print_json(held)
        return
    if not held:
        out.print("no held steps" if every else "no pending approvals")
        return
    table = Table("id", "status", "agent", "tool", "arguments", "why it was held", "task")
    for a in held:
        table.add_row(a["id"], a["status"], a["agent"], a["tool"], json.dumps(a["arguments"]),
                      "\n".join(a["reasons"]), a["task"][:80])
    out.print(table)


@approvals_app.command("approve")
def approvals_approve(
    approval_id: Annotated[str, typer.Argument(help="The id `ops-agent approvals list` shows (apr-...).")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run a held step once, as the agent that asked for it (its permission level and budget still apply)."""
    settings = _settings(config, quiet=True)

    async def work(services: Services) -> dict:
        approval, output = await services.approvals.approve_and_run(approval_id, "cli", services.registry.invoke)
        return {"approval": approval.public(services.redactor), "output": output.model_dump(mode="json")}

    result = _with_services(settings, work)
    if as_json:
        _print_json(result)
    else:
        out.print(f"[green]approved and ran[/green] {approval_id}: {result['approval']['tool']}", highlight=False)
        out.print_json(json.dumps(result["output"], default=str))


@approvals_app.command("deny")
def approvals_deny(
    approval_id: Annotated[str, typer.Argument(help="The id `ops-agent approvals list` shows (apr-...).")],
    config: ConfigOption = None,
) -> None:
    """Refuse a held step: it never runs."""
    settings = _settings(config, quiet=True)
    _with_services(settings, lambda services: services.approvals.decide(approval_id, False, "cli"))
    out.print(f"denied {approval_id}", highlight=False)


logs_app = typer.Typer(help="Collect, search and analyse logs.", no_args_is_help=True)
app.add_typer(logs_app, name="logs")
SinceOption = Annotated[str, typer.Option("--since", "-s", help="15m, 1h, 24h, 7d, ISO START..END, or all.")]
ServiceOption = Annotated[Optional[str], typer.Option("--service", help="Only this service.")]


@logs_app.command("ingest")
def logs_ingest(
    files: Annotated[Optional[list[Path]], typer.Argument(help="Files to read; none or '-' reads standard input.")] = None,
    service: Annotated[str, typer.Option(help="Service for lines that name none (default: the file's stem).")] = "",
    host: Annotated[str, typer.Option(help="Host for lines that name none.")] = "",
    config: ConfigOption = None,
    quiet: QuietOption = False,
) -> None:
    """Parse, redact and index log lines from files or standard input (any mix of formats)."""
    settings = _settings(config, quiet)
    sources = files or [Path("-")]
    for source in sources:
        if str(source) != "-" and not source.is_file():
            raise _fail(f"file {source}: not found or not a regular file", 2)

    async def work(services: Services) -> int:
        total = 0
        for source in sources:
            stream = sys.stdin.buffer if str(source) == "-" else open(source, "rb")  # noqa: SIM115
            try:
                name = service or ("stdin" if str(source) == "-" else source.stem.split(".")[0])
                total += await services.logs.collector.ingest_chunks(_chunks(stream), service=name, host=host)
            finally:
                if stream is not sys.stdin.buffer:
                    stream.close()
        if services.logs.metrics is not None:  # no background loop in a one-shot command: write them now
            await services.logs.metrics.flush(float("inf"))
        return total

    total = _with_services(settings, work)
    err.print(f"stored {total} lines", highlight=False)


async def _chunks(stream: Any) -> Any:
    """What the stream has ready, 1 MiB at most at a time, read off the event loop."""
    while chunk := await asyncio.to_thread(stream.read1, 1 << 20):
        yield chunk


@logs_app.command("search")
def logs_search(
    query: Annotated[str, typer.Argument(help='Terms, "phrases", field:value, NOT, OR (see docs/LOGS_GUIDE.md).')] = "",
    since: SinceOption = "1h",
    severity: Annotated[Optional[str], typer.Option(help="A threshold: error includes critical.")] = None,
    service: ServiceOption = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Search the log index (through the gate), newest first."""
    arguments = {"query": query, "time_range": since, "severity": severity, "service": service, "limit": limit}
    result = _call_with_progress(config, True, "search_logs", arguments)
    if as_json:
        _print_json(result)
        return
    colours = {"critical": "bold red", "error": "red", "warning": "yellow", "debug": "dim"}
    for r in reversed(result["records"]):  # oldest at the top, like a terminal log
        colour = colours.get(r["severity"], "default")
        out.print(
            f"[dim]{r['time'][:23].replace('T', ' ')}[/dim] [{colour}]{r['severity']:<8}[/] "
            f"[cyan]{r['service'] or '-'}[/cyan] {escape(r['message'])}",
            highlight=False, soft_wrap=True,
        )
    if result["total"]:
        out.print(f"[dim]{result['returned']} of {result['total']} matching records[/dim]")
    else:
        window = result["window"]
        out.print(
            f"no records match {escape(query or 'the filters')} between {window['start'] or 'the first record'} and "
            f"{window['end']} (words match whole words: try a prefix such as time*, or a longer --since)",
            highlight=False,
        )


@logs_app.command("patterns")
def logs_patterns(
    since: SinceOption = "24h",
    severity: Annotated[str, typer.Option(help="Analyse lines at this severity and above.")] = "error",
    service: ServiceOption = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Error patterns of a window, with trends, known signatures and recommendations."""
    arguments = {"time_range": since, "severity": severity, "service": service, "limit": limit}
    result = _call_with_progress(config, True, "analyze_error_patterns", arguments)
    if as_json:
        _print_json(result)
        return
    table = Table("count", "share", "trend", "services", "template")
    for p in result["patterns"]:
        table.add_row(str(p["count"]), f"{p['share']:.1%}", p["trend"], ",".join(p["services"]), escape(p["template"]))
    out.print(table)
    out.print(f"[dim]{result['lines']} {result['severity']}+ lines analysed[/dim]")
    for recommendation in result["recommendations"]:
        out.print(f"→ {escape(recommendation)}", highlight=False)


@logs_app.command("anomalies")
def logs_anomalies(
    window: Annotated[str, typer.Option(help="The recent window judged, e.g. 5m, 15m, 1h.")] = "15m",
    baseline_windows: Annotated[int, typer.Option(min=3, max=200, help="Windows before it, as baseline.")] = 12,
    service: ServiceOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Volume spikes and drops, new error templates and rate jumps in the recent window."""
    arguments = {"window": window, "baseline_windows": baseline_windows, "service": service}
    result = _call_with_progress(config, True, "detect_anomalies", arguments)
    if as_json:
        _print_json(result)
        return
    if not result["anomalies"]:
        out.print(result["note"] or "no anomalies: log volume and patterns look normal")
    for a in result["anomalies"]:
        out.print(f"[bold]{a['kind']}[/bold] score {a['score']}: {escape(a['explanation'])}", highlight=False)
        for hint in a["hints"]:
            out.print(f"   [yellow]{escape(hint)}[/yellow]", highlight=False)
    for recommendation in result["recommendations"]:
        out.print(f"→ {escape(recommendation)}", highlight=False)


@logs_app.command("pull")
def logs_pull(
    deployment: Annotated[Optional[str], typer.Argument(help="Deployment id or URL (default: production).")] = None,
    project: Annotated[Optional[str], typer.Option(help="Project (default: vercel.default_project).")] = None,
    config: ConfigOption = None,
) -> None:
    """Pull a Vercel deployment's build and runtime logs into the index."""
    arguments = {"deployment": deployment, "project": project}
    result = _call_with_progress(config, True, "collect_vercel_logs", arguments)
    out.print(f"stored {result['accepted']} lines from {result['source']}", highlight=False)


@logs_app.command("stats")
def logs_stats(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """How many records the log index holds, and their time span."""
    result = _call_with_progress(config, True, "log_stats", {})
    if as_json:
        _print_json(result)
        return
    out.print(f"{result['records']} records in {result['backend']}: {result['oldest'] or '-'} .. {result['newest'] or '-'}")


alerts_app = typer.Typer(help="Alert rules, active alerts, acknowledgement, silences, history.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")


@alerts_app.command("rules")
def alerts_rules(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """List the alert rules."""
    result = _call_with_progress(config, True, "list_alert_rules", {})
    if as_json:
        _print_json(result["rules"])
        return
    table = Table("name", "severity", "condition", "channels", "remediation", "enabled")
    for r in result["rules"]:
        remediation = (r["remediation"] or {}).get("action", "")
        table.add_row(r["name"], r["severity"], escape(r["condition"]), ",".join(r["channels"]), remediation,
                      "yes" if r["enabled"] else "no")
    out.print(table)


@alerts_app.command("create")
def alerts_create(
    name: Annotated[str, typer.Argument(help="Rule name.")],
    condition: Annotated[str, typer.Argument(help='e.g. "cpu_percent > 90 for 5m" (docs/ALERT_CONDITIONS.md).')],
    severity: Annotated[str, typer.Option(help="critical, high, medium or low.")] = "medium",
    channel: Annotated[Optional[list[str]], typer.Option("--channel", help="Extra channel (repeatable).")] = None,
    repeat: Annotated[Optional[str], typer.Option(help="Repeat interval until acknowledged, e.g. 30m.")] = None,
    config: ConfigOption = None,
) -> None:
    """Create an alert rule (checked now: syntax, series, services, channels)."""
    arguments = {"name": name, "condition": condition, "severity": severity, "channels": channel or [],
                 "repeat_interval": repeat}
    rule = _call_with_progress(config, True, "create_alert_rule", arguments)
    out.print(f"rule [bold]{rule['name']}[/bold] ({rule['severity']}): {escape(rule['condition'])}", highlight=False)


@alerts_app.command("delete")
def alerts_delete(name: Annotated[str, typer.Argument(help="Rule name.")], config: ConfigOption = None) -> None:
    """Delete an alert rule (its history stays)."""
    _call_with_progress(config, True, "delete_alert_rule", {"name": name})
    out.print(f"deleted rule {name}")


@alerts_app.command("active")
def alerts_active(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Pending and firing alerts."""
    result = _call_with_progress(config, True, "get_active_alerts", {})
    if as_json:
        _print_json(result["alerts"])
        return
    if not result["alerts"]:
        out.print("no active alerts")
        return
    table = Table("id", "rule", "severity", "state", "since", "acknowledged", "summary")
    for a in result["alerts"]:
        table.add_row(a["id"], a["rule_name"], a["severity"], a["state"], _when(a["started_at"]),
                      a["acknowledged_by"] or "", escape(a["summary"]))
    out.print(table)


@alerts_app.command("ack")
def alerts_ack(alert_id: Annotated[str, typer.Argument(help="From `ops-agent alerts active`.")], config: ConfigOption = None) -> None:
    """Acknowledge an alert: repeats and escalation stop."""
    alert = _call_with_progress(config, True, "acknowledge_alert", {"alert_id": alert_id})
    out.print(f"acknowledged {alert['id']} ({alert['rule_name']})")


@alerts_app.command("resolve")
def alerts_resolve(alert_id: Annotated[str, typer.Argument(help="From `ops-agent alerts active`.")], config: ConfigOption = None) -> None:
    """Close an active alert by hand."""
    alert = _call_with_progress(config, True, "resolve_alert", {"alert_id": alert_id})
    out.print(f"resolved {alert['id']} ({alert['rule_name']})")


@alerts_app.command("silence")
def alerts_silence(
    matcher: Annotated[list[str], typer.Argument(help="KEY=VALUE: rule=NAME (* allowed) and/or severity=LEVEL.")],
    duration: Annotated[str, typer.Option("--for", help="How long, e.g. 30m, 2h, 1d.")] = "1h",
    comment: Annotated[str, typer.Option(help="Why.")] = "",
    config: ConfigOption = None,
) -> None:
    """Silence matching alerts for a while (still tracked, not notified)."""
    try:
        matchers = dict(_pair(item) for item in matcher)
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    silence = _call_with_progress(config, True, "silence_alerts", {"matchers": matchers, "duration": duration, "comment": comment})
    out.print(f"silence {silence['id']}: {silence['matchers']} until {_when(silence['ends_at'])}", highlight=False)


@alerts_app.command("history")
def alerts_history(
    rule: Annotated[Optional[str], typer.Option(help="Only this rule.")] = None,
    alert_id: Annotated[Optional[str], typer.Option("--alert", help="Only this alert.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every transition of the alerts, newest first."""
    result = _call_with_progress(config, True, "get_alert_history", {"rule": rule, "alert_id": alert_id, "limit": limit})
    if as_json:
        _print_json(result["events"])
        return
    table = Table("when (UTC)", "rule", "alert", "event", "detail")
    for e in result["events"]:
        table.add_row(_when(e["at"]), e["rule_name"], e["alert_id"], e["event"], escape(json.dumps(e["detail"])[:120]))
    out.print(table)


def _pair(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key or not value:
        raise ValueError(f"matcher {item!r}: expected KEY=VALUE, e.g. rule=disk_*")
    return key, value


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _parse_arguments(pairs: list[str], args_json: str | None) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    if args_json:
        try:
            payload = json.loads(args_json)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--args: not valid JSON ({exc.msg} at position {exc.pos})") from None
        if not isinstance(payload, dict):
            raise ValueError("--args: must be a JSON object")
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"argument {pair!r}: expected KEY=VALUE")
        try:
            payload[key] = json.loads(value)
        except json.JSONDecodeError:
            payload[key] = value
    return payload


def main() -> None:
    app()


# -- the task queue (Redis Streams): `ops-agent worker` and `ops-agent submit` ---------------------------


def _redis_url(settings: Settings) -> str:
    if settings.redis.url is None:
        raise _fail("the task queue needs Redis: set REDIS_URL (or redis.url in the config file)", 2)
    return settings.redis.url.get_secret_value()


@app.command()
def worker(
    concurrency: Annotated[
        Optional[int], typer.Option(min=1, max=256, help="Tasks run at the same time (default queue.concurrency).")
    ] = None,
    burst: Annotated[bool, typer.Option("--burst", help="Stop once the queue is empty.")] = False,
    stop_timeout: Annotated[
        Optional[float],
        typer.Option("--stop-timeout", min=0, help="Seconds tasks in flight get after SIGTERM (default queue.stop_timeout_s)."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Run tasks from the Redis queue: budget and permission checks, execution, cost, reputation (SIGTERM:
    stop reading, let tasks in flight finish, return the rest to the queue)."""
    import signal

    from redis.asyncio import Redis

    from ops_agent.worker import TaskQueue, Worker

    settings = _settings(config)
    url = _redis_url(settings)

    async def work(services: Services) -> None:
        redis = Redis.from_url(url)
        try:
            overrides = {"concurrency": concurrency, "stop_timeout_s": stop_timeout}
            runner = Worker.from_settings(
                services, TaskQueue.from_settings(redis, settings), burst=burst, poll_delay_s=0 if burst else 1.0,
                **{name: value for name, value in overrides.items() if value is not None},
            )
            loop = asyncio.get_running_loop()
            signals = (signal.SIGTERM, signal.SIGINT)
            for number in signals:
                loop.add_signal_handler(number, runner.stop)
            try:
                await runner.run()
            finally:
                for number in signals:
                    loop.remove_signal_handler(number)
        finally:
            await redis.aclose()

    _with_services(settings, work, background=True)


@app.command()
def submit(
    task: Annotated[str, typer.Argument(help="What to do, in plain language.")],
    priority: Annotated[str, typer.Option(help="low, medium, high or critical.")] = "medium",
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the result and print it.")] = False,
    timeout: Annotated[float, typer.Option(min=0, help="Seconds --wait waits.")] = 300.0,
    idempotency_key: Annotated[
        Optional[str], typer.Option("--idempotency-key", help="A repeated submit with this key returns the first id.")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Put a task on the Redis queue for `ops-agent worker`; prints its id (with --wait, its result)."""
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    from ops_agent.worker import TaskQueue

    settings = _settings(config, quiet=True)
    url = _redis_url(settings)

    async def go() -> tuple[str, dict | None]:
        redis = Redis.from_url(url, decode_responses=True)
        try:
            queue = TaskQueue.from_settings(redis, settings)
            task_id = await queue.submit(task, priority, idempotency_key=idempotency_key)
            result = None
            if wait:
                if not as_json:
                    out.print(task_id, highlight=False)
                deadline = asyncio.get_running_loop().time() + timeout
                while (result := await queue.result(task_id)) is None:
                    if asyncio.get_running_loop().time() >= deadline:
                        break
                    await asyncio.sleep(0.25)
            return task_id, result
        finally:
            await redis.aclose()

    try:
        task_id, result = asyncio.run(go())
    except OpsAgentError as exc:
        raise _fail(exc.public_message, 2) from None
    except (RedisError, OSError) as exc:
        raise _fail(f"Redis unavailable: {type(exc).__name__}", 1) from None
    if as_json:
        _print_json({"task_id": task_id, **({"result": result} if wait else {})})
    elif not wait:
        out.print(task_id, highlight=False)
    elif result is not None:
        colour = {"completed": "green", "partial": "yellow"}.get(result["status"], "red")
        out.print(f"[bold {colour}]{result['status']}[/] · {escape(result['summary'] or '')}", highlight=False)
    if wait:
        if result is None:
            raise _fail(f"task {task_id} has no result after {timeout:g} s (still queued or running)", 1)
        raise typer.Exit(0 if result["status"] == "completed" else 1)
