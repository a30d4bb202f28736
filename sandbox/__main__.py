"""`python -m sandbox [vercel|notify|inbox] [options]`: run a local stand-in in the foreground.

`vercel` (the Vercel API emulator) is what runs without a subcommand. `notify` runs the notification sinks
(Slack webhook, Mailtrap send API, webhook receiver, SMTP); `inbox --url URL` prints what they received.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from pydantic import ValidationError

from sandbox.vercel import EmulatorConfig, create_app, listen

STAND_INS = ("vercel", "notify", "inbox", "demo")
NOTIFY_PORT = 3200
SMTP_PORT = 2525

# option -> EmulatorConfig key; given options override the config file
VERCEL_OPTIONS: list[tuple[str, str, type, str]] = [
    ("--build-time-s", "build_time_s", float, "seconds from creation to READY/ERROR (default 2)"),
    ("--fail-rate", "failed_build_rate", float, "share of builds that end in ERROR, 0..1"),
    ("--transient-error-rate", "transient_error_rate", float, "share of requests answered 429/500/502/503, 0..1"),
    ("--retry-after-s", "retry_after_s", int, "Retry-After seconds on injected 429/503 (default 0)"),
    ("--slow-response-s", "slow_response_s", float, "latency added to every request"),
    ("--lost-response-rate", "lost_response_rate", float, "share of deployments created but answered 500"),
    ("--rate-limit", "rate_limit", int, "requests per token and operation per window before 429 (default 1000)"),
    ("--seed", "seed", int, "seed of the random generator, for repeatable runs"),
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description="Local stand-ins for the outside world.")
    commands = parser.add_subparsers(dest="command", metavar="{vercel,notify,inbox,demo}")
    vercel = commands.add_parser("vercel", help="the Vercel REST API emulator (the default)")
    vercel.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    vercel.add_argument("--port", type=int, default=3100, help="port (default 3100; 0 = any free port)")
    vercel.add_argument("--config", type=Path, metavar="FILE.yaml", help="EmulatorConfig keys as YAML")
    for option, key, kind, text in VERCEL_OPTIONS:
        vercel.add_argument(option, dest=key, type=kind, help=text, metavar=option[2:].upper().replace("-", "_"))
    vercel.add_argument(
        "--fail-branch", action="append", metavar="REF", help="git ref whose builds always fail (repeatable)"
    )
    vercel.add_argument("--log-level", default="info", help="uvicorn log level (default info: one line per request)")

    notify = commands.add_parser("notify", help="Slack, Mailtrap, webhook and SMTP sinks with one inbox")
    notify.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    notify.add_argument("--port", type=int, default=NOTIFY_PORT, help=f"HTTP port (default {NOTIFY_PORT}; 0 = any)")
    notify.add_argument("--smtp-port", type=int, default=SMTP_PORT, help=f"SMTP port (default {SMTP_PORT}; 0 = any)")
    notify.add_argument("--config", type=Path, metavar="FILE.yaml", help="SinksConfig keys as YAML")
    notify.add_argument("--slack-rate-per-s", type=float, help="Slack messages per second per webhook (default 1)")
    notify.add_argument("--smtp-tls", choices=("none", "starttls", "tls"), help="SMTP TLS mode (default none)")
    notify.add_argument("--smtp-auth-required", action="store_true", default=None, help="refuse mail before AUTH")
    notify.add_argument("--latency-s", type=float, help="latency added to every answer")
    notify.add_argument("--log-level", default="info", help="uvicorn log level (default info: one line per request)")

    demo = commands.add_parser("demo", help="one incident end to end: deploy, break, detect, page, diagnose, roll back")
    from sandbox.demo import add_arguments

    add_arguments(demo)

    inbox = commands.add_parser("inbox", help="print the inbox of running notification sinks as JSON")
    inbox.add_argument("--url", default=f"http://127.0.0.1:{NOTIFY_PORT}", help="base URL of `sandbox notify`")
    inbox.add_argument("--channel", choices=("slack", "mailtrap", "webhook", "smtp"), help="only this channel")
    inbox.add_argument("--clear", action="store_true", help="empty the inbox instead of printing it")
    return parser


def load_config(args: argparse.Namespace) -> EmulatorConfig:
    data: dict[str, Any] = {}
    if args.config is not None:
        data = yaml.safe_load(args.config.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{args.config}: expected a mapping of EmulatorConfig keys")
    for _, key, _, _ in VERCEL_OPTIONS:
        if (value := getattr(args, key)) is not None:
            data[key] = value
    if args.fail_branch:
        data["fail_branches"] = [*data.get("fail_branches", []), *args.fail_branch]
    return EmulatorConfig.model_validate(data)


def run_vercel(args: argparse.Namespace) -> int:
    try:
        config = load_config(args)
    except (OSError, ValueError, yaml.YAMLError) as exc:  # ValidationError is a ValueError
        if isinstance(exc, ValidationError):
            detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
        else:
            detail = str(exc)
        print(f"sandbox vercel: bad configuration: {detail}", file=sys.stderr)
        return 2
    sock = listen(args.host, args.port)
    base_url = f"http://{args.host}:{sock.getsockname()[1]}"
    token, team = next(iter(config.tokens.items()))
    print(f"Vercel API emulator on {base_url}", flush=True)
    print(f"  VERCEL_API_URL={base_url}")
    print(f"  VERCEL_TOKEN={token}")
    print(f"  VERCEL_TEAM_ID={team}")
    for project in config.projects:
        link = f" <- {project.link.type} {project.link.org}/{project.link.repo}" if project.link else ""
        print(f"  project {project.name}{link}")
    print(f"  build {config.build_time_s:g} s; inspect: GET {base_url}/_sandbox/state; stop: Ctrl-C", flush=True)
    server = uvicorn.Server(uvicorn.Config(create_app(config), log_level=args.log_level, lifespan="off"))
    server.run(sockets=[sock])
    return 0


def _config_error(name: str, exc: Exception) -> int:
    if isinstance(exc, ValidationError):
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
    else:
        detail = str(exc)
    print(f"sandbox {name}: bad configuration: {detail}", file=sys.stderr)
    return 2


def run_notify(args: argparse.Namespace) -> int:
    from sandbox.notify import NotifySinks, SinksConfig

    options = {
        "slack_rate_per_s": args.slack_rate_per_s, "smtp_tls": args.smtp_tls,
        "smtp_auth_required": args.smtp_auth_required, "latency_s": args.latency_s,
    }
    try:
        data: dict[str, Any] = {}
        if args.config is not None:
            data = yaml.safe_load(args.config.read_text()) or {}
            if not isinstance(data, dict):
                raise ValueError(f"{args.config}: expected a mapping of SinksConfig keys")
        data.update({key: value for key, value in options.items() if value is not None})
        config = SinksConfig.model_validate(data)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        return _config_error("notify", exc)
    sinks = NotifySinks(config, host=args.host, port=args.port, smtp_port=args.smtp_port, log_level=args.log_level)
    sinks.start()
    try:
        print(f"Notification sinks on {sinks.base_url} (SMTP {sinks.smtp_host}:{sinks.smtp_port})", flush=True)
        for hook in config.slack_webhooks:
            print(f"  SLACK_WEBHOOK_URL={sinks.slack_webhook_url(hook.name)}  ({hook.name}, {hook.state})")
        print(f"  MAILTRAP_API_URL={sinks.mailtrap_url}")
        print(f"  MAILTRAP_API_TOKEN={sinks.mailtrap_token}")
        print(f"  WEBHOOK_URL={sinks.webhook_url}  (any /hooks/NAME works)")
        print(f"  WEBHOOK_SECRET={sinks.webhook_secret}")
        print(f"  SMTP_HOST={sinks.smtp_host}")
        print(f"  SMTP_PORT={sinks.smtp_port}")
        print(f"  SMTP_USERNAME={sinks.smtp_username}")
        print(f"  SMTP_PASSWORD={sinks.smtp_password}")
        print(f"  SMTP_TLS={config.smtp_tls}" + ("" if config.smtp_tls == "none" else " (self-signed certificate)"))
        print(f"  inbox: GET {sinks.base_url}/inbox or `python -m sandbox inbox --url {sinks.base_url}`; stop: Ctrl-C",
              flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sinks.stop()
    return 0


def run_inbox(args: argparse.Namespace) -> int:
    import httpx2

    params = {"channel": args.channel} if args.channel else {}
    try:
        with httpx2.Client(base_url=args.url, timeout=10) as client:
            response = client.delete("/inbox") if args.clear else client.get("/inbox", params=params)
    except httpx2.HTTPError as exc:
        print(f"sandbox inbox: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    if response.status_code >= 400:
        print(f"sandbox inbox: {response.status_code} {response.text}", file=sys.stderr)
        return 1
    if not args.clear:
        print(json.dumps(response.json(), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv.insert(0, "vercel")  # the default stand-in
    args = _parser().parse_args(argv)
    if args.command == "notify":
        return run_notify(args)
    if args.command == "inbox":
        return run_inbox(args)
    if args.command == "demo":
        from sandbox.demo import run_demo

        return run_demo(args)
    return run_vercel(args)


if __name__ == "__main__":
    raise SystemExit(main())
