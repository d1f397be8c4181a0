"""Loading through the trainer's own loader (``codex_trainer.modeling``), so what was trained is what is served.

fp32 on CPU and bf16 on a GPU are the loader's defaults; the tokenizer pads on the left.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

from codex_api.common import ModelSource

from .config import HubRef, ServeConfig
from .engine import Loader


def base_ref(base: Union[ModelSource, Path]) -> Any:
    """A ModelSource as is; a local checkpoint directory as the loader's already-resolved form."""
    from codex_trainer.modeling import ResolvedModel

    if isinstance(base, Path):
        return ResolvedModel(base, revision=f"path:{base}")
    return base


def model_loader(config: ServeConfig) -> Loader:
    def load() -> tuple[Any, Any]:
        from codex_trainer import modeling

        base = base_ref(config.base_model)
        if config.adapter is None:
            model = modeling.load_base_model(base, token=config.hf_token, dtype=config.dtype)
            return model, modeling.load_tokenizer(base, token=config.hf_token, padding_side="left")
        if isinstance(config.adapter, HubRef):
            adapter, revision = config.adapter.repo_id, config.adapter.revision
        else:
            adapter, revision = config.adapter, None
        return modeling.load_adapter_model(base, adapter, revision=revision, token=config.hf_token,
                                           merge=config.merge_adapter, dtype=config.dtype)

    return load
