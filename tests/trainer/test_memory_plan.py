"""memory_plan.py: parameter counts, the handoff's CodeLlama-70B job per device, sharding and refusals.

The formulas are checked against the libraries they describe where that is cheap: parameter counts
against transformers and peft on the meta device, NF4 storage against bitsandbytes, and the
per-layer activations against what autograd really keeps for a small Llama on the CPU.
"""

from __future__ import annotations

import pytest

from codex_trainer import memory_plan
from codex_trainer.errors import InvalidSpecError
from codex_trainer.memory_plan import ModelShape, PlanInputs, plan
from codex_trainer.planning import choose_sharding, refusal

# codellama/CodeLlama-70b-Instruct-hf config.json (the fields the plan reads, and a few beside them).
CODELLAMA_70B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_act": "silu",
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "vocab_size": 32016,
    "rope_theta": 1000000,
    "max_position_embeddings": 16384,
    "tie_word_embeddings": False,
}
# HuggingFaceTB/SmolLM2-135M config.json (the fields the plan reads).
SMOLLM2_135M = {
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
}
# Shaped like the embedded tiny-llama (codex_trainer.embedded), with a 512-token vocabulary.
TINY_LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 512,
    "tie_word_embeddings": True,
}
QKVO = ("q_proj", "v_proj", "k_proj", "o_proj")
CONFIGS = [TINY_LLAMA, SMOLLM2_135M, CODELLAMA_70B]
CONFIG_IDS = ["tiny-llama", "smollm2-135m", "codellama-70b"]


def handoff_job(config=CODELLAMA_70B, **overrides) -> PlanInputs:
    """The handoff's job: LoRA r=16 on q/k/v/o of a bf16 CodeLlama-70B, per-device batch 4 at maxSeqLength
    4096 with gradient checkpointing, FSDP over 4 processes on 80 GiB devices.

    maxSeqLength stays 4096 because the plan fits it (72.5 GiB of 80) even with batch 4; 2048 would plan
    56.2 GiB. The example therefore states 4096.
    """
    job = dict(shape=ModelShape.from_config(config), dtype="bf16", quantization="none", lora_r=16, lora_targets=QKVO,
               lora_dropout=0.05, sharding="fsdp", world_size=4, micro_batch=4, seq_len=4096,
               gradient_checkpointing=True, cpu_offload=False, device_memory_gib=80.0)
    return PlanInputs(**{**job, **overrides})


@pytest.mark.parametrize("config,exact,published", [
    (TINY_LLAMA, 106_816, 106_816),
    (SMOLLM2_135M, 134_515_008, 134.5e6),
    (CODELLAMA_70B, 68_976_910_336, 68.98e9),
], ids=CONFIG_IDS)
def test_parameter_count(config, exact, published):
    parameters = ModelShape.from_config(config).parameters
    assert parameters == exact
    assert parameters == pytest.approx(published, rel=0.005)


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_parameter_count_is_what_transformers_builds(config):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    fields = {key: value for key, value in config.items() if key not in ("architectures", "model_type")}
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**fields))
    assert ModelShape.from_config(config).parameters == model.num_parameters()


@pytest.mark.parametrize("config,r,targets,expected", [
    (TINY_LLAMA, 16, ("all-linear",), 32_768),
    (SMOLLM2_135M, 8, ("q_proj", "v_proj"), 460_800),
    (SMOLLM2_135M, 16, ("model.layers.0.self_attn.q_proj", "q_proj"), 552_960),
    (CODELLAMA_70B, 16, QKVO, 65_536_000),
    (CODELLAMA_70B, 16, ("all-linear",), 207_093_760),
], ids=["tiny-all-linear", "smollm2-q-v", "smollm2-dotted-and-repeated", "codellama-qkvo", "codellama-all-linear"])
def test_lora_parameters(config, r, targets, expected):
    assert ModelShape.from_config(config).lora_parameters(r, targets) == expected


@pytest.mark.parametrize("config,r,targets", [
    (SMOLLM2_135M, 8, ("q_proj", "v_proj")),
    (SMOLLM2_135M, 16, ("all-linear",)),
    (CODELLAMA_70B, 16, QKVO),
], ids=["smollm2-q-v", "smollm2-all-linear", "codellama-qkvo"])
def test_lora_parameters_are_what_peft_adds(config, r, targets):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    fields = {key: value for key, value in config.items() if key not in ("architectures", "model_type")}
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**fields))
    lora = peft.LoraConfig(r=r, target_modules="all-linear" if targets == ("all-linear",) else list(targets),
                           task_type="CAUSAL_LM")
    trainable, _ = peft.get_peft_model(model, lora).get_nb_trainable_parameters()
    assert ModelShape.from_config(config).lora_parameters(r, targets) == trainable


@pytest.mark.parametrize("overrides,fits,per_device_gib", [
    ({}, True, 72.5),
    ({"sharding": "none"}, False, 170.1),
    ({"quantization": "4bit", "sharding": "none", "world_size": 1}, True, 71.2),
    ({"seq_len": 2048}, True, 56.2),
    ({"world_size": 8}, True, 55.5),
    ({"cpu_offload": True}, True, 38.5),
], ids=["fsdp-4x80", "data-parallel-4x80", "qlora-1x80", "fsdp-4x80-seq2048", "fsdp-8x80", "fsdp-4x80-cpu-offload"])
def test_codellama_70b_per_device(overrides, fits, per_device_gib):
    planned = plan(handoff_job(**overrides))
    assert (planned.fits, round(planned.per_device_gib, 1)) == (fits, per_device_gib)


def test_handoff_job_status():
    assert plan(handoff_job()).to_status() == {
        "parameters": 68_976_910_336,
        "trainableParameters": 65_536_000,
        "perDeviceGiB": 72.5,
        "deviceGiB": 80.0,
        "sharding": "fsdp",
        "fits": True,
        "breakdownGiB": {"baseWeights": 32.12, "workingWeights": 4.16, "adapters": 0.24, "activations": 26.19,
                         "logits": 4.89, "overhead": 4.88},
        "assumptions": [
            "base weights: bf16, 2 B a parameter",
            "FSDP full shard over 4 process(es): weights and adapter state 1/4 on each device; 2 decoder layers "
            "and the embeddings/norm/lm_head unit gathered whole",
            "adapters: LoRA r=16 on q_proj,k_proj,v_proj,o_proj, fp32 with gradients and AdamW moments, "
            "16 B a parameter",
            "activations: SDPA/flash attention (no seq x seq scores kept), 373120 B per layer and token, "
            "counted after Korthikanti et al. 2022",
            "gradient checkpointing on: each layer keeps its input, one layer is recomputed at a time",
            "logits: 4x4096x32016, 10 B each",
            "overhead: 1.5 GiB CUDA context and workspaces, plus 5% allocator slack",
        ],
    }


def test_breakdown_terms():
    """Each term by hand for the handoff's job, in bytes."""
    shape, tokens = ModelShape.from_config(CODELLAMA_70B), 4 * 4096
    layer = 855_654_400  # 4 attention + 3 MLP projections + two norms
    activations = tokens * (80 * 2 * 8192 + 373_120 + 4 * 8192)
    expected = {
        "base_weights": shape.parameters * 2 // 4,
        "working_weights": 2 * layer * 2 + (2 * 32016 * 8192 + 8192) * 2,
        "adapters": 65_536_000 * 16 // 4,
        "activations": activations,
        "logits": tokens * 32016 * 10,
    }
    breakdown = plan(handoff_job()).breakdown
    assert {name: getattr(breakdown, name) for name in expected} == expected
    assert breakdown.overhead == round(1.5 * 2**30 + 0.05 * sum(expected.values()))


def test_data_parallel_refusal_names_what_to_change():
    job = handoff_job(sharding="none")
    message = refusal(plan(job), job)
    assert message == (
        "spec.resources: the run needs 170.1 GiB per device and the device has 80.0 GiB: "
        "set spec.training.sharding: fsdp (72.5 GiB), "
        "raise spec.resources.gpusPerNode (or spec.resources.nodes) to 8 GPUs in all with spec.training.sharding: "
        "fsdp (55.5 GiB), "
        "set spec.lora.quantization: 4bit (71.2 GiB), "
        "lower spec.training.perDeviceBatchSize to 2 (153.7 GiB, not enough alone), "
        "or lower spec.training.maxSeqLength to 2048 (153.7 GiB, not enough alone)"
    )
    for field in ("spec.training.sharding", "spec.lora.quantization", "spec.resources.gpusPerNode"):
        assert field in message


@pytest.mark.parametrize("overrides,named,not_named", [
    ({"quantization": "4bit", "world_size": 1, "device_memory_gib": 24.0},
     ["spec.resources.gpusPerNode", "spec.training.perDeviceBatchSize", "spec.training.maxSeqLength"],
     ["set spec.training.sharding", "spec.lora.quantization", "spec.training.gradientCheckpointing"]),
    ({"quantization": "4bit", "sharding": "none", "world_size": 1, "gradient_checkpointing": False},
     ["spec.training.gradientCheckpointing (71.2 GiB)", "spec.training.maxSeqLength to 256 (68.8 GiB)"],
     ["spec.lora.quantization", "set spec.training.sharding"]),
    ({"cpu_offload": True, "device_memory_gib": 16.0},
     ["spec.lora.quantization: 4bit (36.5 GiB, not enough alone)", "perDeviceBatchSize to 1 (14.0 GiB)"],
     ["spec.resources.gpusPerNode", "spec.training.gradientCheckpointing"]),
    ({"micro_batch": 1, "seq_len": 1, "gradient_checkpointing": True, "quantization": "4bit", "world_size": 1,
      "cpu_offload": True, "device_memory_gib": 2.0},
     ["no spec field the memory plan knows of lowers it"], ["spec.lora", "spec.training."]),
], ids=["qlora-fsdp-one-24gib-gpu", "qlora-without-checkpointing", "cpu-offload-16gib", "nothing-left-to-lower"])
def test_refusal_suggests_only_what_changes_something(overrides, named, not_named):
    job = handoff_job(**overrides)
    message = refusal(plan(job), job)
    assert message.startswith("spec.resources: the run needs ")
    assert [text for text in named if text not in message] == []
    assert [text for text in not_named if text in message] == []


def test_no_refusal_when_it_fits():
    job = handoff_job()
    assert refusal(plan(job), job) is None


@pytest.mark.parametrize("requested,config,overrides,expected", [
    ("auto", CODELLAMA_70B, {}, "fsdp"),
    ("auto", CODELLAMA_70B, {"world_size": 1}, "none"),
    ("auto", SMOLLM2_135M, {}, "none"),
    ("auto", CODELLAMA_70B, {"cpu_offload": True}, "fsdp"),
    ("none", CODELLAMA_70B, {}, "none"),
    ("fsdp", SMOLLM2_135M, {}, "fsdp"),
], ids=["70b-needs-fsdp", "70b-one-process-stays-none", "135m-data-parallel-fits", "offload-is-fsdp",
        "explicit-none", "explicit-fsdp"])
def test_choose_sharding(requested, config, overrides, expected):
    assert choose_sharding(requested, handoff_job(config, **overrides)) == expected


def test_choose_sharding_rejects_unknown_value():
    with pytest.raises(InvalidSpecError, match=r"^spec\.training\.sharding: 'zero3' is not one of auto, none, fsdp$"):
        choose_sharding("zero3", handoff_job())


@pytest.mark.parametrize("key", memory_plan.REQUIRED_CONFIG_KEYS)
def test_missing_config_key_is_named(key):
    config = {name: value for name, value in CODELLAMA_70B.items() if name != key}
    with pytest.raises(InvalidSpecError) as error:
        ModelShape.from_config(config)
    assert str(error.value) == f"config.json: {key} missing; the memory plan needs a Llama-style decoder config"


@pytest.mark.parametrize("changes,message", [
    ({"hidden_size": "8192"}, "config.json: hidden_size must be a positive integer, got '8192'"),
    ({"num_key_value_heads": 0}, "config.json: num_key_value_heads must be a positive integer, got 0"),
    ({"num_attention_heads": 60}, "config.json: num_attention_heads 60 does not divide hidden_size 8192"),
], ids=["string", "zero", "heads-do-not-divide"])
def test_bad_config_values_are_named(changes, message):
    with pytest.raises(InvalidSpecError) as error:
        ModelShape.from_config({**CODELLAMA_70B, **changes})
    assert str(error.value) == message


@pytest.mark.parametrize("changes,shape", [
    ({"num_key_value_heads": None}, {"num_kv_heads": 64, "head_dim": 128}),
    ({"num_attention_heads": 60, "head_dim": 128}, {"num_kv_heads": 8, "head_dim": 128}),
    ({"attention_bias": True, "mlp_bias": True}, {"num_kv_heads": 8, "head_dim": 128}),
], ids=["kv-heads-default-to-heads", "explicit-head-dim", "biases"])
def test_config_defaults(changes, shape):
    model = ModelShape.from_config({**CODELLAMA_70B, **changes})
    assert {"num_kv_heads": model.num_kv_heads, "head_dim": model.head_dim} == shape


def test_biases_count():
    plain, biased = (ModelShape.from_config({**CODELLAMA_70B, "attention_bias": flag, "mlp_bias": flag})
                     for flag in (False, True))
    assert biased.parameters - plain.parameters == 80 * (8192 + 1024 + 1024 + 8192 + 28672 + 28672 + 8192)


@pytest.mark.parametrize("overrides,message", [
    ({"lora_targets": ("q_proj", "lm_head")},
     "spec.lora.targetModules: lm_head not in a Llama layer; the memory plan knows q_proj, k_proj, v_proj, o_proj, "
     "gate_proj, up_proj, down_proj and all-linear"),
    ({"sharding": "none", "cpu_offload": True},
     "memory plan: CPU offload is FSDP's and needs spec.training.sharding: fsdp"),
    ({"quantization": "3bit", "micro_batch": 0},
     "memory plan: quantization '3bit' is not none or 4bit or 8bit; micro_batch 0 is below 1"),
], ids=["unknown-target", "offload-without-fsdp", "bad-quantization-and-batch"])
def test_bad_inputs_are_named(overrides, message):
    with pytest.raises(InvalidSpecError) as error:
        handoff_job(**overrides)
    assert str(error.value) == message


def test_sharding_and_offload_divide_what_they_should():
    data_parallel, sharded = plan(handoff_job(sharding="none")).breakdown, plan(handoff_job()).breakdown
    offloaded = plan(handoff_job(cpu_offload=True)).breakdown
    assert sharded.base_weights == round(data_parallel.base_weights / 4)
    assert sharded.adapters == round(data_parallel.adapters / 4)
    assert (offloaded.base_weights, offloaded.adapters) == (0, 0)
    assert (offloaded.working_weights, data_parallel.working_weights) == (sharded.working_weights, 0)
    assert sharded.activations == data_parallel.activations == offloaded.activations


@pytest.mark.parametrize("quantization,dtype_bytes,expected", [
    ("none", 2, 8192 * 28672 * 2),
    ("none", 4, 8192 * 28672 * 4),
    ("4bit", 2, 8192 * 28672 // 2 + 8192 * 28672 // 64 + 8192 * 28672 // (64 * 256) * 4),
    ("8bit", 2, 8192 * 28672 + 28672 * 4),
], ids=["bf16", "fp32", "nf4-double-quant", "int8-row-scales"])
def test_frozen_linear_bytes(quantization, dtype_bytes, expected):
    assert memory_plan.quantized_linear_bytes(8192, 28672, quantization, dtype_bytes) == expected


def test_nf4_storage_is_what_bitsandbytes_keeps():
    torch = pytest.importorskip("torch")
    functional = pytest.importorskip("bitsandbytes.functional")
    weight = torch.randn(256, 1024, dtype=torch.bfloat16)
    packed, state = functional.quantize_4bit(weight, blocksize=64, compress_statistics=True, quant_type="nf4")
    stored = sum(t.numel() * t.element_size() for t in (packed, state.absmax, state.state2.absmax))
    assert stored == weight.numel() * memory_plan.NF4_BYTES_PER_WEIGHT


SMALL_LLAMA = {"hidden_size": 256, "intermediate_size": 896, "num_attention_heads": 8, "num_key_value_heads": 2,
               "vocab_size": 128}


def kept_for_backward_per_token(layers: int, targets: tuple[str, ...], checkpointing: bool) -> float:
    """Bytes autograd keeps (weights aside) over a bf16-autocast forward of a small LoRA Llama, per token."""
    torch, transformers, peft = (pytest.importorskip(name) for name in ("torch", "transformers", "peft"))
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(num_hidden_layers=layers, **SMALL_LLAMA))
    lora = peft.LoraConfig(r=8, lora_dropout=0.0, task_type="CAUSAL_LM",
                           target_modules="all-linear" if targets == ("all-linear",) else list(targets))
    model = peft.get_peft_model(model.to(torch.bfloat16), lora)
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    weights = {parameter.untyped_storage().data_ptr() for parameter in model.parameters()}
    kept: dict[int, int] = {}

    def keep(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    batch, length = 4, 128
    ids = torch.randint(0, SMALL_LLAMA["vocab_size"], (batch, length))
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        model(input_ids=ids, labels=ids)
    return sum(kept.values()) / (batch * length)


@pytest.mark.parametrize("targets,checkpointing", [
    (QKVO, False), (("all-linear",), False), (("all-linear",), True),
], ids=["qkvo", "all-linear", "all-linear-checkpointed"])
def test_layer_activations_are_what_autograd_keeps(targets, checkpointing):
    """Two layers more keep twice the planned layer: within 2% (the rest is cos/sin and autocast's copies of
    the adapter weights). Dropout is off, since the CPU keeps its mask in fp32 where CUDA keeps a bool."""
    measured = (kept_for_backward_per_token(4, targets, checkpointing)
                - kept_for_backward_per_token(2, targets, checkpointing)) / 2
    shape = ModelShape.from_config({**SMALL_LLAMA, "num_hidden_layers": 2})
    job = PlanInputs(shape=shape, dtype="bf16", quantization="none", lora_r=8, lora_targets=targets, lora_dropout=0.0,
                     sharding="none", world_size=1, micro_batch=4, seq_len=128,
                     gradient_checkpointing=checkpointing, cpu_offload=False, device_memory_gib=80.0)
    planned = 2 * shape.hidden_size if checkpointing else memory_plan.layer_activation_bytes_per_token(job)
    assert measured == pytest.approx(planned, rel=0.02)


def _example_spec(**training):
    from pathlib import Path

    import yaml
    from codex_api import CodexTrainingRun, parse

    document = yaml.safe_load((Path(__file__).parents[2] / "examples" / "run-codellama-70b.yaml").read_text())
    document["spec"]["training"].update(training)
    return parse(CodexTrainingRun, document).spec


def test_the_70b_example_is_planned_sharded_and_fits_four_80gib_gpus():
    from codex_trainer.planning import DeviceMemory, plan_run

    planned = plan_run(_example_spec(), CODELLAMA_70B, 4, DeviceMemory(80.0, "spec"))
    assert planned.sharding == "fsdp"
    assert {key: planned.status[key] for key in ("parameters", "worldSize", "perDeviceGiB", "deviceGiB", "fits",
                                                 "deviceMemorySource")} == {
        "parameters": 68_976_910_336, "worldSize": 4, "perDeviceGiB": 72.5, "deviceGiB": 80.0, "fits": True,
        "deviceMemorySource": "spec"}
    assert plan_run(_example_spec(sharding="auto"), CODELLAMA_70B, 4, DeviceMemory(80.0, "gpu")).sharding == "fsdp"


def test_the_70b_example_data_parallel_is_refused_naming_the_fields():
    from codex_trainer.planning import DeviceMemory, PlanRefused, plan_run

    with pytest.raises(PlanRefused) as refused:
        plan_run(_example_spec(sharding="none"), CODELLAMA_70B, 4, DeviceMemory(80.0, "gpu"))
    message = str(refused.value)
    assert message.startswith("spec.resources: the run needs 170.1 GiB per device and the device has 80.0 GiB: ")
    for field in ("spec.training.sharding: fsdp", "spec.resources.gpusPerNode", "spec.lora.quantization: 4bit"):
        assert field in message
    assert refused.value.status["fits"] is False and refused.value.status["sharding"] == "none"


def test_the_70b_example_with_qlora_fits_one_80gib_gpu():
    from codex_trainer.planning import DeviceMemory, plan_run

    spec = _example_spec(sharding="none").model_copy(deep=True)
    spec.lora.quantization = "4bit"
    planned = plan_run(spec, CODELLAMA_70B, 1, DeviceMemory(80.0, "gpu"))
    assert (planned.sharding, planned.status["fits"], planned.status["perDeviceGiB"]) == ("none", True, 71.2)


def test_an_unplannable_config_is_not_planned_and_trains_as_asked():
    from codex_trainer.planning import DeviceMemory, RunPlan, plan_run

    gpt2 = {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257}
    assert plan_run(_example_spec(sharding="auto"), gpt2, 4, DeviceMemory(80.0, "gpu")) == RunPlan("none", None)
    embeddings = _example_spec(sharding="fsdp").model_copy(deep=True)
    embeddings.lora.target_modules = ["q_proj", "embed_tokens"]
    assert plan_run(embeddings, CODELLAMA_70B, 4, DeviceMemory(80.0, "gpu")) == RunPlan("fsdp", None)


@pytest.mark.parametrize("gpu,spec_gib,env,expected", [
    (80 * 2**30, 40.0, "24", (80.0, "gpu")),
    (None, 40.0, "24", (40.0, "spec")),
    (None, None, "24", (24.0, "operator")),
    (None, None, "", (None, "unknown")),
], ids=["gpu-first", "then-spec", "then-operator", "unknown"])
def test_device_memory_comes_from_the_gpu_then_the_spec_then_the_operator(gpu, spec_gib, env, expected):
    from codex_trainer.planning import ENV_GPU_MEMORY_GIB, device_memory

    spec = _example_spec()
    spec.resources.gpu_memory_gib = spec_gib
    found = device_memory(spec, {ENV_GPU_MEMORY_GIB: env}, gpu_total_bytes=lambda: gpu)
    assert (found.gib, found.source) == expected


def test_a_bad_operator_default_is_named():
    from codex_trainer.planning import ENV_GPU_MEMORY_GIB, device_memory

    spec = _example_spec()
    spec.resources.gpu_memory_gib = None
    with pytest.raises(InvalidSpecError, match=r"^env CODEX_GPU_MEMORY_GIB: expected GiB as a number, got 'lots'$"):
        device_memory(spec, {ENV_GPU_MEMORY_GIB: "lots"}, gpu_total_bytes=lambda: None)
