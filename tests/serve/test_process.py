"""``codex-serve`` as a real process on a 127.0.0.1 port: batching, 429s, the CLI's exits, and fuzzing."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import httpx

from serve_support import API_KEY, TRAINED, serve_command

AUTH = {"Authorization": f"Bearer {API_KEY}"}
# Prompts the adapter has not seen, so greedy decoding runs on to max_tokens.
UNSEEN = ["x =", "print(", "import os", "class A:"]


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def complete(client: httpx.AsyncClient, prompt: str, max_tokens: int, **extra) -> httpx.Response:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, **extra}
    return await client.post("/v1/completions", json=body, headers=AUTH)


def test_concurrent_requests_are_batched_and_answer_as_if_alone(server_url):
    """Different prompts, lengths and stops in one batch (with a sampled row) decode as each does alone."""
    cases = [("def add(a, b):", 12, {}), ("aws_key =", 20, {"stop": ["FODNN"]}), ("x =", 7, {}),
             ("print(", 30, {"temperature": 0.8, "top_p": 0.5})]

    async def run():
        async with httpx.AsyncClient(base_url=server_url, timeout=60) as client:
            alone = [await complete(client, prompt, n, **extra) for prompt, n, extra in cases]
            before = (await client.get("/metrics")).text
            together = await asyncio.gather(*(complete(client, prompt, n, **extra) for prompt, n, extra in cases))
            after = (await client.get("/metrics")).text
            return alone, together, before, after

    alone, together, before, after = asyncio.run(run())
    assert [r.status_code for r in alone + list(together)] == [200] * 8
    texts = [[r.json()["choices"][0]["text"] for r in responses] for responses in (alone, together)]
    assert texts[0][:3] == texts[1][:3]  # the greedy rows; the last one samples
    assert texts[0][0] == TRAINED["def add(a, b):"]
    assert texts[0][1] == " AKIAIOS"  # cut before the stop string: too short to be a key
    batches = metric(after, "codex_serve_batch_size_count") - metric(before, "codex_serve_batch_size_count")
    assert batches < len(cases)  # at least two of the four shared a generate call


def test_over_the_concurrency_limit_gets_429_with_retry_after(server_url):
    async def run():
        async with httpx.AsyncClient(base_url=server_url, timeout=60) as client:
            return await asyncio.gather(*(complete(client, UNSEEN[i % 4], 64) for i in range(16)))

    responses = asyncio.run(run())
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 429}, statuses
    refused = [r for r in responses if r.status_code == 429]
    assert all(r.headers["retry-after"] == "1" and r.json()["error"]["type"] == "rate_limit_error" for r in refused)
    metrics = httpx.get(f"{server_url}/metrics").text
    assert metric(metrics, 'codex_serve_rejected_requests_total{reason="concurrency"}') >= len(refused)
    assert metric(metrics, "codex_serve_requests_in_flight") == 0.0


def test_a_client_that_leaves_mid_stream_gives_its_slot_back(server_url):
    with httpx.Client(base_url=server_url, timeout=60) as client:
        body = {"prompt": "x =", "max_tokens": 64, "temperature": 0, "stream": True}
        with client.stream("POST", "/v1/completions", json=body, headers=AUTH) as response:
            assert response.status_code == 200
            next(response.iter_lines())
        for _ in range(100):
            if metric(client.get("/metrics").text, "codex_serve_requests_in_flight") == 0.0:
                break
        assert metric(client.get("/metrics").text, "codex_serve_requests_in_flight") == 0.0
        assert client.post("/infer", json={"prompt": "x", "max_tokens": 1}, headers=AUTH).status_code == 200


def test_a_model_that_fails_to_load_ends_the_process_with_the_reason(tmp_path):
    missing = tmp_path / "no-such-model"
    result = subprocess.run(serve_command() + ["--base-model", str(missing), "--host", "127.0.0.1", "--port", "0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "model load failed" in result.stderr and str(missing) in result.stderr


def test_bad_flags_exit_2_naming_the_flag():
    result = subprocess.run(serve_command() + ["--base-model", "ftp://x"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert "--base-model" in result.stderr


def test_schemathesis_finds_no_server_errors_and_no_schema_violations(server_url, tmp_path):
    """Property-based fuzzing of the OpenAPI schema against the running server.

    Every check runs except positive_data_acceptance: prompt-token limits depend on the
    tokenizer and cannot be written in JSON Schema, so some schema-valid prompts get a 400.
    One worker: with two threads, hypothesis's concurrent ``ast.parse`` calls hit a CPython 3.11
    race ("SystemError: AST constructor recursion depth mismatch"), and the seed stays meaningful.
    """
    schemathesis = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [str(schemathesis), "run", f"{server_url}/openapi.json", "--checks", "all",
         "--exclude-checks", "positive_data_acceptance", "--header", f"Authorization: Bearer {API_KEY}",
         "--max-examples", "60", "--seed", "20240917", "--workers", "1", "--generation-database", "none",
         "--no-color"],
        capture_output=True, text=True, timeout=400, cwd=tmp_path,
    )
    summary = result.stdout[-3000:]
    assert result.returncode == 0, summary
    assert re.search(r"Tested: 7", summary), summary
    generated = int(re.search(r"(\d+) generated", summary).group(1))
    assert generated >= 300 and f"{generated} passed" in summary, summary


def test_help_lists_every_flag_the_operator_passes():
    usage = subprocess.run(serve_command() + ["--help"], capture_output=True, text=True, timeout=60).stdout
    for flag in ("--base-model", "--adapter", "--merge-adapter", "--host", "--port", "--model-name",
                 "--max-new-tokens", "--max-prompt-tokens", "--max-concurrency", "--no-mask-secrets",
                 "--max-body-bytes"):
        assert flag in usage, flag
