"""The server's settings: CLI flags with environment fallbacks, read once into a frozen config.

Every flag ``--some-flag`` falls back to ``CODEX_SERVE_SOME_FLAG``; the API key and the
Hub token come only from the environment (``CODEX_API_KEY``, ``HF_TOKEN``), set from
Secrets, so they never appear in a pod's args.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

from codex_api.common import ModelSource
from codex_api.paths import ENV_API_KEY, ENV_HF_TOKEN

ENV_PREFIX = "CODEX_SERVE_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class HubRef:
    """``hub:org/name[@revision]``."""

    repo_id: str
    revision: Optional[str] = None


def parse_hub_ref(value: str) -> HubRef:
    repo, _, revision = value.partition("@")
    if not repo:
        raise ValueError(f"{value!r}: expected hub:org/name[@revision]")
    return HubRef(repo, revision or None)


def parse_base_model(value: str) -> Union[ModelSource, Path]:
    """``embedded:NAME`` | ``hub:org/name[@rev]`` | a local directory."""
    kind, sep, rest = value.partition(":")
    if sep and kind == "embedded":
        return ModelSource(embedded=rest)
    if sep and kind == "hub":
        ref = parse_hub_ref(rest)
        return ModelSource(hub=ref.repo_id, revision=ref.revision)
    if value.startswith("/") or value.startswith("."):
        return Path(value)
    raise ValueError(f"--base-model {value!r}: expected embedded:NAME, hub:org/name[@rev] or a directory path")


def parse_adapter(value: str) -> Union[HubRef, Path]:
    """``hub:org/name[@rev]`` or a local directory."""
    if value.startswith("hub:"):
        return parse_hub_ref(value[len("hub:"):])
    return Path(value)


@dataclass(frozen=True)
class ServeConfig:
    base_model: Union[ModelSource, Path]
    adapter: Union[HubRef, Path, None] = None
    merge_adapter: bool = False
    # None: the device's default (fp32 on CPU, bf16 on a GPU); else a torch dtype name.
    dtype: Optional[str] = None
    host: str = "0.0.0.0"
    port: int = 8000
    model_name: str = "codex"
    max_new_tokens: int = 256
    max_prompt_tokens: int = 2048
    max_concurrency: int = 4
    mask_secrets: bool = True
    max_body_bytes: int = 1 << 20
    # How long the batcher waits for more requests to join a batch once one is pending.
    batch_window_ms: float = 10.0
    # torch intra-op threads for generation; more threads than the CPU quota only stall each other.
    threads: int = 1
    log_level: str = "info"
    api_key: Optional[str] = field(default=None, repr=False)
    hf_token: Optional[str] = field(default=None, repr=False)


def _env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(ENV_PREFIX + name)
    if raw is None:
        return default
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise SystemExit(f"{ENV_PREFIX + name}={raw!r}: expected true or false")


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: the cgroup CPU quota (a pod's cpu limit) or the affinity mask."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]  # cgroup v2: "max 100000"
        if quota != "max":
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    def env(name: str, default: object = None) -> object:
        return environ.get(ENV_PREFIX + name, default)

    parser = argparse.ArgumentParser(prog="codex-serve", description="Serve a base causal LM plus a LoRA adapter.")
    parser.add_argument("--base-model", default=env("BASE_MODEL"), required=env("BASE_MODEL") is None,
                        help="embedded:NAME | hub:org/name[@rev] | /path/to/checkpoint")
    parser.add_argument("--adapter", default=env("ADAPTER"), help="/path/to/adapter | hub:org/name[@rev]")
    parser.add_argument("--merge-adapter", action="store_true", default=_env_bool(environ, "MERGE_ADAPTER", False),
                        help="merge the LoRA weights into the base at load")
    parser.add_argument("--dtype", default=env("DTYPE", "auto"), choices=("auto", "bfloat16", "float16", "float32"),
                        help="dtype of the weights (auto: fp32 on CPU, bf16 on a GPU)")
    parser.add_argument("--host", default=env("HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=env("PORT", 8000))
    parser.add_argument("--model-name", default=env("MODEL_NAME", "codex"), help="id in /v1/models and 'model'")
    parser.add_argument("--max-new-tokens", type=_positive_int, default=env("MAX_NEW_TOKENS", 256))
    parser.add_argument("--max-prompt-tokens", type=_positive_int, default=env("MAX_PROMPT_TOKENS", 2048))
    parser.add_argument("--max-concurrency", type=_positive_int, default=env("MAX_CONCURRENCY", 4))
    parser.add_argument("--no-mask-secrets", dest="mask_secrets", action="store_false",
                        default=_env_bool(environ, "MASK_SECRETS", True))
    parser.add_argument("--max-body-bytes", type=_positive_int, default=env("MAX_BODY_BYTES", 1 << 20))
    parser.add_argument("--batch-window-ms", type=float, default=env("BATCH_WINDOW_MS", 10.0))
    parser.add_argument("--threads", type=_positive_int, default=env("THREADS"),
                        help="torch threads for generation; default: the CPU quota (pod cpu limit) or CPU count")
    parser.add_argument("--log-level", default=env("LOG_LEVEL", "info"),
                        choices=["critical", "error", "warning", "info", "debug"])
    return parser


def load_config(argv: Optional[Sequence[str]] = None, environ: Optional[Mapping[str, str]] = None) -> ServeConfig:
    """Parse flags (falling back to ``CODEX_SERVE_*``) and the secret env vars, once, at startup."""
    environ = os.environ if environ is None else environ
    parser = build_parser(environ)
    args = parser.parse_args(argv)
    try:
        base_model = parse_base_model(args.base_model)
        adapter = parse_adapter(args.adapter) if args.adapter else None
    except ValueError as error:
        parser.error(str(error))
    if not 0 <= args.batch_window_ms <= 1000:
        parser.error("--batch-window-ms must be within 0..1000")
    return ServeConfig(
        base_model=base_model,
        adapter=adapter,
        merge_adapter=args.merge_adapter,
        dtype=None if args.dtype == "auto" else args.dtype,
        host=args.host,
        port=int(args.port),
        model_name=args.model_name,
        max_new_tokens=int(args.max_new_tokens),
        max_prompt_tokens=int(args.max_prompt_tokens),
        max_concurrency=int(args.max_concurrency),
        mask_secrets=args.mask_secrets,
        max_body_bytes=int(args.max_body_bytes),
        batch_window_ms=float(args.batch_window_ms),
        threads=int(args.threads) if args.threads else available_cpus(),
        log_level=args.log_level,
        api_key=environ.get(ENV_API_KEY) or None,
        hf_token=environ.get(ENV_HF_TOKEN) or None,
    )
