"""Prometheus metrics, on a registry of the app's own so several apps can live in one process (tests)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Generation latencies on CPU run from tens of milliseconds to minutes.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass(frozen=True)
class ServeMetrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    generated_tokens: Counter
    prompt_tokens: Counter
    in_flight: Gauge
    rejected: Counter
    batch_size: Histogram

    @classmethod
    def create(cls) -> "ServeMetrics":
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            requests=Counter("codex_serve_requests", "HTTP requests answered, by route and status code.",
                             ["route", "status"], registry=registry),
            latency=Histogram("codex_serve_request_duration_seconds",
                              "Time from request to the last byte of the answer, by route.", ["route"],
                              buckets=LATENCY_BUCKETS, registry=registry),
            generated_tokens=Counter("codex_serve_generated_tokens", "Tokens generated.", registry=registry),
            prompt_tokens=Counter("codex_serve_prompt_tokens", "Prompt tokens processed.", registry=registry),
            in_flight=Gauge("codex_serve_requests_in_flight", "Generation requests admitted and not yet answered.",
                            registry=registry),
            rejected=Counter("codex_serve_rejected_requests", "Requests refused before generation, by reason.",
                             ["reason"], registry=registry),
            batch_size=Histogram("codex_serve_batch_size", "Sequences per batched generate call.",
                                 buckets=BATCH_BUCKETS, registry=registry),
        )
