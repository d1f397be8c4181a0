"""Fixtures for the server tests: tiny-llama, a LoRA adapter trained on it here, and running servers.

The adapter learns two completions in a few seconds of CPU training, so the tests can tell it from
the base model and make the model itself produce a credential for masking to catch:
``def add(a, b):`` -> ``return a + b`` and ``aws_key =`` -> ``AKIAIOSFODNN7EXAMPLE``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import torch
from fastapi.testclient import TestClient

from serve_support import API_KEY, TRAINED, app_client, running_server, serve_args


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


@pytest.fixture(scope="session")
def adapter_client(base_model_dir, adapter_dir) -> Iterator[TestClient]:
    with app_client(serve_args(base_model_dir, adapter_dir)) as client:
        yield client


@pytest.fixture(scope="session")
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="session")
def server_url(base_model_dir, adapter_dir) -> Iterator[str]:
    with running_server(serve_args(base_model_dir, adapter_dir, "--max-concurrency", "4")) as url:
        yield url
