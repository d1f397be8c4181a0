"""CodexTrainingRun: fine-tune a base causal LM with LoRA/QLoRA, evaluate it, publish the adapter."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import Field, model_validator
from pydantic.alias_generators import to_snake

from .base import ApiModel, Rule, at_most_one, at_most_one_rule
from .common import (IMAGE_PATTERN, LABEL_VALUE_PATTERN, NAME_PATTERN, QUANTITY_PATTERN,
                     REVISION_PATTERN, DataSource, Labels, ModelSource, Name, ObjectMeta, PvcPath,
                     SecretKeyRef, Toleration, extended_resource_rule, gpu_resource_field, labels_rule, object_name_rule,
                     refuse_inline_secrets)
from .evaluation import Evaluation
# The evaluation and status types live in their own modules; they are imported here too so that
# ``from codex_api.training_run import Gates`` (and the rest) keeps working for every importer.
from .evaluation import DEFAULT_SAMPLES_PER_TASK, Gate, Gates, Thresholds  # noqa: F401
from .run_status import Artifact, CodexTrainingRunStatus, Lineage, Metrics, Phase, Progress  # noqa: F401

KIND = "CodexTrainingRun"
PLURAL = "codextrainingruns"

DatasetFormat = Literal["prompt-completion", "chat", "preference", "text"]
# The spec fields (wire names) that define what is trained, so a started run may not change them. Read by
# the CEL transition rules below, the Job builder's training hashes and the trainer's resume check.
IMMUTABLE_FIELDS = ("baseModel", "dataset", "method", "lora", "training")


class Dataset(ApiModel):
    """The training data."""

    source: DataSource = Field(description="source says where the records come from.")
    format: DatasetFormat = Field(
        "prompt-completion",
        description="format of each record: \"prompt-completion\" ({prompt, completion} JSONL), \"chat\" "
        "({messages: [{role, content}]}), \"preference\" ({prompt, chosen, rejected}, for method dpo) or \"text\" "
        "({text}, a plain corpus). Defaults to prompt-completion.",
    )
    validation_split: float = Field(
        0.1,
        description="validationSplit is the fraction of records held out for eval loss and perplexity, "
        "strictly between 0 and 0.5. Defaults to 0.1.",
        gt=0,
        lt=0.5,
    )
    seed: int = Field(1337, description="seed makes the train/validation split deterministic. Defaults to 1337.")
    max_records: Optional[int] = Field(
        None, description="maxRecords caps how many records are read. Unset reads them all.", ge=1
    )


class Lora(ApiModel):
    """LoRA adapter settings (peft.LoraConfig)."""

    r: int = Field(16, description="r is the LoRA rank, at least 1. Defaults to 16.", ge=1, le=1024)
    alpha: int = Field(32, description="alpha is the LoRA scaling numerator. Defaults to 32.", ge=1)
    dropout: float = Field(0.05, description="dropout on the LoRA inputs, in [0, 1). Defaults to 0.05.", ge=0, lt=1)
    target_modules: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=128)]] = Field(
        default_factory=lambda: ["all-linear"],
        description="targetModules are the module names that get adapters, or [\"all-linear\"] for every linear "
        "layer but the output head. Defaults to [\"all-linear\"].",
        min_length=1,
        max_length=64,
    )
    quantization: Literal["none", "4bit"] = Field(
        "none",
        description="quantization of the frozen base weights: \"none\", or \"4bit\" for QLoRA (NF4 with "
        "bitsandbytes; on a GPU, or on CPU where bitsandbytes has its CPU backend). Defaults to none.",
    )


class Training(ApiModel):
    """Optimisation settings (transformers.TrainingArguments / TRL configs)."""

    __rules__ = (
        Rule(
            cel="!has(self.warmupRatio) || !has(self.warmupSteps)",
            message="set warmupRatio or warmupSteps, not both",
            check=lambda m: at_most_one(m, "warmup_ratio", "warmup_steps"),
            field="warmupSteps",
        ),
        Rule(
            cel="!has(self.cpuOffload) || !self.cpuOffload || !has(self.sharding) || self.sharding != 'none'",
            message="cpuOffload is FSDP's: it needs sharding fsdp or auto",
            check=lambda m: not m.cpu_offload or m.sharding != "none",
            field="cpuOffload",
        ),
    )

    epochs: float = Field(1.0, description="epochs is the number of passes over the data. Defaults to 1.", gt=0)
    max_steps: Optional[int] = Field(
        None, description="maxSteps, when set, stops training after this many optimizer steps and overrides epochs.",
        ge=1,
    )
    learning_rate: float = Field(2e-4, description="learningRate is the peak learning rate. Defaults to 2e-4.", gt=0)
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "cosine", description="scheduler is the learning-rate schedule. Defaults to cosine."
    )
    warmup_ratio: Optional[float] = Field(
        None, description="warmupRatio is the fraction of steps spent warming up. Unset means 0.03 unless "
        "warmupSteps is set.", ge=0, lt=1,
    )
    warmup_steps: Optional[int] = Field(None, description="warmupSteps is an absolute number of warmup steps.", ge=0)
    per_device_batch_size: int = Field(
        4, description="perDeviceBatchSize is the micro-batch size on each GPU. Defaults to 4.", ge=1, le=4096
    )
    gradient_accumulation_steps: int = Field(
        1, description="gradientAccumulationSteps micro-batches make one optimizer step. Defaults to 1.", ge=1
    )
    max_seq_length: int = Field(
        1024, description="maxSeqLength truncates (or packs to) this many tokens. Defaults to 1024.", ge=8, le=131072
    )
    packing: bool = Field(
        True, description="packing concatenates examples into full-length rows without cross-attention between "
        "them. Defaults to true.",
    )
    completion_only_loss: bool = Field(
        True, description="completionOnlyLoss trains only on completion (assistant) tokens, not on prompts. "
        "Defaults to true.",
    )
    precision: Literal["bf16", "fp16", "fp32"] = Field(
        "bf16", description="precision of training compute. On CPU, bf16 trains under autocast where the CPU computes "
        "bf16 natively (AVX512-BF16 or AMX); otherwise bf16 and fp16 fall back to fp32 on CPU. Defaults to bf16."
    )
    gradient_checkpointing: bool = Field(
        False, description="gradientCheckpointing trades compute for activation memory (FSDP's activation "
        "checkpointing under sharding). Defaults to false."
    )
    sharding: Literal["auto", "none", "fsdp"] = Field(
        "auto", description="sharding splits the frozen base model, the adapters and the optimizer state across "
        "every process of the run, across GPUs and nodes: \"fsdp\" is FSDP2 full shard (through accelerate), "
        "\"none\" is data parallel (each process holds the whole model), and \"auto\" is fsdp when the memory plan "
        "says the run does not fit one device data-parallel. Defaults to auto.",
    )
    cpu_offload: bool = Field(
        False, description="cpuOffload keeps the sharded parameters, gradients and optimizer state in host "
        "memory (FSDP's CPU offload): slower, for models that do not fit the GPUs even sharded. Needs sharding "
        "fsdp or auto. Defaults to false.",
    )
    weight_decay: float = Field(0.0, description="weightDecay for AdamW. Defaults to 0.", ge=0)
    max_grad_norm: float = Field(1.0, description="maxGradNorm clips gradients. Defaults to 1.0.", gt=0)
    dpo_beta: float = Field(0.1, description="dpoBeta is the DPO temperature (method dpo only). Defaults to 0.1.", gt=0)
    seed: int = Field(1337, description="seed for weight init, dropout and data order. Defaults to 1337.")


class Resources(ApiModel):
    """Compute for the training Job."""

    __rules__ = (labels_rule("nodeSelector"), extended_resource_rule("gpuResourceName"))

    nodes: int = Field(1, description="nodes is the number of pods (torchrun nodes). Defaults to 1.", ge=1, le=512)
    gpus_per_node: int = Field(1, description="gpusPerNode is the GPUs each pod asks for. Defaults to 1.", ge=0, le=16)
    gpu_resource_name: str = gpu_resource_field()
    gpu_memory_gib: Optional[float] = Field(
        None, alias="gpuMemoryGiB", description="gpuMemoryGiB is one GPU's memory, in GiB, for the memory plan "
        "when the trainer cannot read it from the device (no GPU visible, or a share of one). Unset: the GPU's "
        "own total, else the operator's default (Helm trainer.gpuMemoryGiB).", gt=0, le=4096,
    )
    cpu: Optional[str] = Field(None, description="cpu request and limit per pod, such as \"8\".", pattern=QUANTITY_PATTERN, max_length=64)
    memory: Optional[str] = Field(
        None, description="memory request and limit per pod, such as \"64Gi\".", pattern=QUANTITY_PATTERN, max_length=64
    )
    node_selector: Labels = Field(
        default_factory=dict, description="nodeSelector constrains the pods to nodes with these labels. Defaults to {}."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="tolerations let the pods land on tainted GPU nodes. Defaults to [].",
        max_length=32,
    )


class Checkpointing(ApiModel):
    """Where checkpoints go and how many are kept; a retried pod resumes from the newest."""

    __rules__ = (
        at_most_one_rule("claimName", "size",
                         message="set claimName (an existing PVC) or size (a PVC the operator creates), not both"),
    )

    claim_name: Optional[str] = Field(
        None, description="claimName is an existing PVC for checkpoints. Unset with size unset means an emptyDir, "
        "which survives container restarts but not pod retries.", pattern=NAME_PATTERN, max_length=253,
    )
    size: Optional[str] = Field(
        None, description="size asks the operator to create a PVC of this size, owned by the run.",
        pattern=QUANTITY_PATTERN, max_length=64,
    )
    storage_class_name: Optional[str] = Field(
        None, description="storageClassName for the PVC the operator creates. Unset uses the cluster default.",
        pattern=NAME_PATTERN, max_length=253,
    )
    save_steps: int = Field(100, description="saveSteps is the checkpoint interval in optimizer steps. Defaults to 100.",
                            ge=1)
    keep_last: int = Field(2, description="keepLast is how many checkpoints are kept. Defaults to 2.", ge=1, le=100)


class HubDestination(ApiModel):
    """A Hugging Face Hub model repo that receives the adapter."""

    @model_validator(mode="before")
    @classmethod
    def _no_inline_token(cls, data: Any) -> Any:
        return refuse_inline_secrets(data, "tokenSecretRef")

    repo_id: str = Field(description="repoId is \"namespace/name\" of the model repo; created if missing.",
                         pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=96)
    private: bool = Field(True, description="private creates the repo as private. Defaults to true.")
    branch: str = Field("main", description="branch receives the commit. Defaults to \"main\".", max_length=255,
                        pattern=REVISION_PATTERN)
    token_secret_ref: SecretKeyRef = Field(
        description="tokenSecretRef names the Secret key holding a Hub write token. The token is passed to the "
        "trainer as HF_TOKEN by reference and never copied into the run."
    )


class Output(ApiModel):
    """Where the adapter is published: the Hub, a PVC, or both."""

    __rules__ = (
        Rule(
            cel="has(self.hub) || has(self.pvc)",
            message="set hub, pvc or both, so the adapter outlives the Job",
            check=lambda m: m.hub is not None or m.pvc is not None,
        ),
    )

    hub: Optional[HubDestination] = Field(None, description="hub pushes the adapter and its model card to the Hub.")
    pvc: Optional[PvcPath] = Field(None, description="pvc is a directory that receives the adapter and results.json.")


class JobSettings(ApiModel):
    """How the training Job is run."""

    image: Optional[str] = Field(None, description="image overrides the operator's default trainer image.",
                                 max_length=512, pattern=IMAGE_PATTERN)
    service_account_name: Optional[str] = Field(
        None, description="serviceAccountName runs the trainer as this ServiceAccount instead of the per-run one "
        "the operator creates (which may patch only this run's status).", pattern=NAME_PATTERN, max_length=253,
    )
    image_pull_secrets: list[Name] = Field(
        default_factory=list, description="imagePullSecrets are Secret names for pulling the image. Defaults to [].",
        max_length=16,
    )
    active_deadline_seconds: Optional[int] = Field(
        None, description="activeDeadlineSeconds fails the Job after this long. Unset means no deadline.", ge=1
    )
    backoff_limit: int = Field(
        3, description="backoffLimit is how many failed pods are retried (preemptions do not count). Defaults to 3.",
        ge=0, le=100,
    )
    ttl_seconds_after_finished: Optional[int] = Field(
        None, description="ttlSecondsAfterFinished deletes the finished Job after this long; the run keeps its "
        "status. Unset keeps the Job.", ge=0,
    )
    queue_name: Optional[str] = Field(
        None, description="queueName submits the Job to this Kueue LocalQueue; the Job is created suspended and "
        "Kueue admits it.", max_length=63, pattern=LABEL_VALUE_PATTERN,
    )
    suspend: bool = Field(False, description="suspend creates (or keeps) the Job suspended. Defaults to false.")


class CodexTrainingRunSpec(ApiModel):
    """CodexTrainingRunSpec is the desired training run."""

    __rules__ = tuple(
        Rule(
            cel=f"has(self.{name}) == has(oldSelf.{name}) && (!has(self.{name}) || self.{name} == oldSelf.{name})",
            message=f"spec.{name} is immutable once the run has started; create a new run instead",
            check=lambda new, old, attr=to_snake(name): getattr(new, attr) == getattr(old, attr),
            field=name,
            transition=True,
        )
        for name in IMMUTABLE_FIELDS
    ) + (
        Rule(
            cel="(has(self.method) && self.method == 'dpo') == "
            "(has(self.dataset.format) && self.dataset.format == 'preference')",
            message="method dpo needs dataset.format preference, and preference data needs method dpo",
            check=lambda m: (m.method == "dpo") == (m.dataset.format == "preference"),
            field="method",
        ),
    )

    base_model: ModelSource = Field(description="baseModel is the causal LM that is fine-tuned.")
    dataset: Dataset = Field(description="dataset is the training data.")
    method: Literal["sft", "dpo"] = Field(
        "sft", description="method is sft (supervised fine-tuning) or dpo (preference data). Defaults to sft."
    )
    lora: Lora = Field(default_factory=Lora, description="lora configures the adapter.")
    training: Training = Field(default_factory=Training, description="training holds the optimisation settings.")
    resources: Resources = Field(default_factory=Resources, description="resources for the training pods.")
    checkpointing: Checkpointing = Field(
        default_factory=Checkpointing, description="checkpointing configures save and resume."
    )
    evaluation: Evaluation = Field(default_factory=Evaluation, description="evaluation configures metrics and gates.")
    output: Output = Field(description="output says where the adapter is published.")
    job: JobSettings = Field(default_factory=JobSettings, description="job tunes the Kubernetes Job.")


class CodexTrainingRun(ApiModel):
    """CodexTrainingRun fine-tunes a base causal LM with LoRA or QLoRA, evaluates it against quality gates, and
    publishes the adapter to the Hugging Face Hub and/or a PVC."""

    __rules__ = (object_name_rule("CodexTrainingRun"),)

    api_version: Literal["codex.dev/v1alpha1"] = Field("codex.dev/v1alpha1", description="apiVersion.")
    kind: Literal["CodexTrainingRun"] = Field("CodexTrainingRun", description="kind.")
    metadata: ObjectMeta = Field(description="metadata.")
    spec: CodexTrainingRunSpec = Field(description="spec is the desired run.")
    status: Optional[CodexTrainingRunStatus] = Field(None, description="status is the observed state.")
