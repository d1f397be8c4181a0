"""Fixtures for the trainer tests: a tiny Llama and its byte-level BPE tokenizer, built here."""

from __future__ import annotations

from pathlib import Path

import pytest

from codex_api.common import ModelSource


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """A models directory holding tiny-llama, trained from its seed in this session (~3 s)."""
    from codex_trainer.embedded import TINY_LLAMA, embedded_model_dir

    directory = tmp_path_factory.mktemp("models")
    embedded_model_dir(TINY_LLAMA, directory)
    return directory


@pytest.fixture(scope="session")
def tiny_source() -> ModelSource:
    return ModelSource(embedded="tiny-llama")


# The fake Hub fixture, shared with other test packages.
from fakehub import fake_hub  # noqa: E402,F401


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread per test: on this shared 2-core machine, OpenMP threads spin-waiting on
    each other under load made training ~3x slower than a single thread. Restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
