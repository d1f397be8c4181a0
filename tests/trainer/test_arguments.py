"""arguments.py and launcher.py: pure translations from spec and environment, table-tested."""

from __future__ import annotations

from pathlib import Path

import pytest

from codex_api.training_run import IMMUTABLE_FIELDS, CodexTrainingRunSpec, Lora, Training
from codex_trainer import arguments, launcher
from codex_trainer.errors import InvalidSpecError

SPEC = {
    "baseModel": {"embedded": "tiny-llama"},
    "dataset": {"source": {"configMap": {"name": "d", "key": "k"}}},
    "output": {"pvc": {"claimName": "out"}},
}


def spec(**overrides) -> CodexTrainingRunSpec:
    return CodexTrainingRunSpec.model_validate({**SPEC, **overrides})


@pytest.mark.parametrize("precision,cuda,bf16_ok,flags,note", [
    ("bf16", False, False, {"bf16": False, "fp16": False},
     "bf16 requested but this CPU has no native bf16 (AVX512-BF16 or AMX): training in fp32 on CPU"),
    ("bf16", False, True, {"bf16": True, "fp16": False}, None),
    ("fp16", False, True, {"bf16": False, "fp16": False}, "fp16 requested but no GPU is visible: training in fp32 on CPU"),
    ("fp16", False, False, {"bf16": False, "fp16": False}, "fp16 requested but no GPU is visible: training in fp32 on CPU"),
    ("fp32", True, True, {"bf16": False, "fp16": False}, None),
    ("bf16", True, True, {"bf16": True, "fp16": False}, None),
    ("bf16", True, False, {"bf16": False, "fp16": True}, "bf16 requested but this GPU does not support it: training in fp16"),
    ("fp16", True, True, {"bf16": False, "fp16": True}, None),
], ids=["bf16-cpu", "bf16-cpu-native", "fp16-cpu-native", "fp16-cpu", "fp32-gpu", "bf16-gpu", "bf16-old-gpu", "fp16-gpu"])
def test_precision_falls_back(precision, cuda, bf16_ok, flags, note):
    assert arguments.precision_flags(precision, cuda, bf16_ok) == (flags, note)


@pytest.mark.parametrize("training,expected", [
    ({}, 0.03), ({"warmupRatio": 0.1}, 0.1), ({"warmupSteps": 7}, 7), ({"warmupRatio": 0}, 0),
], ids=["default", "ratio", "steps", "zero"])
def test_warmup(training, expected):
    assert arguments.warmup(Training.model_validate(training)) == expected


def test_lora_and_common_arguments():
    assert arguments.lora_kwargs(Lora()) == {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05,
                                             "target_modules": "all-linear", "bias": "none", "task_type": "CAUSAL_LM"}
    assert arguments.lora_kwargs(Lora(target_modules=["q_proj", "v_proj"]))["target_modules"] == ["q_proj", "v_proj"]
    common = arguments.common_kwargs(
        spec(training={"maxSteps": 30, "gradientAccumulationSteps": 4, "gradientCheckpointing": True, "seed": 9},
             checkpointing={"saveSteps": 5, "keepLast": 3}),
        Path("/ckpt"), cuda=False, bf16_supported=False)
    assert {k: common[k] for k in ("output_dir", "max_steps", "gradient_accumulation_steps", "save_steps",
                                   "save_total_limit", "seed", "data_seed", "use_cpu", "bf16",
                                   "activation_checkpointing_kwargs", "lr_scheduler_type")} == {
        "output_dir": "/ckpt", "max_steps": 30, "gradient_accumulation_steps": 4, "save_steps": 5,
        "save_total_limit": None, "seed": 9, "data_seed": 9, "use_cpu": True, "bf16": False,
        "activation_checkpointing_kwargs": {"use_reentrant": False}, "lr_scheduler_type": "cosine"}
    defaults = arguments.common_kwargs(spec(), Path("/c"), cuda=False, bf16_supported=False)
    assert (defaults["max_steps"], defaults["activation_checkpointing"]) == (-1, False)


@pytest.mark.parametrize("data_format,method,completion_only,assistant_only", [
    ("prompt-completion", "sft", True, False),
    ("chat", "sft", None, True),
    ("text", "sft", False, False),
], ids=["prompt-completion", "chat", "text"])
def test_sft_loss_mask_per_format(data_format, method, completion_only, assistant_only):
    kwargs = arguments.sft_kwargs(spec(dataset={**SPEC["dataset"], "format": data_format}, method=method,
                                       training={"maxSeqLength": 128}))
    assert (kwargs["completion_only_loss"], kwargs["assistant_only_loss"]) == (completion_only, assistant_only)
    assert (kwargs["max_length"], kwargs["packing"], kwargs["packing_strategy"]) == (128, True, "bfd")


def test_cpu_feeds_packed_rows_one_per_micro_batch():
    packed = spec(training={"perDeviceBatchSize": 4, "gradientAccumulationSteps": 2})
    cpu = arguments.sft_kwargs(packed, cuda=False)
    assert (cpu["per_device_train_batch_size"], cpu["gradient_accumulation_steps"]) == (1, 8)
    assert "per_device_train_batch_size" not in arguments.sft_kwargs(packed, cuda=True)
    unpacked = spec(training={"perDeviceBatchSize": 4, "packing": False})
    assert "per_device_train_batch_size" not in arguments.sft_kwargs(unpacked, cuda=False)


def test_training_config_hash_covers_exactly_the_immutable_fields(monkeypatch):
    hashed = []
    monkeypatch.setattr(arguments, "canonical_hash", lambda value: hashed.append(value) or "hash")
    arguments.training_config_hash(spec())
    assert list(hashed[0]) == list(IMMUTABLE_FIELDS)


def test_training_config_hash_ignores_output_and_evaluation():
    base = arguments.training_config_hash(spec())
    assert arguments.training_config_hash(spec(output={"pvc": {"claimName": "elsewhere"}})) == base
    assert arguments.training_config_hash(spec(training={"learningRate": 0.1})) != base


@pytest.mark.parametrize("env,expected", [
    ({}, launcher.Topology()),
    ({"NNODES": "1", "NPROC_PER_NODE": "4"}, launcher.Topology(nproc_per_node=4)),
    ({"NNODES": "2", "NPROC_PER_NODE": "8", "NODE_RANK": "1", "MASTER_ADDR": "run-0.run-workers", "MASTER_PORT": "29400"},
     launcher.Topology(2, 8, 1, "run-0.run-workers", 29400)),
], ids=["unset", "one-node-four-gpus", "second-of-two-nodes"])
def test_topology_from_env(env, expected):
    assert launcher.topology_from_env(env) == expected


@pytest.mark.parametrize("env,message", [
    ({"NNODES": "two"}, "env NNODES: expected an integer, got 'two'"),
    ({"NNODES": "2", "NODE_RANK": "2", "MASTER_ADDR": "a"}, "env NODE_RANK: 2 is not below NNODES=2"),
    ({"NNODES": "2"}, "env MASTER_ADDR: required when NNODES > 1 (pod 0's address)"),
    ({"NPROC_PER_NODE": "0"}, "env NPROC_PER_NODE: must be at least 1, got 0"),
], ids=["not-int", "rank-too-high", "no-master", "zero-procs"])
def test_topology_errors_name_the_variable(env, message):
    with pytest.raises(InvalidSpecError) as caught:
        launcher.topology_from_env(env)
    assert str(caught.value) == message


def test_torchrun_argv():
    single = launcher.torchrun_argv(launcher.Topology(nproc_per_node=4), ["run", "--config", "/etc/codex/run.yaml"],
                                    python="/py")
    assert single == ["/py", "-m", "torch.distributed.run", "--nproc-per-node=4", "--max-restarts=0", "--standalone",
                      "-m", "codex_trainer.cli", "run", "--config", "/etc/codex/run.yaml"]
    multi = launcher.torchrun_argv(launcher.Topology(2, 8, 1, "run-0.w", 29500), ["run"], python="/py")
    assert multi == ["/py", "-m", "torch.distributed.run", "--nproc-per-node=8", "--max-restarts=0", "--nnodes=2",
                     "--node-rank=1", "--master-addr=run-0.w", "--master-port=29500", "-m", "codex_trainer.cli", "run"]


def test_when_to_launch_and_which_exit_code(tmp_path):
    assert not launcher.needs_torchrun(launcher.Topology(), {})
    assert launcher.needs_torchrun(launcher.Topology(nproc_per_node=2), {})
    assert not launcher.needs_torchrun(launcher.Topology(nproc_per_node=2), {"LOCAL_RANK": "0"})
    # FSDP needs a process group even on one process (CPU offload on one GPU).
    assert launcher.needs_torchrun(launcher.Topology(), {}, sharded=True)
    assert not launcher.needs_torchrun(launcher.Topology(), {"TORCHELASTIC_RUN_ID": "x"}, sharded=True)
    assert launcher.wants_sharding(Training(sharding="fsdp")) and launcher.wants_sharding(Training(cpu_offload=True))
    assert not launcher.wants_sharding(Training())
    assert launcher.node_exit_code(tmp_path, 1, 45) == 45
    assert launcher.node_exit_code(tmp_path, 0, 45) == 0
    launcher.result_file(tmp_path, 0).write_text("43")
    assert launcher.node_exit_code(tmp_path, 1, 45) == 43


@pytest.mark.parametrize("training,cuda,config", [
    (Training(), False, {"cpu_offload": False, "activation_checkpointing": False, "cpu_ram_efficient_loading": False}),
    (Training(gradient_checkpointing=True, cpu_offload=True), True,
     {"cpu_offload": True, "activation_checkpointing": True, "cpu_ram_efficient_loading": True}),
], ids=["cpu", "gpu-checkpointed-offloaded"])
def test_fsdp_arguments_are_fsdp2_full_shard_with_sharded_checkpoints(training, cuda, config):
    kwargs = arguments.sharding_kwargs(training, "fsdp", cuda)
    assert kwargs["fsdp"] is True
    assert kwargs["fsdp_config"] == {"version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                                     "reshard_after_forward": True, "state_dict_type": "SHARDED_STATE_DICT", **config}
    # FSDP's own activation checkpointing, never the Trainer's on top (an extra all-gather per layer).
    assert (kwargs["activation_checkpointing"], kwargs["activation_checkpointing_kwargs"]) == (False, None)
    assert arguments.sharding_kwargs(training, "none", cuda) == {}


def test_sft_config_accepts_the_fsdp_arguments(tmp_path):
    """transformers turns them into accelerate's FSDP2 plugin arguments."""
    from trl import SFTConfig

    config = SFTConfig(output_dir=str(tmp_path), use_cpu=True,
                       **arguments.sharding_kwargs(Training(gradient_checkpointing=True), "fsdp", False))
    assert config.fsdp_plugin_args["fsdp_version"] == 2
    assert config.fsdp_plugin_args["state_dict_type"] == "SHARDED_STATE_DICT"
    assert config.fsdp_plugin_args["activation_checkpointing"] is True
