"""The one place that loads base models, tokenizers and adapters; the trainer and the server share it.

A :class:`~codex_api.common.ModelSource` names exactly one of:

- ``hub``: a Hub repo at ``revision``, downloaded with huggingface_hub (the token is passed in,
  ``HF_HUB_OFFLINE`` is honoured by the client, only weights/config/tokenizer files are fetched);
- ``pvc``: a transformers checkpoint directory on a mounted claim (``paths.pvc_file``);
- ``embedded``: a model shipped in the image (:mod:`codex_trainer.embedded`).

Remote code runs only when the source sets ``trustRemoteCode``. Weights load in fp32 on CPU and
bf16 on a GPU (fp16 where bf16 is unsupported) unless a dtype is given; ``quantization="4bit"``
(QLoRA) needs bitsandbytes and CUDA, or bitsandbytes' CPU backend (0.46 on), and says so otherwise.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Optional, Union

from codex_api import paths
from codex_api.common import ModelSource

from .config import default_env
from .embedded import chat_template, embedded_model_dir, embedded_revision
from .errors import InvalidSpecError
from .hub_errors import hub_error

log = logging.getLogger(__name__)

# What a causal LM repo needs; everything else (other weight formats, ONNX, GGUF) is skipped.
MODEL_FILE_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken", "tokenizer*"]
ADAPTER_FILE_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "tokenizer*", "README.md"]
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


@dataclass(frozen=True)
class ResolvedModel:
    """A model source turned into a local directory, plus the revision recorded in lineage."""

    path: Path
    revision: str
    trust_remote_code: bool = False


ModelRef = Union[ModelSource, ResolvedModel]


def resolve_model(
    source: ModelRef,
    *,
    token: Optional[str] = None,
    models_dir: Optional[Path] = None,
    data_root: Optional[Path] = None,
    field: str = "spec.baseModel",
) -> ResolvedModel:
    """Download (hub), locate (pvc) or materialise (embedded) the model; return its local directory."""
    if isinstance(source, ResolvedModel):
        return source
    env = default_env()
    if source.embedded is not None:
        model_dir = embedded_model_dir(source.embedded, models_dir if models_dir is not None else env.models_dir)
        return ResolvedModel(model_dir, embedded_revision(model_dir), source.trust_remote_code)
    if source.pvc is not None:
        root = PurePosixPath(data_root if data_root is not None else env.data_root)
        model_dir = Path(paths.pvc_file(source.pvc, root))
        if not (model_dir / "config.json").is_file():
            raise InvalidSpecError(
                f"{field}.pvc: no config.json in {source.pvc.path!r} on claim {source.pvc.claim_name!r} "
                f"(looked in {model_dir}); save the model there with save_pretrained"
            )
        return ResolvedModel(model_dir, f"pvc/{source.pvc.claim_name}{source.pvc.path}", source.trust_remote_code)
    model_dir = _snapshot(source.hub, source.revision, token, MODEL_FILE_PATTERNS + (
        ["*.py"] if source.trust_remote_code else []), f"{field}.hub")
    if not any(model_dir.glob("*.safetensors")):
        raise InvalidSpecError(f"{field}.hub: {source.hub!r} has no safetensors weights; only safetensors are loaded")
    return ResolvedModel(model_dir, f"{source.hub}@{model_dir.name}", source.trust_remote_code)


def model_config(source: ModelRef, *, token: Optional[str] = None, models_dir: Optional[Path] = None,
                 data_root: Optional[Path] = None, field: str = "spec.baseModel") -> dict[str, Any]:
    """The model's config.json, read before any weight is fetched: a Hub repo downloads that one file."""
    if isinstance(source, ModelSource) and source.hub is not None:
        folder = _snapshot(source.hub, source.revision, token, ["config.json"], f"{field}.hub")
    else:
        folder = resolve_model(source, token=token, models_dir=models_dir, data_root=data_root, field=field).path
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise InvalidSpecError(f"{field}: config.json unreadable ({type(error).__name__}: {error})") from None


def load_tokenizer(source: ModelRef, *, padding_side: str = "right", **where: Any):
    """The model's tokenizer with a pad token (eos when unset) and a chat template (ChatML when unset).

    ``where`` is passed to :func:`resolve_model` (token, models_dir, data_root). Training pads on the
    right; pass ``padding_side="left"`` for batched generation.
    """
    from transformers import AutoTokenizer

    resolved = resolve_model(source, **where)
    tokenizer = AutoTokenizer.from_pretrained(resolved.path, trust_remote_code=resolved.trust_remote_code)
    return prepare_tokenizer(tokenizer, padding_side)


def prepare_tokenizer(tokenizer: Any, padding_side: str = "right") -> Any:
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise InvalidSpecError("spec.baseModel: the tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
        log.info(json.dumps({"event": "tokenizer.pad_token", "pad_token": "eos"}))
    if not tokenizer.chat_template:
        tokenizer.chat_template = chat_template()
        log.info(json.dumps({"event": "tokenizer.chat_template", "template": "chatml-default"}))
    tokenizer.padding_side = padding_side
    return tokenizer


def resolve_dtype(dtype: Any = None, device: Optional[str] = None):
    """``dtype`` as a torch dtype: a name ("bf16", "float32", ...) or None for the device's default."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        on_gpu = (device or default_device()).startswith("cuda")
        if not on_gpu:
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, DTYPES.get(dtype, dtype))


def native_bf16(cuda: bool) -> bool:
    """Whether this process's device computes in bf16 natively: the GPU, or the CPU's AVX512-BF16/AMX
    (without them, CPU bf16 is emulated and slower than fp32)."""
    import torch

    if cuda:
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def default_device() -> str:
    import torch

    return f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"


def load_base_model(
    source: ModelRef,
    *,
    token: Optional[str] = None,
    dtype: Any = None,
    device: Optional[str] = None,
    quantization: str = "none",
    models_dir: Optional[Path] = None,
    data_root: Optional[Path] = None,
    attn_implementation: Optional[str] = None,
    quant_storage: Any = None,
):
    """The causal LM, on ``device`` (default: this process's GPU, else CPU), in ``dtype``.

    ``quant_storage``: for 4-bit under FSDP, the dtype the packed weights are stored in, so that FSDP
    shards them with the rest (peft's and TRL's FSDP-QLoRA recipe: the compute dtype); the model
    then loads without a device map and FSDP places each rank's shard.

    Raises:
        InvalidSpecError: the model is missing, or 4-bit was asked for without CUDA/bitsandbytes.
    """
    import torch
    from transformers import AutoModelForCausalLM

    resolved = resolve_model(source, token=token, models_dir=models_dir, data_root=data_root)
    device = device or default_device()
    kwargs: dict[str, Any] = {
        "dtype": resolve_dtype(dtype, device),
        "trust_remote_code": resolved.trust_remote_code,
    }
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantization == "4bit":
        kwargs["quantization_config"] = _four_bit_config(kwargs["dtype"], resolve_dtype(quant_storage, device)
                                                         if quant_storage is not None else None)
        if quant_storage is None and device.startswith("cuda"):
            kwargs["device_map"] = {"": torch.cuda.current_device()}
    elif quantization != "none":
        raise InvalidSpecError(f"spec.lora.quantization: unknown value {quantization!r}; use none or 4bit")
    model = AutoModelForCausalLM.from_pretrained(resolved.path, **kwargs)
    if quantization == "none":
        model.to(device)
    log.info(json.dumps({
        "event": "model.loaded", "revision": resolved.revision, "dtype": str(kwargs["dtype"]).removeprefix("torch."),
        "device": str(model.device), "quantization": quantization,
        "parameters": sum(p.numel() for p in model.parameters()),
    }))
    return model


def _four_bit_config(compute_dtype: Any, quant_storage: Any = None):
    import torch

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise InvalidSpecError(
            "spec.lora.quantization: 4bit needs the bitsandbytes package in the trainer image"
        ) from None
    if not torch.cuda.is_available() and not cpu_four_bit():
        raise InvalidSpecError(
            "spec.lora.quantization: 4bit (QLoRA) needs a CUDA GPU, or a bitsandbytes with a CPU 4-bit "
            f"backend (this one, {bitsandbytes.__version__}, has none); "
            "set resources.gpusPerNode >= 1 or use quantization: none"
        )
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        **({"bnb_4bit_quant_storage": quant_storage} if quant_storage is not None else {}),
    )


def cpu_four_bit() -> bool:
    """Whether bitsandbytes quantizes to NF4 on the CPU (its CPU backend, from 0.46 on)."""
    import torch
    from bitsandbytes import functional

    try:
        functional.quantize_4bit(torch.ones(64, 64), quant_type="nf4")
    except (RuntimeError, NotImplementedError, AssertionError, TypeError):
        return False
    return True


def load_adapter_model(
    base: ModelRef,
    adapter: Union[str, Path],
    *,
    revision: Optional[str] = None,
    token: Optional[str] = None,
    merge: bool = False,
    dtype: Any = None,
    device: Optional[str] = None,
    models_dir: Optional[Path] = None,
    data_root: Optional[Path] = None,
):
    """``(model, tokenizer)`` for serving: the base plus a peft adapter from a directory or a Hub repo.

    The tokenizer comes from the adapter when it ships one (the trainer saves it there), else from
    the base; it pads on the left for batched generation. ``merge`` folds the adapter into the
    base weights (faster inference, no adapter switching).
    """
    from peft import PeftModel
    from transformers import AutoTokenizer

    adapter_dir = resolve_adapter(adapter, revision=revision, token=token)
    resolved = resolve_model(base, token=token, models_dir=models_dir, data_root=data_root)
    model = load_base_model(resolved, dtype=dtype, device=device)
    model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    if merge:
        model = model.merge_and_unload()
    model.eval()
    tokenizer_dir = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else resolved.path
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=resolved.trust_remote_code)
    return model, prepare_tokenizer(tokenizer, padding_side="left")


def resolve_adapter(adapter: Union[str, Path], *, revision: Optional[str] = None, token: Optional[str] = None) -> Path:
    """A local adapter directory: ``adapter`` itself, or a snapshot of the Hub repo it names."""
    local = Path(adapter)
    if local.is_dir():
        if not (local / "adapter_config.json").is_file():
            raise InvalidSpecError(f"spec.adapter: {str(local)!r} has no adapter_config.json")
        return local
    if local.is_absolute() or str(adapter).startswith("."):
        raise InvalidSpecError(f"spec.adapter: directory {str(local)!r} does not exist")
    return _snapshot(str(adapter), revision, token, ADAPTER_FILE_PATTERNS, "spec.adapter.hub")


def _snapshot(repo_id: str, revision: Optional[str], token: Optional[str], patterns: list[str], field: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, token=token or False, allow_patterns=patterns))
    except Exception as error:  # the Hub client raises many types; classify them in one place
        raise hub_error(error, field, repo_id, revision) from None
