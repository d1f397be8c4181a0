"""Per-device GPU memory of a LoRA/QLoRA run on a Llama-style decoder, planned from config.json alone.

:func:`plan` adds six terms, in bytes on one device (b micro-batch, s tokens, h hidden, i MLP width,
a heads, kv key/value heads, d head dim, r LoRA rank; c = 2 bytes in bf16/fp16, 4 in fp32):

- **base weights**, frozen, c B a parameter. ``4bit`` is bitsandbytes NF4 with double quantization
  (QLoRA, Dettmers et al. 2023): a 4-bit code, an 8-bit absmax per block of 64 and an fp32 absmax per
  256 blocks, 0.5 + 1/64 + 4/16384 = 0.51587 B a weight (the paper's 0.127 bits of constants).
  ``8bit`` is LLM.int8() (Dettmers et al. 2022): 1 B a weight and an fp32 scale per output row. Only
  the decoder's Linear layers are quantized; embeddings, norms and lm_head stay c B, and per-tensor
  constants (under 2 KiB) are left out. FSDP full shard (Zhao et al. 2023; ZeRO-3, Rajbhandari et al.
  2020) keeps 1/world_size of the weights per device, and CPU offload none.
- **working weights**: under FSDP, two decoder layers gathered whole (the one computing and the one
  prefetched) and the root unit (embeddings, final norm, lm_head), gathered from forward to backward.
  A quantized model adds its largest Linear dequantized to c B.
- **adapters**: r*(in+out) LoRA parameters per adapted Linear(in, out), fp32 with an fp32 gradient and
  AdamW's two fp32 moments, 16 B each; sharded under FSDP, on the host with CPU offload.
- **activations**: what autograd keeps for backward, counted tensor by tensor as Korthikanti et al.
  2022 ("Reducing Activation Recomputation in Large Transformer Models") count a GPT layer's
  s*b*h*(34 + 5*a*s/h) bytes. We assume SDPA/flash attention (transformers' default), which keeps
  no a*s*s scores, only an fp32 logsumexp; frozen Linear layers keep nothing. A Llama layer keeps,
  per token, 2*4h (both RMSNorm inputs, upcast to fp32) + c*(2*a*d + 2*kv*d) (query, attention
  output, key, value) + 4a (logsumexp) + 3*c*i (gate output, SiLU output, up output), and per
  adapted Linear(in, out) c*(in + r), its own input copy as autocast makes it, plus a 1-byte
  dropout mask of in when dropout > 0: ~45.5 s*b*h for CodeLlama-70B with q/k/v/o adapted. (An fp32
  run without dropout shares those inputs, so this overcounts it.) With gradient checkpointing (Chen
  et al. 2016) each layer keeps only its input (c*h), and one layer at a time is recomputed with all
  of that. The final norm keeps its fp32 input (4h).
- **logits**, b*s*vocab once: the c-byte logits, the loss's fp32 upcast and the fp32 log-softmax kept
  for backward, 10 B each (8 in fp32).
- **overhead**: 1.5 GiB of CUDA context and cuBLAS/NCCL workspaces, plus 5% of the tensors above for
  allocator fragmentation.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional

from .errors import InvalidSpecError

GIB = 2**30
FP32 = 4
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": FP32}
QUANTIZATIONS = ("none", "4bit", "8bit")
SHARDINGS = ("none", "fsdp")
LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ALL_LINEAR = "all-linear"
REQUIRED_CONFIG_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
NF4_BYTES_PER_WEIGHT = 0.5 + 1 / 64 + FP32 / (64 * 256)
INT8_BYTES_PER_WEIGHT = 1
INT8_SCALE_BYTES_PER_ROW = FP32
ADAPTER_BYTES_PER_PARAMETER = 4 * FP32  # weight, gradient, AdamW exp_avg and exp_avg_sq
DROPOUT_MASK_BYTES = 1  # torch's fused dropout keeps a bool mask
FSDP_GATHERED_LAYERS = 2  # the layer computing and the one prefetched
CUDA_CONTEXT_GIB = 1.5
ALLOCATOR_SLACK = 0.05


def _positive_int(config: Mapping[str, Any], key: str) -> int:
    value = config.get(key)
    if value is None:
        raise InvalidSpecError(f"config.json: {key} missing; the memory plan needs a Llama-style decoder config")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidSpecError(f"config.json: {key} must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a Llama-style decoder that decide its parameter count and memory."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "ModelShape":
        """The shape a Hugging Face config.json describes; InvalidSpecError names a missing or bad key."""
        sizes = {key: _positive_int(config, key) for key in REQUIRED_CONFIG_KEYS}
        hidden, heads = sizes["hidden_size"], sizes["num_attention_heads"]
        if config.get("head_dim") is None and hidden % heads:
            raise InvalidSpecError(f"config.json: num_attention_heads {heads} does not divide hidden_size {hidden}")
        kv_heads = heads if config.get("num_key_value_heads") is None else _positive_int(config, "num_key_value_heads")
        head_dim = hidden // heads if config.get("head_dim") is None else _positive_int(config, "head_dim")
        flags = {name: bool(config.get(key, False)) for name, key in (
            ("tie_embeddings", "tie_word_embeddings"), ("attention_bias", "attention_bias"), ("mlp_bias", "mlp_bias"))}
        return cls(hidden_size=hidden, intermediate_size=sizes["intermediate_size"],
                   num_layers=sizes["num_hidden_layers"], num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
                   vocab_size=sizes["vocab_size"], **flags)

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each Linear in one decoder layer, by module name."""
        hidden, attention, kv = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        mlp = self.intermediate_size
        return {"q_proj": (hidden, attention), "k_proj": (hidden, kv), "v_proj": (hidden, kv),
                "o_proj": (attention, hidden), "gate_proj": (hidden, mlp), "up_proj": (hidden, mlp),
                "down_proj": (mlp, hidden)}

    def layer_bias_parameters(self) -> int:
        """Biases (attention_bias, mlp_bias) and the two RMSNorm weights of a layer: what is never quantized."""
        outs = [out for _, out in self.linears().values()]
        return sum(outs[:4]) * self.attention_bias + sum(outs[4:]) * self.mlp_bias + 2 * self.hidden_size

    @property
    def root_parameters(self) -> int:
        """Embeddings, final norm and lm_head (unless tied): the parameters outside the decoder layers."""
        embeddings = self.vocab_size * self.hidden_size
        return embeddings + self.hidden_size + (0 if self.tie_embeddings else embeddings)

    @property
    def parameters(self) -> int:
        """The exact parameter count of the model (LlamaForCausalLM.num_parameters())."""
        layer = sum(fan_in * fan_out for fan_in, fan_out in self.linears().values()) + self.layer_bias_parameters()
        return self.num_layers * layer + self.root_parameters

    def lora_parameters(self, r: int, targets: tuple[str, ...]) -> int:
        """Parameters of rank-``r`` LoRA adapters on ``targets``: r*(in+out) per adapted Linear, every layer."""
        linears = self.linears()
        return self.num_layers * sum(r * sum(linears[name]) for name in resolve_targets(targets))


def resolve_targets(targets: tuple[str, ...]) -> tuple[str, ...]:
    """The Linear names ``targets`` adapt, matched as peft does (last name component); InvalidSpecError if unknown."""
    if ALL_LINEAR in targets:
        return LINEAR_MODULES
    names = {target.rsplit(".", 1)[-1] for target in targets}
    unknown = sorted(names.difference(LINEAR_MODULES))
    if unknown:
        raise InvalidSpecError(f"spec.lora.targetModules: {', '.join(unknown)} not in a Llama layer; "
                               f"the memory plan knows {', '.join(LINEAR_MODULES)} and {ALL_LINEAR}")
    return tuple(name for name in LINEAR_MODULES if name in names)


@dataclass(frozen=True)
class PlanInputs:
    """What the plan needs: the model shape and the run's spec, with world_size processes across nodes."""

    shape: ModelShape
    dtype: str
    quantization: str
    lora_r: int
    lora_targets: tuple[str, ...]
    lora_dropout: float
    sharding: str
    world_size: int
    micro_batch: int
    seq_len: int
    gradient_checkpointing: bool
    cpu_offload: bool
    device_memory_gib: Optional[float] = None  # None: unknown, the plan is made but not enforced

    def __post_init__(self) -> None:
        choices = {"dtype": tuple(DTYPE_BYTES), "quantization": QUANTIZATIONS, "sharding": SHARDINGS}
        wrong = [f"{name} {getattr(self, name)!r} is not {' or '.join(allowed)}" for name, allowed in choices.items()
                 if getattr(self, name) not in allowed]
        counts = ("lora_r", "world_size", "micro_batch", "seq_len")
        wrong += [f"{name} {getattr(self, name)} is below 1" for name in counts if getattr(self, name) < 1]
        if self.cpu_offload and self.sharding != "fsdp":
            wrong.append("CPU offload is FSDP's and needs spec.training.sharding: fsdp")
        if wrong:
            raise InvalidSpecError("memory plan: " + "; ".join(wrong))
        resolve_targets(self.lora_targets)

    @property
    def compute_bytes(self) -> int:
        """Bytes of an activation: the base dtype's, which a quantized model also computes in."""
        return DTYPE_BYTES[self.dtype]

    @property
    def shards(self) -> int:
        """How many devices split the sharded state: world_size under FSDP, else each holds all of it."""
        return self.world_size if self.sharding == "fsdp" else 1


@dataclass(frozen=True)
class Breakdown:
    """Bytes on one device, by what holds them."""

    base_weights: int
    working_weights: int
    adapters: int
    activations: int
    logits: int
    overhead: int

    @property
    def total(self) -> int:
        return sum(getattr(self, field.name) for field in fields(self))

    def gib(self) -> dict[str, float]:
        """Each term in GiB (two decimals), keyed as status.memoryPlan.breakdownGiB names it."""
        terms = {"baseWeights": self.base_weights, "workingWeights": self.working_weights, "adapters": self.adapters,
                 "activations": self.activations, "logits": self.logits, "overhead": self.overhead}
        return {key: round(value / GIB, 2) for key, value in terms.items()}


@dataclass(frozen=True)
class MemoryPlan:
    """The planned per-device memory of a run, and whether it fits the device."""

    parameters: int
    trainable_parameters: int
    breakdown: Breakdown
    per_device_gib: float
    device_gib: Optional[float]
    sharding: str
    fits: Optional[bool]
    assumptions: tuple[str, ...]

    def to_status(self) -> dict[str, Any]:
        """The plan as status.memoryPlan shows it: GiB to one decimal, the breakdown to two."""
        return {"parameters": self.parameters, "trainableParameters": self.trainable_parameters,
                "perDeviceGiB": round(self.per_device_gib, 1),
                "deviceGiB": None if self.device_gib is None else round(self.device_gib, 1),
                "sharding": self.sharding, "fits": self.fits, "breakdownGiB": self.breakdown.gib(),
                "assumptions": list(self.assumptions)}


def quantized_linear_bytes(fan_in: int, fan_out: int, quantization: str, dtype_bytes: int) -> float:
    """Bytes of one frozen Linear(fan_in, fan_out) weight as bitsandbytes (or plain torch) stores it."""
    weights = fan_in * fan_out
    if quantization == "4bit":
        return weights * NF4_BYTES_PER_WEIGHT
    if quantization == "8bit":
        return weights * INT8_BYTES_PER_WEIGHT + fan_out * INT8_SCALE_BYTES_PER_ROW
    return weights * dtype_bytes


def layer_weight_bytes(inputs: PlanInputs) -> float:
    """Bytes of one decoder layer's frozen weights: its Linear layers as stored, norms and biases in the dtype."""
    shape, dtype_bytes = inputs.shape, DTYPE_BYTES[inputs.dtype]
    linears = sum(quantized_linear_bytes(fan_in, fan_out, inputs.quantization, dtype_bytes)
                  for fan_in, fan_out in shape.linears().values())
    return linears + shape.layer_bias_parameters() * dtype_bytes


def root_weight_bytes(inputs: PlanInputs) -> int:
    """Embeddings, final norm and lm_head, never quantized."""
    return inputs.shape.root_parameters * DTYPE_BYTES[inputs.dtype]


def base_weight_bytes(inputs: PlanInputs) -> float:
    """The frozen model's share on one device: all of it, 1/world_size under FSDP, none when offloaded."""
    whole = inputs.shape.num_layers * layer_weight_bytes(inputs) + root_weight_bytes(inputs)
    return 0.0 if inputs.cpu_offload else whole / inputs.shards


def working_weight_bytes(inputs: PlanInputs) -> float:
    """Weights materialised for compute: FSDP's gathered units, and a quantized Linear dequantized to 16-bit."""
    gathered = FSDP_GATHERED_LAYERS * layer_weight_bytes(inputs) + root_weight_bytes(inputs)
    gathered = gathered if inputs.sharding == "fsdp" else 0.0
    largest_linear = max(fan_in * fan_out for fan_in, fan_out in inputs.shape.linears().values())
    return gathered + (largest_linear * inputs.compute_bytes if inputs.quantization != "none" else 0)


def adapter_bytes(inputs: PlanInputs) -> float:
    """LoRA weights, gradients and AdamW moments in fp32, sharded under FSDP, on the host when offloaded."""
    trainable = inputs.shape.lora_parameters(inputs.lora_r, inputs.lora_targets)
    return 0.0 if inputs.cpu_offload else trainable * ADAPTER_BYTES_PER_PARAMETER / inputs.shards


def layer_activation_bytes_per_token(inputs: PlanInputs) -> int:
    """Bytes one decoder layer keeps for backward per token, without checkpointing (module docstring)."""
    shape, c = inputs.shape, inputs.compute_bytes
    norms = 2 * FP32 * shape.hidden_size
    attention = c * (2 * shape.num_heads + 2 * shape.num_kv_heads) * shape.head_dim + FP32 * shape.num_heads
    mlp = 3 * c * shape.intermediate_size
    mask = DROPOUT_MASK_BYTES if inputs.lora_dropout > 0 else 0
    linears = shape.linears()
    adapters = sum((c + mask) * linears[name][0] + c * inputs.lora_r for name in resolve_targets(inputs.lora_targets))
    return norms + attention + mlp + adapters


def activation_bytes(inputs: PlanInputs) -> int:
    """Activations of one micro-batch: every layer's (or, checkpointed, every layer's input and one layer's)."""
    shape, layer = inputs.shape, layer_activation_bytes_per_token(inputs)
    if inputs.gradient_checkpointing:
        layers = shape.num_layers * inputs.compute_bytes * shape.hidden_size + layer
    else:
        layers = shape.num_layers * layer
    return inputs.micro_batch * inputs.seq_len * (layers + FP32 * shape.hidden_size)


def bytes_per_logit(inputs: PlanInputs) -> int:
    """The logit in the compute dtype, its fp32 upcast for the loss (unless fp32 already), the log-softmax."""
    return inputs.compute_bytes + (FP32 if inputs.compute_bytes != FP32 else 0) + FP32


def logit_bytes(inputs: PlanInputs) -> int:
    """The logits of one micro-batch, held once."""
    return inputs.micro_batch * inputs.seq_len * inputs.shape.vocab_size * bytes_per_logit(inputs)


def plan(inputs: PlanInputs) -> MemoryPlan:
    """The per-device memory of the run ``inputs`` describe, term by term (module docstring)."""
    tensors = (base_weight_bytes(inputs), working_weight_bytes(inputs), adapter_bytes(inputs),
               activation_bytes(inputs), logit_bytes(inputs))
    overhead = CUDA_CONTEXT_GIB * GIB + ALLOCATOR_SLACK * sum(tensors)
    breakdown = Breakdown(*(round(term) for term in (*tensors, overhead)))
    per_device_gib = breakdown.total / GIB
    return MemoryPlan(parameters=inputs.shape.parameters,
                      trainable_parameters=inputs.shape.lora_parameters(inputs.lora_r, inputs.lora_targets),
                      breakdown=breakdown, per_device_gib=per_device_gib, device_gib=inputs.device_memory_gib,
                      sharding=inputs.sharding, fits=None if inputs.device_memory_gib is None else per_device_gib <= inputs.device_memory_gib,
                      assumptions=assumptions(inputs))


def _weights_assumption(inputs: PlanInputs) -> str:
    dtype = f"{inputs.dtype}, {DTYPE_BYTES[inputs.dtype]} B a parameter"
    if inputs.quantization == "4bit":
        return (f"base weights: Linear layers in 4-bit NF4 with double quantization, {NF4_BYTES_PER_WEIGHT:.5f} B a "
                f"weight (blocksize 64, 8-bit absmax, fp32 absmax per 256 blocks); embeddings, norms, lm_head {dtype}")
    if inputs.quantization == "8bit":
        return f"base weights: Linear layers in LLM.int8(), 1 B a weight and an fp32 scale a row; the rest {dtype}"
    return f"base weights: {dtype}"


def _sharding_assumption(inputs: PlanInputs) -> str:
    if inputs.sharding == "none":
        return f"data parallel over {inputs.world_size} process(es): every device holds the whole model"
    kept = "on the host (CPU offload)" if inputs.cpu_offload else f"1/{inputs.world_size} on each device"
    return (f"FSDP full shard over {inputs.world_size} process(es): weights and adapter state {kept}; "
            f"{FSDP_GATHERED_LAYERS} decoder layers and the embeddings/norm/lm_head unit gathered whole")


def assumptions(inputs: PlanInputs) -> tuple[str, ...]:
    """What the plan assumed, in words, for status and for the refusal's reader."""
    targets = ",".join(resolve_targets(inputs.lora_targets))
    checkpointing = "each layer keeps its input, one layer is recomputed at a time" if inputs.gradient_checkpointing \
        else "every layer keeps its activations"
    return (
        _weights_assumption(inputs),
        _sharding_assumption(inputs),
        f"adapters: LoRA r={inputs.lora_r} on {targets}, fp32 with gradients and AdamW moments, "
        f"{ADAPTER_BYTES_PER_PARAMETER} B a parameter",
        f"activations: SDPA/flash attention (no seq x seq scores kept), "
        f"{layer_activation_bytes_per_token(inputs)} B per layer and token, counted after Korthikanti et al. 2022",
        f"gradient checkpointing {'on' if inputs.gradient_checkpointing else 'off'}: {checkpointing}",
        f"logits: {inputs.micro_batch}x{inputs.seq_len}x{inputs.shape.vocab_size}, {bytes_per_logit(inputs)} B each",
        f"overhead: {CUDA_CONTEXT_GIB} GiB CUDA context and workspaces, plus {ALLOCATOR_SLACK:.0%} allocator slack",
    )
