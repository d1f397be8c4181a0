"""Helpers for the server tests: the test servers' flags, in-process apps and ``codex-serve`` processes.

A module of its own, not conftest, so that test modules import it by a name no other test package uses.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
from fastapi.testclient import TestClient

from codex_serve.app import create_app
from codex_serve.config import load_config
from localcluster import free_port

API_KEY = "test-key-0123456789"
TRAINED = {"def add(a, b):": "\n    return a + b\n", "aws_key =": " AKIAIOSFODNN7EXAMPLE\n"}
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"


def serve_args(base_model_dir: Path, adapter_dir: Path | None, *extra: str) -> list[str]:
    # One torch thread: on a small shared machine two would stall each other whenever a core is taken.
    args = ["--base-model", str(base_model_dir), "--model-name", "codex-test", "--max-new-tokens", "64",
            "--threads", "1", "--max-prompt-tokens", "256", "--max-body-bytes", "65536"]
    return args + (["--adapter", str(adapter_dir)] if adapter_dir else []) + list(extra)


def wait_ready(get, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            response = get("/readyz")
            if response.status_code == 200:
                return
            assert response.json()["status"] != "failed", response.json()
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError("server did not become ready")


@contextmanager
def app_client(args: list[str], api_key: str | None = API_KEY, loader=None, wait: bool = True,
               environ: dict[str, str] | None = None) -> Iterator[TestClient]:
    """An in-process app (TestClient runs its lifespan), by default once it has finished loading."""
    config = load_config(args, environ={**({"CODEX_API_KEY": api_key} if api_key else {}), **(environ or {})})
    with TestClient(create_app(config, loader=loader), raise_server_exceptions=False) as client:
        if wait:
            wait_ready(client.get)
        yield client


def serve_command() -> list[str]:
    script = Path(sys.executable).with_name("codex-serve")
    return [str(script)] if script.exists() else [sys.executable, "-m", "codex_serve.cli"]


@contextmanager
def running_server(args: list[str], api_key: str | None = API_KEY) -> Iterator[str]:
    """``codex-serve`` as a process on a free 127.0.0.1 port; yields its base URL once ready."""
    port = free_port()
    env = {**os.environ, "CODEX_API_KEY": api_key or ""}
    process = subprocess.Popen(serve_command() + args + ["--host", "127.0.0.1", "--port", str(port),
                                                         "--log-level", "warning"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=5) as client:
            wait_ready(client.get)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
