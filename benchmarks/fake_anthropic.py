"""A tiny stand-in for the Anthropic Messages API, for benchmarks: stateless, counting what it serves.

`POST /v1/messages`: when the last user message carries no `tool_result`, the reply is a `tool_use` of
`tool_name` with `tool_input`; otherwise it is an `end_turn` text reply. The bodies are the contract's
example bodies (tests/fixtures/anthropic/), with only the tool call, the ids and the final text changed, so
each reply reports the examples' `usage`.

`tokens_served` adds up every token field of the `usage` it returned (input, output, cache writes, cache
reads), which is what the cost ledger books for a reply (`TokenUsage.total_tokens`). A reply counts as soon as
it is made, as a provider bills it, whether or not the client lives to read it.

    with FakeAnthropic("deploy", {"project": "demo-app", "environment": "preview"}) as fake:
        fake.base_url          # ANTHROPIC_BASE_URL for the clients
        fake.tokens_served, fake.requests
"""

from __future__ import annotations

import copy
import json
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

__all__ = ["FakeAnthropic", "reply_tokens"]

EXAMPLES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "anthropic"
TOOL_USE = json.loads((EXAMPLES / "messages_tool_use_response.json").read_text(encoding="utf-8"))
END_TURN = json.loads((EXAMPLES / "messages_end_turn_response.json").read_text(encoding="utf-8"))


def reply_tokens(body: dict[str, Any]) -> int:
    """Every token a reply's `usage` bills, counted as the ledger counts them."""
    usage = body["usage"]
    return sum(usage.get(field) or 0 for field in (
        "input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client killed mid-request (the benchmark SIGKILLs workers) is expected: no traceback for it."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeAnthropic:
    def __init__(self, tool_name: str, tool_input: dict[str, Any], final_text: str = "Done.") -> None:
        self.tool_name = tool_name
        self.tool_input = tool_input
        self.final_text = final_text
        self.tokens_served = 0
        self.requests = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def tokens_per_task(self) -> int:
        """Tokens one task costs when it runs to the end: one tool_use reply, then one end_turn reply."""
        return reply_tokens(TOOL_USE) + reply_tokens(END_TURN)

    def reply(self, request: dict[str, Any]) -> dict[str, Any]:
        messages = request.get("messages") or [{}]
        content = messages[-1].get("content")
        answered = isinstance(content, list) and any(
            isinstance(block, dict) and block.get("type") == "tool_result" for block in content)
        suffix = uuid.uuid4().hex[:24]
        if answered:
            body = copy.deepcopy(END_TURN)
            body["content"] = [{"type": "text", "text": self.final_text}]
        else:
            body = copy.deepcopy(TOOL_USE)
            (block,) = [block for block in body["content"] if block["type"] == "tool_use"]
            block.update(name=self.tool_name, input=self.tool_input, id=f"toolu_01{suffix}")
        body["id"] = f"msg_01{suffix}"
        return body

    def start(self) -> Self:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's client expects

            def do_POST(self) -> None:  # the stdlib calls it by this name
                request = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                if self.path.split("?")[0] != "/v1/messages":
                    self._send(404, {"type": "error", "error": {"type": "not_found_error", "message": self.path}})
                    return
                body = fake.reply(request)
                with fake._lock:  # billed once generated, even if the client dies before it reads the reply
                    fake.tokens_served += reply_tokens(body)
                    fake.requests += 1
                self._send(200, body)

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:  # quiet: one line per request would drown the figures
                pass

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-anthropic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
