"""`python -m sandbox [vercel] [options]`: run a local stand-in in the foreground.

The Vercel API emulator is the only stand-in so far, so it is also what runs without a subcommand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from pydantic import ValidationError

from sandbox.vercel import EmulatorConfig, create_app, listen

STAND_INS = ("vercel",)

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
    commands = parser.add_subparsers(dest="command", metavar="{vercel}")
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv.insert(0, "vercel")  # the only stand-in so far is the default
    args = _parser().parse_args(argv)
    return run_vercel(args)


if __name__ == "__main__":
    raise SystemExit(main())
