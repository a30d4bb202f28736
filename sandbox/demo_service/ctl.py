"""`python -m sandbox.demo_service.ctl {restart,free-disk,state} --url URL`: act on a running demo service.

What the agent's allow-listed commands run ("restart the service", "free disk"). It starts as a fresh process
for every command, so it uses the standard library only. On success it prints one line and exits 0; on
failure it prints the error to stderr and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

__all__ = ["main"]

ACTIONS = {  # action -> (method, admin path)
    "restart": ("POST", "/_admin/restart"),
    "free-disk": ("POST", "/_admin/free-disk"),
    "state": ("GET", "/_admin/state"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.demo_service.ctl", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=sorted(ACTIONS))
    default_url = os.environ.get("DEMO_SERVICE_URL")
    parser.add_argument("--url", default=default_url, required=default_url is None,
                        help="the demo service, e.g. http://127.0.0.1:3300 (default: $DEMO_SERVICE_URL)")
    parser.add_argument("--timeout-s", type=float, default=5.0)
    args = parser.parse_args(argv)
    method, path = ACTIONS[args.action]
    request = urllib.request.Request(
        args.url.rstrip("/") + path, method=method, data=b"" if method == "POST" else None
    )
    try:
        with urllib.request.urlopen(request, timeout=args.timeout_s) as response:
            state = json.load(response)
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode("utf-8", "replace").strip()
        print(f"{args.action} failed: {args.url} answered {exc.code}: {detail}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, ValueError) as exc:  # refused, timed out, not JSON
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        print(f"{args.action} failed: cannot reach the demo service at {args.url}: {reason}", file=sys.stderr)
        return 1
    print(_summary(args.action, state))
    return 0


def _summary(action: str, state: dict[str, Any]) -> str:
    serving = f"version {state['version']} ({state['deployment']})" if state["deployment"] else "no deployment"
    disk = f"disk {state['disk_used_ratio']:.0%} used of {state['disk_total_mb'] / 1024:.0f} GB"
    if action == "restart":
        return f"restarted {state['service']}: {serving}, memory {state['memory_mb']:.0f} MB"
    if action == "free-disk":
        return f"freed {state['freed_mb']:.0f} MB on {state['service']}: {disk}"
    return json.dumps(state)


if __name__ == "__main__":
    sys.exit(main())
