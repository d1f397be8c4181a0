"""The whole recipe on the tiny Llama: SFT with a Hub push, DPO, bad data, and local mode."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging

import pytest
import torch
from fakehub.server import TOKEN

from codex_api import contract
from codex_api.contract import TrainerReport
from codex_trainer import modeling
from codex_trainer.cli import execute, main
from codex_trainer.recipe import Recipe

from .kit import SAMPLE_DATA, env_for, tiny_run


def test_sft_trains_gates_saves_and_pushes(tmp_path, models_dir, tiny_source, fake_hub, caplog):
    fake_hub.fail("/commit/main", 503, times=1)
    run = tiny_run(output={"pvc": {"claimName": "artifacts", "path": "/tiny"},
                           "hub": {"repoId": "codex-tester/tiny-adapter", "tokenSecretRef": {"name": "hf"}}})
    stages: list[str] = []
    sink = lambda progress, force=False: stages.append(progress["stage"]) if not stages or stages[-1] != \
        progress["stage"] else None  # noqa: E731
    recipe = Recipe(run, env_for(tmp_path, models_dir, token=TOKEN), sinks=[sink], hub_endpoint=fake_hub.url,
                    push_base_delay=0)
    with caplog.at_level(logging.INFO):
        code = execute(recipe)
    assert code == contract.EXIT_OK
    assert stages == ["prepare", "train", "evaluate", "save", "push", "report"]

    # The loss falls, on the training batches and against the untrained base on the validation split.
    losses = recipe.results["train"]["losses"]
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < losses[0] - 0.25
    output = tmp_path / "data" / "pvc" / "artifacts" / "tiny"
    base = modeling.load_base_model(tiny_source, models_dir=models_dir)
    with recipe.trainer.model.disable_adapter():  # the untrained base, on the same packed validation batches
        base_eval_loss = recipe.trainer.evaluate()["eval_loss"]
    assert recipe.metrics.eval_loss < base_eval_loss - 0.2

    # The adapter folder, on the PVC and on the Hub, and the adapter changes the model's output.
    expected = {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "chat_template.jinja", "README.md", "results.json"}
    assert expected <= {p.name for p in output.iterdir()}
    assert expected <= set(fake_hub.files("codex-tester/tiny-adapter"))
    from peft import PeftModel

    adapted = PeftModel.from_pretrained(modeling.load_base_model(tiny_source, models_dir=models_dir), str(output))
    inputs = recipe.tokenizer(["def add(a, b):"], return_tensors="pt")
    with torch.no_grad():
        assert not torch.allclose(base(**inputs).logits, adapted(**inputs).logits, atol=1e-3)

    # The report: phase, metrics, gates, artifact with the Hub commit, lineage.
    report = TrainerReport.model_validate_json((tmp_path / "termination-log").read_text())
    head_sha = fake_hub.repo("codex-tester/tiny-adapter").branches["main"][-1][0]
    assert (report.phase, report.reason) == ("Succeeded", "Succeeded")
    assert (report.artifact.hub_repo, report.artifact.commit_sha, report.artifact.claim_name) == (
        "codex-tester/tiny-adapter", head_sha, "artifacts")
    assert report.lineage.dataset_sha256 == hashlib.sha256((SAMPLE_DATA / "code_pairs.jsonl").read_bytes()).hexdigest()
    assert report.lineage.base_model_revision == "embedded/tiny-llama@seed1337-v1"
    assert report.gates.passed and report.gates.logic_ok.threshold == 0
    assert set(report.metrics.pass_at_k) == {"pass@1", "pass@2"} and report.metrics.train_tokens > 1000

    card = fake_hub.files("codex-tester/tiny-adapter")["README.md"].decode()
    for text in ("library_name: peft", "## Metrics", "evalLoss", "pass@2", "## Gates", "syntaxOk", "## Hyperparameters",
                 "training.learningRate | 0.01", "## Lineage", report.lineage.dataset_sha256, "embedded/tiny-llama"):
        assert text in card
    results = json.loads((output / "results.json").read_text())
    assert results["artifact"]["commitSha"] == head_sha and len(results["samples"]) == 16

    # keepLast=2 of the checkpoints every 10 steps, each complete.
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("checkpoint-*")) == ["checkpoint-20", "checkpoint-30"]
    assert TOKEN not in caplog.text and TOKEN not in (output / "results.json").read_text()
    assert sum(1 for method, path in fake_hub.requests if "/commit/" in path) == 2


def test_gates_not_met_keeps_the_adapter_and_exits_43(tmp_path, models_dir):
    run = tiny_run(training={"maxSteps": 4}, evaluation={"thresholds": {"logicOk": 0.9}})
    recipe = Recipe(run, env_for(tmp_path, models_dir))
    assert execute(recipe) == contract.EXIT_GATES_NOT_MET
    report = TrainerReport.model_validate_json((tmp_path / "termination-log").read_text())
    assert (report.phase, report.reason) == ("Failed", "GatesNotMet")
    assert report.message.startswith("gates not met: logicOk")
    assert (tmp_path / "data" / "pvc" / "artifacts" / "tiny" / "adapter_model.safetensors").is_file()


def test_the_base_is_scored_with_the_adapter_disabled_cached_and_gates_the_adapter(tmp_path, models_dir, tiny_source,
                                                                                     monkeypatch, caplog):
    from codex_trainer import recipe as recipe_module
    from codex_trainer.evaluation import generate_completions
    from codex_trainer.programs import generation_prompt

    scored: list[list[list[str]]] = []  # the completions of every score_samples call: tuned, then base
    real_score_samples = recipe_module.score_samples
    monkeypatch.setattr(recipe_module, "score_samples",
                        lambda tasks, completions, timeout: scored.append(completions) or real_score_samples(
                            tasks, completions, timeout))
    env = env_for(tmp_path, models_dir)
    first = Recipe(tiny_run(training={"maxSteps": 6}), env)
    with caplog.at_level(logging.INFO):
        assert execute(first) == contract.EXIT_OK
    assert len(scored) == 2 and first.results["baseline"]["source"] == "scored"
    # The base's samples are the untrained model's own, with the same prompts, seeds and settings.
    evaluation = first.spec.evaluation
    untrained = generate_completions(
        modeling.load_base_model(tiny_source, models_dir=models_dir), first.tokenizer,
        [generation_prompt(task.prompt) for task in first.tasks], samples=evaluation.samples_per_task,
        max_new_tokens=evaluation.max_new_tokens, temperature=evaluation.temperature, seed=first.spec.training.seed,
        batch_size=max(1, 32 // evaluation.samples_per_task))
    assert scored[1] == untrained != scored[0]
    report = TrainerReport.model_validate_json((tmp_path / "termination-log").read_text())
    metrics, gates = report.metrics, report.gates
    assert set(metrics.base_pass_at_k) == set(metrics.pass_at_k_delta) == {"pass@1", "pass@2"}
    assert all(metrics.pass_at_k_delta[k] == pytest.approx(metrics.pass_at_k[k] - metrics.base_pass_at_k[k])
               for k in metrics.pass_at_k)
    for gate in (gates.syntax_ok, gates.logic_ok, gates.security_ok, gates.perf_ok):
        assert gate.base is not None and gate.delta == pytest.approx(gate.value - gate.base)
    cache_file = tmp_path / "data" / "pvc" / "artifacts" / ".codex-baselines" / (first.results["baseline"]["key"]
                                                                                + ".json")
    assert first.results["baseline"]["file"] == str(cache_file) and cache_file.is_file()

    # Another run on the same base and tasks reads the base from the cache, and minImprovement refuses it.
    scored.clear()
    second = Recipe(tiny_run(training={"maxSteps": 6}, evaluation={"thresholds": {"minImprovement": 1.0}}),
                    dataclasses.replace(env, checkpoint_dir=tmp_path / "checkpoints-2"))
    with caplog.at_level(logging.INFO):
        assert execute(second) == contract.EXIT_GATES_NOT_MET
    assert len(scored) == 1 and second.results["baseline"] == {**first.results["baseline"], "source": "cache"}
    events = [json.loads(r.getMessage()).get("event") for r in caplog.records if "baseline." in r.getMessage()]
    assert events == ["baseline.scored", "baseline.cached"]
    report = TrainerReport.model_validate_json((tmp_path / "termination-log").read_text())
    assert report.metrics.base_pass_at_k == metrics.base_pass_at_k
    assert report.gates.min_improvement.value == report.metrics.pass_at_k_delta["pass@1"] < 1.0
    assert report.message.startswith("gates not met: minImprovement;")


def test_dpo_on_pairwise_data(tmp_path, models_dir):
    run = tiny_run(method="dpo", dataset={"source": {"configMap": {"name": "codex-sample-data",
                                                                   "key": "code_preferences.jsonl"}},
                                          "format": "preference", "validationSplit": 0.2},
                   training={"maxSteps": 8, "learningRate": 0.005}, evaluation={"tasks": None})
    recipe = Recipe(run, env_for(tmp_path, models_dir))
    assert execute(recipe) == contract.EXIT_OK
    history = recipe.trainer.state.log_history
    assert history[0]["loss"] == pytest.approx(0.6931, abs=0.01)  # -log(sigmoid(0)) before the policy moves
    assert any("rewards/margins" in entry for entry in history)
    assert recipe.metrics.eval_loss > 0 and recipe.metrics.perplexity > 1
    report = TrainerReport.model_validate_json((tmp_path / "termination-log").read_text())
    assert report.phase == "Succeeded" and report.gates.passed
    assert (tmp_path / "data" / "pvc" / "artifacts" / "tiny" / "adapter_model.safetensors").is_file()


def test_malformed_dataset_line_exits_42_naming_the_line(tmp_path, models_dir, monkeypatch, capsys):
    from .kit import trainer_environ

    for name, value in trainer_environ(tmp_path, models_dir).items():
        monkeypatch.setenv(name, value)
    pairs = tmp_path / "data" / "configmap" / "codex-sample-data" / "code_pairs.jsonl"
    lines = pairs.read_text().splitlines()
    lines[6] = lines[6][:-3]  # line 7 loses its closing characters
    pairs.write_text("\n".join(lines) + "\n")
    spec = tmp_path / "run.yaml"
    spec.write_text(json.dumps(tiny_run().to_wire()))
    try:
        code = main(["run", "--config", str(spec), "--termination-log", str(tmp_path / "termination-log")])
    finally:
        logging.getLogger().handlers.clear()
    assert code == contract.EXIT_INVALID == 42
    report = TrainerReport.model_validate_json((tmp_path / "termination-log").read_text())
    assert (report.phase, report.reason) == ("Failed", "InvalidData")
    assert report.message.startswith("spec.dataset: code_pairs.jsonl in configMap codex-sample-data line 7: "
                                     "not valid JSON")
    assert "Traceback" not in capsys.readouterr().err


def test_invalid_spec_exits_42_naming_the_field(tmp_path):
    spec = tmp_path / "run.yaml"
    spec.write_text(json.dumps({**tiny_run().to_wire(), "spec": {**tiny_run().spec.to_wire(), "lora": {"r": 0}}}))
    try:
        code = main(["run", "--config", str(spec), "--termination-log", str(tmp_path / "termination-log")])
    finally:
        logging.getLogger().handlers.clear()
    report = TrainerReport.model_validate_json((tmp_path / "termination-log").read_text())
    assert code == 42 and report.reason == "InvalidSpec"
    assert report.message.startswith("spec.lora.r: Input should be greater than or equal to 1")


def test_local_mode_runs_the_example_with_the_tiny_model(tmp_path, models_dir, monkeypatch, capsys, repo_root):
    monkeypatch.setenv("CODEX_MODELS_DIR", str(models_dir))
    try:
        code = main(["local", str(repo_root / "examples" / "run.yaml"), "--tiny", "--workdir", str(tmp_path)])
    finally:
        logging.getLogger().handlers.clear()
    out = capsys.readouterr().out
    assert code in (contract.EXIT_OK, contract.EXIT_GATES_NOT_MET)
    assert "codex-train local: codex-demo on tiny-llama" in out
    assert "train [############################] 8/8" in out
    for row in ("evalLoss", "pass@1", "gate syntaxOk", "adapter", f"exit code        {code}"):
        assert row in out
    staged = tmp_path / "data" / "configmap" / "codex-sample-data" / "eval_tasks.jsonl"
    assert staged.read_text() == (repo_root / "examples" / "data" / "eval_tasks.jsonl").read_text()
    adapter = tmp_path / "data" / "pvc" / "codex-artifacts" / "codex-demo"
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "README.md").is_file()
    assert len(list((tmp_path / "data" / "pvc" / "codex-artifacts" / ".codex-baselines").glob("*.json"))) == 1
    assert json.loads((tmp_path / "termination-log").read_text())["phase"] in ("Succeeded", "Failed")


@pytest.mark.parametrize("data_format", ["chat", "text"])
def test_chat_and_text_formats_train_with_accumulation_and_checkpointing(tmp_path, models_dir, data_format):
    env = env_for(tmp_path, models_dir)
    pairs = [json.loads(line) for line in (SAMPLE_DATA / "code_pairs.jsonl").read_text().splitlines()]
    records = [{"messages": [{"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": p["completion"]}]}
               if data_format == "chat" else {"text": p["prompt"] + p["completion"]} for p in pairs]
    key = f"{data_format}.jsonl"
    (env.data_root / "configmap" / "codex-sample-data" / key).write_text(
        "".join(json.dumps(r) + "\n" for r in records))
    run = tiny_run(dataset={"source": {"configMap": {"name": "codex-sample-data", "key": key}}, "format": data_format},
                   training={"maxSteps": 6, "gradientAccumulationSteps": 2, "gradientCheckpointing": True},
                   evaluation={"tasks": None})
    recipe = Recipe(run, env)
    assert execute(recipe) == contract.EXIT_OK
    assert recipe.trainer.state.global_step == 6
    assert recipe.args.gradient_checkpointing
    # effective batch 4 x 2; on CPU packed rows go one per micro-batch
    assert recipe.args.per_device_train_batch_size * recipe.args.gradient_accumulation_steps == 8
    if data_format == "chat":
        # assistant-only loss: the prompts' tokens are masked out of the labels
        batch = next(iter(recipe.trainer.get_train_dataloader()))
        assert (batch["labels"] == -100).sum() > 0
    assert recipe.metrics.eval_loss is not None and recipe.metrics.train_tokens > 0


def test_packed_batches_have_no_padding_and_no_cross_attention(tmp_path, models_dir):
    recipe = Recipe(tiny_run(), env_for(tmp_path, models_dir))
    recipe.setup()
    batch = next(iter(recipe.trainer.get_train_dataloader()))
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1  # one flattened row, no pads
    positions = batch["position_ids"][0]
    starts = (positions == 0).nonzero().flatten().tolist()
    assert len(starts) > 1
    first, second = starts[0], starts[1]
    end = starts[2] if len(starts) > 2 else positions.numel()
    model = recipe.trainer.model.eval()
    with torch.no_grad():  # the call TRL makes in compute_loss: position_ids, no cache
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        alone = model(input_ids=batch["input_ids"][:, second:end], use_cache=False).logits
    torch.testing.assert_close(packed[:, second:end], alone, atol=1e-5, rtol=1e-4)
    assert first == 0


def test_activation_checkpointing_only_when_asked(tmp_path, models_dir):
    from trl import SFTConfig

    recipe = Recipe(tiny_run(), env_for(tmp_path, models_dir))
    args = recipe._setup_args("sft")
    assert SFTConfig(output_dir=str(tmp_path), use_cpu=True).gradient_checkpointing is True  # TRL default
    assert (args.activation_checkpointing, args.gradient_checkpointing) == (False, False)


def test_bf16_trains_under_cpu_autocast_where_the_cpu_has_native_bf16(tmp_path, models_dir, monkeypatch):
    """precision: bf16 on a CPU with AVX512-BF16/AMX: bf16 base weights and the Trainer's CPU autocast
    (accelerate's mixed precision); the LoRA weights stay fp32. (This machine may only emulate bf16.)"""
    monkeypatch.setattr(modeling, "native_bf16", lambda cuda: True)
    recipe = Recipe(tiny_run(training={"maxSteps": 2, "precision": "bf16"}, evaluation={"tasks": None}),
                    env_for(tmp_path, models_dir))
    recipe.setup()
    assert recipe.args.bf16 and recipe.trainer.accelerator.mixed_precision == "bf16"
    frozen = {p.dtype for p in recipe.trainer.model.parameters() if not p.requires_grad}
    trainable = {p.dtype for p in recipe.trainer.model.parameters() if p.requires_grad}
    assert (frozen, trainable) == ({torch.bfloat16}, {torch.float32})
    result = recipe.trainer.train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))
