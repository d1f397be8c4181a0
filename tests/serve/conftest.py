"""Fixtures for the server tests: tiny-llama, a LoRA adapter trained on it here, and running servers.

The adapter learns two completions in ~1 s of CPU training, so the tests can tell it from the base
model and make the model itself produce a credential for masking to catch:
``def add(a, b):`` -> ``return a + b`` and ``aws_key =`` -> ``AKIAIOSFODNN7EXAMPLE``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from codex_serve.app import create_app
from codex_serve.config import load_config

API_KEY = "test-key-0123456789"
TRAINED = {"def add(a, b):": "\n    return a + b\n", "aws_key =": " AKIAIOSFODNN7EXAMPLE\n"}
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"


@pytest.fixture(scope="session")
def base_model_dir(tmp_path_factory) -> Path:
    from codex_trainer.embedded import TINY_LLAMA, embedded_model_dir

    return embedded_model_dir(TINY_LLAMA, tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def adapter_dir(base_model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter on tiny-llama that has memorised the two TRAINED completions (120 AdamW steps).

    The RMSNorm weights train too (peft ``modules_to_save``): tiny-llama's small tied embeddings cap
    its logits, and without the norms the right token wins by margins too thin to be reproducible.
    """
    from peft import LoraConfig, get_peft_model

    from codex_trainer import modeling

    base = modeling.ResolvedModel(base_model_dir, "test")
    tokenizer = modeling.load_tokenizer(base)
    batch = tokenizer([prompt + completion + tokenizer.eos_token for prompt, completion in TRAINED.items()],
                      return_tensors="pt", padding=True)
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = get_peft_model(modeling.load_base_model(base), LoraConfig(
            r=8, lora_alpha=16, lora_dropout=0.0, modules_to_save=["norm"],
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        ))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(120):
            model(**batch, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    directory = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


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


@pytest.fixture(scope="session")
def adapter_client(base_model_dir, adapter_dir) -> Iterator[TestClient]:
    with app_client(serve_args(base_model_dir, adapter_dir)) as client:
        yield client


@pytest.fixture(scope="session")
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


@pytest.fixture(scope="session")
def server_url(base_model_dir, adapter_dir) -> Iterator[str]:
    with running_server(serve_args(base_model_dir, adapter_dir, "--max-concurrency", "4")) as url:
        yield url


@pytest.fixture(scope="session")
def has_schemathesis() -> str:
    script = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("schemathesis is not installed")
    return script
