"""Collection from outside the process: HTTP ingest (NDJSON, Vercel drains), followed files, stdin."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
import yaml

from ops_agent.config import CONFIG_FILE_VARIABLE, ENVIRONMENT
from tests.processes import free_port, stop, wait_until_healthy

ROOT = Path(__file__).resolve().parents[1]
DRAIN = json.loads((ROOT / "tests/fixtures/vercel/logDrainDelivery.json").read_text())
INGEST_TOKEN = "ingest-tok-8c1f0e7d6b5a49382716"
DRAIN_SECRET = "drain-secret-a1b2c3d4e5f6"


@dataclass
class Server:
    process: subprocess.Popen
    base: str
    logs_db: Path
    watched: Path


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT and k != CONFIG_FILE_VARIABLE}
    env["OPS_AGENT_DB"] = str(tmp / "ops-agent.db")
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("log-collection")
    watched = tmp / "watched"
    watched.mkdir()
    config = {
        "log_level": "WARNING",
        "logs": {
            "ingest_token": INGEST_TOKEN,
            "drain_secret": DRAIN_SECRET,
            "files": [{"path": str(watched / "*.log"), "service": "worker"}],
            "poll_interval_s": 0.05,
        },
    }
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    stderr = tmp / "stderr.log"
    with open(stderr, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "ops_agent", "serve", "--transport", "http", "--port", str(port),
             "--config", str(tmp / "config.yaml")],
            env=_env(tmp), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )
    base = f"http://127.0.0.1:{port}"
    wait_until_healthy(process, base, stderr, 20.0)
    try:
        yield Server(process, base, tmp / "logs.db", watched)
    finally:
        stop(process)


def _messages(db: Path, where: str = "1", *params: object) -> list[str]:
    conn = sqlite3.connect(db, timeout=5)
    try:
        sql = f"SELECT f.message FROM log_records r JOIN log_fts f ON f.rowid = r.id WHERE {where} ORDER BY r.id"
        return [row[0] for row in conn.execute(sql, params)]
    finally:
        conn.close()


def _eventually(probe, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_ndjson_ingest_needs_the_token_and_stores_every_line(server: Server) -> None:
    body = "\n".join([
        json.dumps({"ts": "2026-11-27T10:00:00Z", "level": "error", "msg": "ndjson boom one", "service": "api"}),
        "level=warn msg=\"ndjson logfmt two\" service=api",
        "ndjson plain three",
    ])
    refused = httpx2.post(f"{server.base}/ingest/logs", content=body)
    assert refused.status_code == 401 and "bearer token" in refused.json()["error"]
    wrong = httpx2.post(f"{server.base}/ingest/logs", content=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    ok = httpx2.post(
        f"{server.base}/ingest/logs?service=fallback", content=body,
        headers={"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/x-ndjson"},
    )
    assert ok.status_code == 200 and ok.json() == {"accepted": 3}
    assert _messages(server.logs_db, "f.message LIKE 'ndjson%'") == ["ndjson boom one", "ndjson logfmt two", "ndjson plain three"]
    services = sqlite3.connect(server.logs_db).execute(
        "SELECT r.service FROM log_records r JOIN log_fts f ON f.rowid = r.id WHERE f.message LIKE 'ndjson%' ORDER BY r.id"
    ).fetchall()
    assert [s for (s,) in services] == ["api", "api", "fallback"]


def test_a_json_array_body_and_a_malformed_one(server: Server) -> None:
    headers = {"Authorization": f"Bearer {INGEST_TOKEN}"}
    ok = httpx2.post(f"{server.base}/ingest/logs", json=[{"msg": "array one"}, "array two"], headers=headers)
    assert ok.json() == {"accepted": 2}
    as_json = {**headers, "Content-Type": "application/json"}
    bad = httpx2.post(f"{server.base}/ingest/logs", content="[{\"msg\": ", headers=as_json)
    assert bad.status_code == 400 and bad.json()["error"].startswith("body: not a JSON array")
    deep = httpx2.post(f"{server.base}/ingest/logs", content="[" * 200_000, headers=as_json)
    assert deep.status_code == 400
    # Without a JSON content type a body is lines, even one that starts with a bracket.
    plain = "[Wed Oct 11 14:32:52 2026] [error] [client 10.0.0.1] bracket line\nraw \u2028 line separator kept"
    assert httpx2.post(f"{server.base}/ingest/logs", content=plain, headers=headers).json() == {"accepted": 2}
    assert "raw \u2028 line separator kept" in _messages(server.logs_db)


def test_vercel_drain_deliveries_are_verified_and_stored(server: Server) -> None:
    record = {**DRAIN["records"][0], "message": "drain build log line", "id": "drain-1"}
    body = json.dumps([record]).encode()
    signature = hmac.new(DRAIN_SECRET.encode(), body, hashlib.sha1).hexdigest()
    forged = httpx2.post(f"{server.base}/ingest/vercel", content=body, headers={"x-vercel-signature": "0" * 40})
    assert forged.status_code == 403
    unsigned = httpx2.post(f"{server.base}/ingest/vercel", content=body)
    assert unsigned.status_code == 403
    ok = httpx2.post(f"{server.base}/ingest/vercel", content=body, headers={"x-vercel-signature": signature})
    assert ok.status_code == 200 and ok.json() == {"accepted": 1}
    ndjson = (json.dumps({**record, "message": "drain ndjson a"}) + "\n" + json.dumps({**record, "message": "drain ndjson b", "level": "error"})).encode()
    signed = hmac.new(DRAIN_SECRET.encode(), ndjson, hashlib.sha1).hexdigest()
    assert httpx2.post(f"{server.base}/ingest/vercel", content=ndjson, headers={"x-vercel-signature": signed}).json() == {"accepted": 2}
    conn = sqlite3.connect(server.logs_db)
    row = conn.execute(
        "SELECT r.time, r.service, r.host, r.attributes FROM log_records r JOIN log_fts f ON f.rowid = r.id "
        "WHERE f.message = 'drain build log line'"
    ).fetchone()
    assert row[0] == 1573817187.330 and row[1] == "my-app" and row[2] == "my-app-abc123.vercel.app"
    assert json.loads(row[3])["deploymentId"] == "dpl_233NRGRjVZX1caZrXWtz5g1TAksD"
    garbage = b"not json"
    signed = hmac.new(DRAIN_SECRET.encode(), garbage, hashlib.sha1).hexdigest()
    bad = httpx2.post(f"{server.base}/ingest/vercel", content=garbage, headers={"x-vercel-signature": signed})
    assert bad.status_code == 400 and "line 1 is not JSON" in bad.json()["error"]


def test_followed_files_survive_rotation_and_truncation(server: Server) -> None:
    path = server.watched / "app.log"
    with open(path, "a") as f:
        f.write("2026-11-27 10:00:00,001 ERROR follow first\n")
    assert _eventually(lambda: _messages(server.logs_db, "f.message LIKE 'follow%'")) == ["follow first"]
    path.rename(server.watched / "app.log.1")  # rotation: renamed away (no longer matches *.log), new file
    with open(server.watched / "app.log.1", "a") as old:
        old.write("2026-11-27 10:00:01,000 INFO follow late line in the old file\n")
    path.write_text("2026-11-27 10:00:02,000 INFO follow second\n")
    wanted = ["follow first", "follow late line in the old file", "follow second"]
    assert _eventually(lambda: sorted(_messages(server.logs_db, "f.message LIKE 'follow%'")) == sorted(wanted))
    path.write_text("2026-11-27 10:00:03,000 INFO follow third after truncation\n")  # truncated and rewritten
    assert _eventually(lambda: "follow third after truncation" in _messages(server.logs_db, "f.message LIKE 'follow%'"))
    conn = sqlite3.connect(server.logs_db)
    services = {s for (s,) in conn.execute(
        "SELECT DISTINCT r.service FROM log_records r JOIN log_fts f ON f.rowid = r.id WHERE f.message LIKE 'follow%'"
    )}
    assert services == {"worker"}


def test_cli_ingests_standard_input_and_searches_it(tmp_path: Path) -> None:
    env = _env(tmp_path)
    lines = [
        '127.0.0.1 - - [27/Nov/2026:10:00:00 +0000] "GET /api/orders HTTP/1.1" 503 12 "-" "curl/8.0"',
        "<11>1 2026-11-27T10:00:01Z web-1 billing 42 - - charge failed: card declined",
        f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} ERROR api ready password=hunter2xyz",
    ]
    ingest = subprocess.run(
        [sys.executable, "-m", "ops_agent", "logs", "ingest", "--service", "edge"],
        input="\n".join(lines), capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
    )
    assert ingest.returncode == 0, ingest.stderr
    assert "stored 3 lines" in ingest.stderr
    search = subprocess.run(
        [sys.executable, "-m", "ops_agent", "logs", "search", "--since", "all", "--json", "status:>=500 OR declined"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
    )
    assert search.returncode == 0, search.stderr
    result = json.loads(search.stdout)
    assert result["total"] == 2
    assert {r["service"] for r in result["records"]} == {"edge", "billing"}
    everything = subprocess.run(
        [sys.executable, "-m", "ops_agent", "logs", "search", "--since", "all", "--json"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
    )
    assert "hunter2xyz" not in everything.stdout and json.loads(everything.stdout)["total"] == 3
    bad = subprocess.run(
        [sys.executable, "-m", "ops_agent", "logs", "search", "(oops"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
    )
    assert bad.returncode == 1 and "missing ')'" in bad.stderr and "Traceback" not in bad.stderr
