"""Real servers as subprocesses for the tests: a free port, waiting until one answers, stopping it."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx2
import pytest

STOP_TIMEOUT_S = 5.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    """Terminate, then kill if it will not go; bounded either way."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)


def wait_until_healthy(process: subprocess.Popen, base_url: str, log: Path, timeout_s: float) -> None:
    """Poll GET {base_url}/healthz until 200; see `wait_until_ready`."""
    wait_until_ready(process, f"{base_url}/healthz", log, timeout_s)


def wait_until_ready(process: subprocess.Popen, url: str, log: Path, timeout_s: float) -> None:
    """Poll GET `url` until 200; stop the process and raise with the end of its log otherwise."""
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx2.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx2.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout_s} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
    except BaseException:
        stop(process)
        raise


def missing(message: str) -> None:
    """A server or package a test needs is not installed: skip, but under CI (`CI` set) fail, so CI never
    passes by skipping what it is meant to run."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)

