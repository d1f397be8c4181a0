"""Latency and throughput of codex-serve against a raw ``model.generate`` loop on the same model.

For concurrency 1, 4 and 16 (closed loop: each of c clients sends its next request as soon as
the last one is answered) it measures p50/p99 request latency and generated tokens per second:

- server: ``codex-serve`` as a process on 127.0.0.1, requests over HTTP to /v1/completions;
- raw: the same model loaded by the same loader in this process, c threads each calling
  ``model.generate`` on one prompt at a time (what a server without batching would do).

Both decode greedily from the same chat-templated prompts with the same max_tokens, so they
generate the same tokens. Printed: the overhead ratio at c=1 (server p50 / raw p50, target
<= 1.10) and the server's throughput scaling from c=1 to c=16 (target >= 2).

    python bench/serve_latency.py                       # SmolLM2-135M-Instruct, ~3-5 min on 2 cores
    python bench/serve_latency.py --base-model embedded:tiny-llama --max-tokens 64   # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

TASKS = [
    "Write a Python function that returns the n-th Fibonacci number.",
    "Write a Python function that checks whether a string is a palindrome.",
    "Write a Python function that merges two sorted lists.",
    "Write a Python function that counts the words in a text file.",
    "Write a Python function that flattens a nested list.",
    "Write a Python function that removes duplicates from a list, keeping the order.",
    "Write a Python function that converts Celsius to Fahrenheit.",
    "Write a Python function that finds the largest element of a list.",
]


@dataclass
class Level:
    concurrency: int
    latencies: list[float]
    tokens: int
    wall: float
    batches: float = 0
    rows: float = 0
    # CPU seconds the serving side spent (server process, or this process for the raw loop): unlike
    # wall time, hardly moved by whatever else runs on the machine.
    cpu: float = 0.0

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall

    @property
    def cpu_per_1k_tokens(self) -> float:
        return 1000 * self.cpu / max(self.tokens, 1)


def process_cpu(pid: int) -> float:
    """user + system CPU seconds of a process, all its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def chat_prompts(tokenizer) -> list[str]:
    return [tokenizer.apply_chat_template([{"role": "user", "content": task}], add_generation_prompt=True,
                                          tokenize=False) for task in TASKS]


# ---- the server ----

async def _server_level(url: str, pid: int, prompts: list[str], concurrency: int, per_client: int,
                        max_tokens: int) -> Level:
    latencies: list[float] = []
    tokens = 0

    async def client(worker: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens
        for i in range(per_client):
            prompt = prompts[(worker * per_client + i) % len(prompts)]
            started = time.perf_counter()
            response = await http.post("/v1/completions", json={
                "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
            latencies.append(time.perf_counter() - started)
            response.raise_for_status()
            tokens += response.json()["usage"]["completion_tokens"]

    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        # Warm-up, not measured: one request opens a connection and runs the first generate.
        await http.post("/v1/completions", json={"prompt": prompts[0], "max_tokens": 2, "temperature": 0})
        before = batch_counts((await http.get("/metrics")).text)
        started, cpu = time.perf_counter(), process_cpu(pid)
        await asyncio.gather(*(client(worker, http) for worker in range(concurrency)))
        wall, cpu = time.perf_counter() - started, process_cpu(pid) - cpu
        after = batch_counts((await http.get("/metrics")).text)
        return Level(concurrency, latencies, tokens, wall, batches=after[0] - before[0], rows=after[1] - before[1],
                     cpu=cpu)


def batch_counts(metrics: str) -> tuple[float, float]:
    """(batched generate calls, rows in them) so far, from the server's /metrics."""
    values = dict(line.rsplit(" ", 1) for line in metrics.splitlines()
                  if line.startswith(("codex_serve_batch_size_count", "codex_serve_batch_size_sum")))
    return float(values.get("codex_serve_batch_size_count", 0)), float(values.get("codex_serve_batch_size_sum", 0))


def start_server(args) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [str(Path(sys.executable).with_name("codex-serve")), "--base-model", args.base_model,
               "--host", "127.0.0.1", "--port", str(port), "--max-concurrency", str(max(args.concurrency)),
               "--max-new-tokens", str(args.max_tokens), "--batch-window-ms", str(args.batch_window_ms),
               "--threads", str(args.threads), "--log-level", "warning"]
    if args.adapter:
        command += ["--adapter", args.adapter]
    env = {k: v for k, v in os.environ.items() if k != "CODEX_API_KEY"}
    return subprocess.Popen(command, env=env), f"http://127.0.0.1:{port}"


def wait_ready(process: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 600
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("codex-serve did not become ready")
        time.sleep(0.25)


# ---- the raw generate loop ----

class RawLoop:
    """c threads, each calling ``model.generate`` on one prompt at a time."""

    def __init__(self, model, tokenizer, prompts: list[str], max_tokens: int, threads: int):
        self.model, self.max_tokens, self.eos, self.threads = model, max_tokens, tokenizer.eos_token_id, threads
        self.encoded = [tokenizer(prompt, return_tensors="pt") for prompt in prompts]
        self.generate(0)  # warm-up

    def generate(self, index: int) -> tuple[float, int]:
        import torch

        batch = self.encoded[index % len(self.encoded)]
        started = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(**batch, max_new_tokens=self.max_tokens, do_sample=False,
                                      pad_token_id=self.eos)
        new = out[0, batch["input_ids"].shape[1]:].tolist()
        return time.perf_counter() - started, new.index(self.eos) if self.eos in new else len(new)

    def level(self, concurrency: int, per_client: int) -> Level:
        latencies: list[float] = []
        tokens = [0]
        lock = threading.Lock()

        def client(worker: int) -> None:
            __import__("torch").set_num_threads(self.threads)  # per thread under OpenMP, as in the server
            for i in range(per_client):
                latency, count = self.generate(worker * per_client + i)
                with lock:
                    latencies.append(latency)
                    tokens[0] += count

        threads = [threading.Thread(target=client, args=(w,)) for w in range(concurrency)]
        started, cpu = time.perf_counter(), time.process_time()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return Level(concurrency, latencies, tokens[0], time.perf_counter() - started,
                     cpu=time.process_time() - cpu)


def merge(levels: list[Level]) -> Level:
    return Level(levels[0].concurrency, [x for level in levels for x in level.latencies],
                 sum(level.tokens for level in levels), sum(level.wall for level in levels),
                 sum(level.batches for level in levels), sum(level.rows for level in levels),
                 sum(level.cpu for level in levels))


def table(server: list[Level], raw: list[Level]) -> str:
    lines = ["| concurrency | server p50 (s) | server p99 (s) | server tok/s | server CPU s/1k tok | mean batch "
             "| raw p50 (s) | raw p99 (s) | raw tok/s | raw CPU s/1k tok |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s, r in zip(server, raw):
        lines.append(f"| {s.concurrency} | {s.p50:.3f} | {s.p99:.3f} | {s.tokens_per_s:.1f} | "
                     f"{s.cpu_per_1k_tokens:.1f} | {s.rows / max(s.batches, 1):.1f} | {r.p50:.3f} | {r.p99:.3f} | "
                     f"{r.tokens_per_s:.1f} | {r.cpu_per_1k_tokens:.1f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--per-client", type=int, default=1, help="requests each client sends per round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating raw/server rounds per level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--batch-window-ms", type=float, default=10.0)
    # One thread by default: on a small shared machine two OpenMP threads stall each other whenever
    # another process takes a core, and the timings swing by 5x from run to run. Pass --threads 0
    # for what codex-serve picks by itself (the CPU quota or count).
    parser.add_argument("--threads", type=int, default=1, help="torch threads, server and raw alike")
    args = parser.parse_args()
    if args.threads == 0:
        from codex_serve.config import available_cpus

        args.threads = available_cpus()

    from codex_serve.config import load_config
    from codex_serve.loading import model_loader

    process, url = start_server(args)  # loads while this process loads its own copy
    try:
        config = load_config(["--base-model", args.base_model] + (["--adapter", args.adapter] if args.adapter
                                                                   else []), environ={})
        started = time.perf_counter()
        model, tokenizer = model_loader(config)()
        model.eval()
        print(f"loaded {args.base_model} in {time.perf_counter() - started:.1f}s; "
              f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, torch threads {args.threads}, "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        raw_loop = RawLoop(model, tokenizer, chat_prompts(tokenizer), args.max_tokens, args.threads)
        wait_ready(process, url)
        raw, server = [], []
        for concurrency in args.concurrency:
            # Alternate the two, round by round, so that load from elsewhere on the machine hits both alike.
            raw_rounds, server_rounds = [], []
            # Single requests are quick and noisy: more rounds for them.
            for _ in range(max(args.rounds, 6 // concurrency)):
                raw_rounds.append(raw_loop.level(concurrency, args.per_client))
                server_rounds.append(asyncio.run(_server_level(url, process.pid, chat_prompts(tokenizer),
                                                               concurrency, args.per_client, args.max_tokens)))
            raw.append(merge(raw_rounds))
            server.append(merge(server_rounds))
            print(f"c={concurrency}: server p50 {server[-1].p50:.3f}s, raw p50 {raw[-1].p50:.3f}s", flush=True)
    finally:
        process.terminate()
        process.wait(timeout=60)

    print(table(server, raw))
    overhead = server[0].p50 / raw[0].p50
    scaling = server[-1].tokens_per_s / server[0].tokens_per_s
    raw_scaling = raw[-1].tokens_per_s / raw[0].tokens_per_s
    print(f"overhead at c={server[0].concurrency}: {overhead:.3f}x (target <= 1.10) "
          f"{'PASS' if overhead <= 1.10 else 'FAIL'}")
    print(f"server throughput c={server[-1].concurrency} vs c={server[0].concurrency}: {scaling:.2f}x "
          f"(target >= 2) {'PASS' if scaling >= 2 else 'FAIL'}; raw loop: {raw_scaling:.2f}x")
    print(f"in CPU time: overhead at c={server[0].concurrency} "
          f"{server[0].cpu_per_1k_tokens / raw[0].cpu_per_1k_tokens:.3f}x, server tokens per CPU-second "
          f"c={server[-1].concurrency} vs c={server[0].concurrency} "
          f"{server[0].cpu_per_1k_tokens / server[-1].cpu_per_1k_tokens:.2f}x; "
          f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
