"""Sentry as an error source, at the HTTP edge: a real local fake of Sentry's API serving the contract's shapes
(../shared/contracts/SENTRY.md, examples copied to tests/fixtures/sentry/), and the real /ingest/sentry route.

1. The client follows `Link` pagination (rel="next"; results="true") over several pages, waits what a 429's
   Retry-After (or X-Sentry-Rate-Limit-Reset) asks, refuses a wait beyond its cap, and never shows the token.
2. collect_sentry_issues stores one record per issue activity: search_logs and analyze_error_patterns see
   them, a re-pull adds nothing, and only new records cost a latest-event request.
3. `sentry_new_issues(project)[10m] > 0` fires for issues first seen in the window, and is checked at rule
   creation (unknown project, Sentry not configured).
4. /ingest/sentry: a good signature is accepted, a bad or missing one is 401, a replay is stored once, bad
   bodies are 400 naming the field, an oversized one 413.
5. Unconfigured, the tools answer how to configure Sentry; no token or secret reaches an answer or a log line.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mcp_server.ingest import MAX_BODY_BYTES
from mcp_server.server import build_http_app
from ops_agent.config import load_settings
from ops_agent.errors import ToolFailed, ToolRetry
from ops_agent.services import Services, open_services
from ops_agent.tools.alerts.condition import (
    check_condition,
    evaluate_condition,
    parse_condition,
)
from ops_agent.tools.sentry import SentryClient, SentryError, next_cursor
from sandbox.threaded_server import ThreadedServer

FIXTURES = Path(__file__).parent / "fixtures" / "sentry"
ISSUE = json.loads((FIXTURES / "issues-list.json").read_text())[0]
EVENT = json.loads((FIXTURES / "event-latest.json").read_text())
ISSUE_CREATED = (FIXTURES / "webhook-issue-created.json").read_bytes()
EVENT_ALERT = (FIXTURES / "webhook-event-alert.json").read_bytes()
TOKEN = f"sntrys_{secrets.token_hex(24)}"
CLIENT_SECRET = secrets.token_hex(32)
ORG = "acme"
PAGE = 2  # the fake's page size, so a handful of issues spans several pages


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def _issue(issue_id: int, project: tuple[str, str], title: str, *, first_ago_s: float, last_ago_s: float) -> dict:
    """The contract's list item with its own id, project and recent times."""
    now = time.time()
    issue = copy.deepcopy(ISSUE)
    slug, pid = project
    issue.update(
        id=str(issue_id), shortId=f"{slug.upper()}-{issue_id}", title=title, level="error", status="unresolved",
        firstSeen=_iso(now - first_ago_s), lastSeen=_iso(now - last_ago_s), count=str(10 * issue_id),
        permalink=f"https://{ORG}.sentry.io/issues/{issue_id}/",
        project={"id": pid, "name": slug, "slug": slug, "platform": "python"},
    )
    return issue


WEB, OTHER = ("web", "11"), ("other", "12")


class FakeSentry(ThreadedServer):
    """Sentry's organization issues list and latest-event endpoints, as the contract shapes them."""

    name = "fake sentry"

    def __init__(self) -> None:
        super().__init__()
        self.issues: list[dict] = []
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        self.limited: dict[str, dict[str, str]] = {}  # cursor -> headers of one 429 before serving it
        self.headers: dict[str, str] = {}  # extra headers on every answer
        self.app = Starlette(routes=[
            Route("/api/0/organizations/{org}/issues/", self.list_issues),
            Route("/api/0/organizations/{org}/issues/{issue}/events/latest/", self.latest_event),
        ])

    def _refused(self, request: Request) -> JSONResponse | None:
        self.requests.append((request.url.path, {k: request.query_params.getlist(k) for k in request.query_params}))
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"detail": "Invalid token"}, status_code=401)
        if request.path_params["org"] != ORG:
            return JSONResponse({"detail": "The requested resource does not exist"}, status_code=404)
        return None

    async def list_issues(self, request: Request) -> JSONResponse:
        if refused := self._refused(request):
            return refused
        cursor = request.query_params.get("cursor", "0:0:0")
        if (limited := self.limited.pop(cursor, None)) is not None:
            detail = "You are attempting to use this endpoint too frequently. Limit is 40 requests in 1 seconds"
            return JSONResponse({"detail": detail}, status_code=429, headers=limited)
        projects = request.query_params.getlist("project")
        start, end = request.query_params.get("start"), request.query_params.get("end")
        matching = [
            issue for issue in self.issues
            if (not projects or issue["project"]["id"] in projects)
            and (start is None or f"{start}" <= issue["lastSeen"][:19] <= f"{end}")
        ]
        offset = int(cursor.split(":")[1])
        page = matching[offset : offset + PAGE]
        more = offset + PAGE < len(matching)
        base = str(request.url.replace(query="")) + "?&cursor="  # request path + query minus cursor (§3)
        link = (
            f'<{base}0:{max(0, offset - PAGE)}:1>; rel="previous"; results="{str(offset > 0).lower()}"; '
            f'cursor="0:{max(0, offset - PAGE)}:1", '
            f'<{base}0:{offset + PAGE}:0>; rel="next"; results="{str(more).lower()}"; cursor="0:{offset + PAGE}:0"'
        )
        headers = {"Link": link, "X-Hits": str(len(matching)), "X-Sentry-Rate-Limit-Limit": "40",
                   "X-Sentry-Rate-Limit-Remaining": "39", "X-Sentry-Rate-Limit-Reset": str(int(time.time()) + 1),
                   **self.headers}
        return JSONResponse(page, headers=headers)

    async def latest_event(self, request: Request) -> JSONResponse:
        if refused := self._refused(request):
            return refused
        issue_id = request.path_params["issue"]
        event = {**EVENT, "groupID": issue_id, "eventID": f"{int(issue_id):032x}", "id": f"{int(issue_id):032x}"}
        return JSONResponse(event)

    def issue_requests(self) -> list[dict[str, list[str]]]:
        return [query for path, query in self.requests if path.endswith("/issues/")]

    def event_requests(self) -> list[str]:
        return [path for path, _ in self.requests if path.endswith("/latest/")]


@pytest.fixture
def sentry() -> Iterator[FakeSentry]:
    with FakeSentry() as fake:
        yield fake


class Sleeps:
    """Records what the client asked to wait, without waiting (no wall-clock in tests)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@asynccontextmanager
async def _client(fake: FakeSentry, **options: Any) -> AsyncIterator[SentryClient]:
    async with httpx2.AsyncClient() as http:
        yield SentryClient(http, base_url=fake.base_url, token=options.pop("token", TOKEN), organization=ORG, **options)


# -- 1. the client ------------------------------------------------------------------------------------------


def test_next_cursor_reads_the_contracts_link_header() -> None:
    link = (
        '<https://sentry.io/api/0/organizations/acme/issues/123456/events/?&cursor=0:0:1>; rel="previous"; '
        'results="false"; cursor="0:0:1", <https://sentry.io/api/0/organizations/acme/issues/123456/events/'
        '?&cursor=0:100:0>; rel="next"; results="true"; cursor="0:100:0"'
    )
    assert next_cursor(link) == "0:100:0"
    assert next_cursor(link.replace('results="true"', 'results="false"')) is None
    assert next_cursor(None) is None


async def test_client_follows_pages_and_waits_what_a_429_asks(sentry: FakeSentry) -> None:
    sentry.issues = [_issue(i, WEB, f"boom {i}", first_ago_s=600, last_ago_s=60 + i) for i in range(1, 6)]
    sentry.limited["0:2:0"] = {"Retry-After": "7"}  # the second page is refused once
    sleeps = Sleeps()
    async with _client(sentry, sleep=sleeps) as client:
        ids = [issue["id"] async for issue in client.iter_issues(start="2000-01-01T00:00:00", end="2100-01-01T00:00:00")]
    assert ids == ["1", "2", "3", "4", "5"]  # three pages, nothing twice
    assert sleeps.waits == [7.0]
    cursors = [query.get("cursor", [None])[0] for query in sentry.issue_requests()]
    assert cursors == [None, "0:2:0", "0:2:0", "0:4:0"]  # the cursor is sent back; the 429 retried once
    first = sentry.issue_requests()[0]
    assert first["query"] == ["is:unresolved"] and first["limit"] == ["100"] and first["sort"] == ["date"]


async def test_client_waits_for_the_rate_limit_reset_and_caps_the_wait(sentry: FakeSentry) -> None:
    sentry.issues = [_issue(i, WEB, f"boom {i}", first_ago_s=600, last_ago_s=60) for i in range(1, 4)]
    now = 1_800_000_000.0
    sentry.limited["0:2:0"] = {"X-Sentry-Rate-Limit-Reset": str(int(now) + 5), "X-Sentry-Rate-Limit-Remaining": "0"}
    sleeps = Sleeps()
    async with _client(sentry, sleep=sleeps, clock=lambda: now) as client:
        assert len([i async for i in client.iter_issues()]) == 3
    assert sleeps.waits[0] == 5.0  # no Retry-After: until X-Sentry-Rate-Limit-Reset
    # A success that leaves nothing remaining makes the next request wait for the reset, not earn a 429.
    sentry.headers = {"X-Sentry-Rate-Limit-Remaining": "0", "X-Sentry-Rate-Limit-Reset": str(int(now) + 3)}
    sleeps.waits.clear()
    async with _client(sentry, sleep=sleeps, clock=lambda: now) as client:
        assert len([i async for i in client.iter_issues()]) == 3
    assert sleeps.waits == [3.0]  # before the second page (the third is asked after another 0-remaining)
    sentry.headers = {}
    sentry.limited["0:0:0"] = {"Retry-After": "3600"}
    sleeps.waits.clear()
    async with _client(sentry, sleep=sleeps, max_retry_after_s=60) as client:
        with pytest.raises(SentryError) as refused:
            [i async for i in client.iter_issues()]
    assert refused.value.status_code == 429 and "more than sentry.max_retry_after_s" in refused.value.public_message
    assert sleeps.waits == []


async def test_client_errors_name_the_status_never_the_token(sentry: FakeSentry) -> None:
    wrong = f"sntrys_{secrets.token_hex(24)}"
    async with _client(sentry, token=wrong) as client:
        with pytest.raises(SentryError) as refused:
            await client.latest_event("1")
    message = refused.value.public_message
    assert "HTTP 401: Invalid token" in message and "sentry.auth_token" in message
    assert wrong not in str(refused.value) and TOKEN not in str(refused.value)
    async with _client(sentry) as client:
        with pytest.raises(SentryError, match="HTTP 404: The requested resource does not exist"):
            client.organization = "nope"
            await client.latest_event("1")


# -- 2..5. through the running agent ------------------------------------------------------------------------


def _settings(tmp_path: Path, **sentry: Any):
    path = tmp_path / "config.yaml"
    data = {"log_level": "DEBUG", "storage": {"path": str(tmp_path / "ops-agent.db")}, "sentry": sentry}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_settings(path, environ={})


@asynccontextmanager
async def _agent(tmp_path: Path, fake: FakeSentry | None, **sentry: Any) -> AsyncIterator[Services]:
    if fake is not None:
        sentry = {"api_url": fake.base_url, "auth_token": TOKEN, "organization": ORG, "projects": ["web", "api"],
                  "webhook_secret": CLIENT_SECRET, **sentry}
    async with open_services(_settings(tmp_path, **sentry), enable_monitoring=False, background=False) as services:
        yield services


async def _call(services: Services, tool: str, **arguments: Any) -> Any:
    return await services.registry.invoke(services.identity, tool, arguments)


async def test_collected_issues_are_searchable_counted_and_pulled_once(
    sentry: FakeSentry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sentry.issues = [
        _issue(101, WEB, "KeyError: zanzibar missing", first_ago_s=120, last_ago_s=30),
        _issue(102, WEB, "TimeoutError: zanzibar upstream", first_ago_s=240, last_ago_s=40),
        _issue(103, WEB, "ValueError: zanzibar old", first_ago_s=3 * 86400, last_ago_s=50),
        _issue(104, OTHER, "not ours zanzibar", first_ago_s=60, last_ago_s=20),
        _issue(105, WEB, "OSError: zanzibar disk", first_ago_s=5 * 86400, last_ago_s=70),
    ]
    async with _agent(tmp_path, sentry) as services:
        report = await _call(services, "collect_sentry_issues", time_range="1h")
        assert (report.accepted, report.duplicates, report.issues, report.new_issues) == (4, 0, 4, 2)
        assert report.events == 4 and len(sentry.event_requests()) == 4
        assert all("project" not in query for query in sentry.issue_requests())  # web's id is not known yet

        found = await _call(services, "search_logs", query="zanzibar", time_range="1h", service="web")
        assert found.total == 4
        newest = found.records[0]
        assert (newest.message, newest.severity, newest.service) == ("KeyError: zanzibar missing", "error", "web")
        attributes = newest.attributes
        assert attributes["issue_id"] == "101" and attributes["short_id"] == "WEB-101" and attributes["count"] == 1010
        assert attributes["permalink"] == f"https://{ORG}.sentry.io/issues/101/" and attributes["source"] == "sentry"
        assert attributes["exception"] == "Error: Tool list_organizations is already registered"  # the latest event
        assert (await _call(services, "search_logs", query="count:>=1030", time_range="1h", service="web")).total == 2
        patterns = await _call(services, "analyze_error_patterns", time_range="1h", service="web")
        assert sum(p.count for p in patterns.patterns) == 4

        again = await _call(services, "collect_sentry_issues", project="web", time_range="1h")
        assert (again.accepted, again.duplicates) == (0, 4) and len(sentry.event_requests()) == 4
        assert sentry.issue_requests()[-1]["project"] == ["11"]  # learnt from the first pull's answers
        sentry.issues[0] = _issue(101, WEB, "KeyError: zanzibar missing", first_ago_s=120, last_ago_s=5)
        assert (await _call(services, "collect_sentry_issues", time_range="1h")).accepted == 1  # new activity

        listed = await _call(services, "list_sentry_issues", project="web", time_range="1h", limit=3)
        assert [i.short_id for i in listed.issues] == ["WEB-101", "WEB-102", "WEB-103"] and listed.truncated

        sources = services.alerts.sources
        fires = await evaluate_condition(parse_condition("sentry_new_issues(web)[10m] > 0"), sources, now=time.time())
        assert fires.breached is True and fires.value == 2.0
        quiet = await evaluate_condition(parse_condition("sentry_new_issues(web)[1m] > 0"), sources, now=time.time())
        assert quiet.breached is False and quiet.value == 0.0
        errors = await evaluate_condition(parse_condition("log_count(service=web)[1h] >= 5"), sources, now=time.time())
        assert errors.breached is True
        rule = await _call(services, "create_alert_rule", name="new_web_issues",
                           condition="sentry_new_issues(web)[10m] > 0", severity="high")
        assert rule is not None
        with pytest.raises(ToolRetry, match="unknown Sentry project 'wbe'.*did you mean 'web'"):
            await _call(services, "create_alert_rule", name="typo", condition="sentry_new_issues(wbe)[10m] > 0")
    assert TOKEN not in caplog.text and CLIENT_SECRET not in caplog.text


async def test_an_upstream_failure_reaches_the_caller_without_the_token(sentry: FakeSentry, tmp_path: Path) -> None:
    wrong = f"sntrys_{secrets.token_hex(24)}"
    async with _agent(tmp_path, sentry, auth_token=wrong) as services:
        with pytest.raises(SentryError) as refused:
            await _call(services, "list_sentry_issues")
    assert "HTTP 401" in refused.value.public_message and wrong not in refused.value.public_message


async def test_unconfigured_sentry_says_how_to_configure_it(tmp_path: Path) -> None:
    async with _agent(tmp_path, None) as services:
        for tool in ("list_sentry_issues", "collect_sentry_issues"):
            with pytest.raises(ToolFailed, match="sentry is not configured: set SENTRY_AUTH_TOKEN and sentry.organization"):
                await _call(services, tool)
        problems = await check_condition(parse_condition("sentry_new_issues(web)[10m] > 0"), services.alerts.sources)
        assert len(problems) == 1 and "sentry is not configured" in problems[0]
        result = await evaluate_condition(parse_condition("sentry_new_issues(web) > 0"), services.alerts.sources, now=time.time())
        assert result.breached is None  # no data: neither fires nor resolves


def test_sentry_new_issues_parses_and_prints_canonically() -> None:
    condition = parse_condition('sentry_new_issues(project="my-app")[10m] > 0 for 2m')
    assert str(condition) == 'sentry_new_issues("my-app")[10m] > 0 for 2m'
    assert parse_condition(str(condition)) == condition
    for bad, needle in (("sentry_new_issues()[5m] > 0", "takes a Sentry project slug"),
                        ("sentry_new_issues(web, api) > 0", "takes one project"),
                        ("sentry_new_issue(web) > 0", "did you mean 'sentry_new_issues'")):
        with pytest.raises(ToolRetry, match=needle):
            parse_condition(bad)


# -- 4. the webhook -----------------------------------------------------------------------------------------


def _signed(body: bytes, resource: str, secret: str = CLIENT_SECRET) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Request-ID": secrets.token_hex(16),
        "Sentry-Hook-Resource": resource,
        "Sentry-Hook-Timestamp": str(int(time.time())),
        "Sentry-Hook-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
    }


@asynccontextmanager
async def _http(services: Services) -> AsyncIterator[httpx2.AsyncClient]:
    transport = httpx2.ASGITransport(app=build_http_app(services))
    async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
        yield client


async def test_webhooks_are_verified_stored_once_and_feed_the_condition(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    created = json.loads(ISSUE_CREATED)
    recent = _iso(time.time() - 90)
    created["data"]["issue"].update(firstSeen=recent, lastSeen=recent)
    fresh = json.dumps(created).encode()
    answers: list[httpx2.Response] = []
    async with _agent(tmp_path, None, webhook_secret=CLIENT_SECRET) as services, _http(services) as http:
        async def post(body: bytes, headers: dict[str, str]) -> httpx2.Response:
            answers.append(await http.post("/ingest/sentry", content=body, headers=headers))
            return answers[-1]

        ok = await post(fresh, _signed(fresh, "issue"))
        assert (ok.status_code, ok.json()) == (200, {"accepted": 1})
        replay = await post(fresh, _signed(fresh, "issue"))  # a retry: its own Request-ID and timestamp
        assert (replay.status_code, replay.json()) == (200, {"accepted": 0, "duplicate": True})
        alert = await post(EVENT_ALERT, _signed(EVENT_ALERT, "event_alert"))  # the contract's bytes, as sent
        assert alert.json() == {"accepted": 1}

        forged = await post(fresh, _signed(fresh, "issue", secret=secrets.token_hex(32)))
        assert forged.status_code == 401 and "Sentry-Hook-Signature does not match" in forged.json()["error"]
        tampered = fresh.replace(b"blooopy", b"bloopy!")
        assert (await post(tampered, _signed(fresh, "issue"))).status_code == 401
        unsigned = {k: v for k, v in _signed(fresh, "issue").items() if k != "Sentry-Hook-Signature"}
        assert (await post(fresh, unsigned)).json() == {"error": "Sentry-Hook-Signature is missing"}
        no_resource = {k: v for k, v in _signed(fresh, "issue").items() if k != "Sentry-Hook-Resource"}
        assert (await post(fresh, no_resource)).json() == {"error": "Sentry-Hook-Resource is missing"}
        without_id = json.loads(fresh)
        del without_id["data"]["issue"]["id"]
        body = json.dumps(without_id).encode()
        bad = await post(body, _signed(body, "issue"))
        assert bad.status_code == 400 and bad.json()["error"].startswith("data.issue.id: missing")
        assert (await post(b"{not json", _signed(b"{not json", "issue"))).json() == {"error": "body: not JSON"}
        resolved = json.dumps({**created, "action": "resolved"}).encode()
        assert (await post(resolved, _signed(resolved, "issue"))).json()["accepted"] == 0
        huge = b" " * (MAX_BODY_BYTES + 1)
        assert (await post(huge, _signed(b"", "issue"))).status_code == 413

        found = await _call(services, "search_logs", query="blooopy", time_range="1h", service="front-end")
        assert found.total == 1 and found.records[0].attributes["short_id"] == "FRONT-END-9"
        event = await _call(services, "search_logs", query="heck", time_range="all", service="front-end")
        assert event.total == 1 and event.records[0].attributes["event_id"] == "e4874d664c3540c1a32eab185f12c5ab"
        assert event.records[0].attributes["triggered_rule"] == "Very Important Alert Rule!"
        fires = await evaluate_condition(
            parse_condition('sentry_new_issues("front-end")[10m] > 0'), services.alerts.sources, now=time.time()
        )
        assert fires.breached is True and fires.value == 1.0
    for answer in answers:
        assert CLIENT_SECRET not in answer.text
    assert CLIENT_SECRET not in caplog.text


async def test_without_a_client_secret_only_local_or_bearer_senders_may_post(tmp_path: Path) -> None:
    async with _agent(tmp_path, None) as services, _http(services) as http:
        body = ISSUE_CREATED
        foreign = await http.post("/ingest/sentry", content=body, headers={**_signed(body, "issue"), "Host": "evil.example"})
        assert foreign.status_code == 421  # another Host: DNS rebinding, refused like /ingest/vercel does
        local = await http.post("/ingest/sentry", content=body, headers=_signed(body, "issue"))
        assert local.json() == {"accepted": 1}  # unsigned deliveries are judged as other local posts
