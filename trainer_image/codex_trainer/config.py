"""The trainer's environment, read once at startup into a frozen object.

Every path and variable name comes from :mod:`codex_api.paths` (or, for the stages of a staged run,
:mod:`codex_api.stages`), which the operator's Job builder also uses. Nothing else in the trainer calls ``os.getenv``: the CLI builds one
:class:`TrainerEnv` and passes it down.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from codex_api import paths, stages

USER_MODELS_CACHE = Path("~/.cache/codex-operator/models").expanduser()


@dataclass(frozen=True)
class TrainerEnv:
    """Where the trainer reads and writes, and who it is; the token is kept out of ``repr``."""

    data_root: Path = Path(paths.DATA_ROOT)
    checkpoint_dir: Path = Path(paths.CHECKPOINT_DIR)
    scratch_dir: Path = Path(paths.SCRATCH_DIR)
    termination_message_path: Path = Path(paths.TERMINATION_MESSAGE_PATH)
    # An explicit CODEX_MODELS_DIR; unset means "image dir if populated, else the user cache".
    models_dir: Optional[Path] = None
    run_name: Optional[str] = None
    run_namespace: Optional[str] = None
    image: Optional[str] = None
    hf_token: Optional[str] = field(default=None, repr=False)
    # HF_ENDPOINT, for a Hub mirror or a private Hub; unset means huggingface.co.
    hf_endpoint: Optional[str] = None
    # The sandbox stage's termination message, which the operator hands the publish stage (codex_api.stages).
    sandbox_results: Optional[str] = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "TrainerEnv":
        env = os.environ if environ is None else environ

        def path(name: str, default: object) -> Path:
            return Path(env.get(name) or str(default))

        models = env.get(paths.ENV_MODELS_DIR)
        return cls(
            data_root=path(paths.ENV_DATA_ROOT, paths.DATA_ROOT),
            checkpoint_dir=path(paths.ENV_CHECKPOINT_DIR, paths.CHECKPOINT_DIR),
            models_dir=Path(models) if models else None,
            run_name=env.get(paths.ENV_RUN_NAME) or None,
            run_namespace=env.get(paths.ENV_RUN_NAMESPACE) or None,
            image=env.get(paths.ENV_IMAGE) or None,
            hf_token=env.get(paths.ENV_HF_TOKEN) or None,
            hf_endpoint=env.get("HF_ENDPOINT") or None,
            sandbox_results=env.get(stages.ENV_SANDBOX_RESULTS) or None,
        )


def models_dir_candidates(override: Optional[Path]) -> list[Path]:
    """Directories searched for a materialised embedded model, in order.

    An explicit override wins; then the directory baked into the image; then the user cache,
    which is where a laptop or a test materialises them.
    """
    if override is not None:
        return [Path(override)]
    return [Path(paths.EMBEDDED_MODELS_DIR), USER_MODELS_CACHE]


@functools.lru_cache(maxsize=1)
def default_env() -> TrainerEnv:
    """The process environment, read once, for callers (the server, tests) that did not build one."""
    return TrainerEnv.from_env()
