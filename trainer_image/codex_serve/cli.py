"""``codex-serve``: the built-in inference server a CodexModel with ``runtime: builtin`` runs.

The port opens at once; the model loads in the background and /readyz turns 200 when it is in.
If loading fails the reason goes to the log and /dev/termination-log and the process exits 1.

Flags (each falls back to the environment variable shown; flags win):

  --base-model SPEC      CODEX_SERVE_BASE_MODEL, required: ``embedded:tiny-llama``,
                         ``embedded:smollm2-135m-instruct``, ``hub:org/name[@revision]`` or a directory.
  --adapter SPEC         CODEX_SERVE_ADAPTER: a peft adapter directory (such as /var/run/codex/adapter)
                         or ``hub:org/name[@revision]``. Unset serves the base model alone.
  --merge-adapter        CODEX_SERVE_MERGE_ADAPTER=true: merge the LoRA weights at load (spec.server.mergeAdapter).
  --dtype DTYPE          CODEX_SERVE_DTYPE: auto | bfloat16 | float16 | float32 (spec.server.dtype).
  --host HOST            CODEX_SERVE_HOST, default 0.0.0.0; the operator passes $(POD_IP).
  --port PORT            CODEX_SERVE_PORT, default 8000.
  --model-name NAME      CODEX_SERVE_MODEL_NAME, default "codex": the id in /v1/models and the accepted
                         ``model``; the operator passes the CodexModel's name.
  --max-new-tokens N     CODEX_SERVE_MAX_NEW_TOKENS, default 256: cap on max_tokens (spec.server.maxNewTokens).
  --max-prompt-tokens N  CODEX_SERVE_MAX_PROMPT_TOKENS, default 2048 (spec.server.maxPromptTokens).
  --max-concurrency N    CODEX_SERVE_MAX_CONCURRENCY, default 4: generations at once, also the largest
                         batch; more get 429 with Retry-After (spec.server.maxConcurrency).
  --no-mask-secrets      CODEX_SERVE_MASK_SECRETS=false: completions unmasked (spec.server.maskSecrets: false).
  --max-body-bytes N     CODEX_SERVE_MAX_BODY_BYTES, default 1048576: larger request bodies get 413.
  --batch-window-ms MS   CODEX_SERVE_BATCH_WINDOW_MS, default 10: how long the batcher waits for one
                         more request to join the batch.
  --threads N            CODEX_SERVE_THREADS: torch threads for generation; default the cgroup CPU quota
                         (the pod's cpu limit), else the CPUs this process may use.
  --log-level LEVEL      CODEX_SERVE_LOG_LEVEL, default info. Prompts and completions are never logged.

Secrets, from the environment only (set from Secrets with valueFrom.secretKeyRef):

  CODEX_API_KEY   (codex_api.paths.ENV_API_KEY)  when set, every endpoint but /healthz, /readyz and /metrics
                                                 needs ``Authorization: Bearer <key>``.
  HF_TOKEN        (codex_api.paths.ENV_HF_TOKEN)  Hub read token for private base models or adapters.

Other environment the loader reads: HF_HOME (a writable cache, paths.HF_HOME), CODEX_MODELS_DIR,
HF_HUB_OFFLINE.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import uvicorn

from codex_api.paths import TERMINATION_MESSAGE_PATH

from .app import create_app
from .config import ServeConfig, load_config

log = logging.getLogger("codex_serve")


def _write_termination_message(message: str, path: Path = Path(TERMINATION_MESSAGE_PATH)) -> None:
    try:
        path.write_text(message[:4000])
    except OSError:
        pass  # not in a pod, or not writable: the log has it


def serve(config: ServeConfig) -> int:
    exit_code = 0
    server: Optional[uvicorn.Server] = None

    def on_load_failure(message: str) -> None:
        nonlocal exit_code
        exit_code = 1
        _write_termination_message(f"model load failed: {message}")
        if server is not None:
            server.should_exit = True

    app = create_app(config, on_load_failure=on_load_failure)
    server = uvicorn.Server(uvicorn.Config(
        app, host=config.host, port=config.port, log_level=config.log_level, proxy_headers=False,
        timeout_graceful_shutdown=30,
    ))
    server.run()
    return exit_code


def main(argv: Optional[Sequence[str]] = None) -> int:
    config = load_config(argv)
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("serving %s as %r on %s:%d (adapter: %s, mask secrets: %s)", config.base_model, config.model_name,
             config.host, config.port, config.adapter, config.mask_secrets)
    return serve(config)


if __name__ == "__main__":
    sys.exit(main())
