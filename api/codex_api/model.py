"""CodexModel: serve a base model plus a LoRA adapter behind an OpenAI-compatible endpoint."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Optional

from pydantic import Field, model_validator
from pydantic.alias_generators import to_snake

from . import runtimes
from .base import ApiModel, Rule, exactly_one_rule
from .common import (CONDITIONS_FIELD, HUB_REPO_PATTERN, IMAGE_PATTERN, NAME_PATTERN,
                     QUANTITY_PATTERN, REVISION_PATTERN, Condition, Labels, ModelSource, ObjectMeta, PvcPath, SecretKeyRef,
                     Toleration, extended_resource_rule, gpu_resource_field, labels_rule, object_name_rule,
                     refuse_inline_secrets)

KIND = "CodexModel"
PLURAL = "codexmodels"

ModelPhase = Literal["Pending", "Progressing", "Available", "Degraded"]
# spec.runtime's values: the runtime catalogue's names (codex_api.runtimes).
RuntimeName = Literal[runtimes.NAMES]


class HubAdapter(ApiModel):
    """An adapter in a Hub model repo."""

    repo_id: str = Field(description="repoId of the adapter's Hub repo.", pattern=HUB_REPO_PATTERN, max_length=96)
    revision: str = Field("main", description="revision is a branch, tag or commit. Defaults to \"main\".",
                          max_length=255, pattern=REVISION_PATTERN)
    token_secret_ref: Optional[SecretKeyRef] = Field(
        None, description="tokenSecretRef names a Secret key with a Hub read token, for private adapter repos."
    )

    @model_validator(mode="before")
    @classmethod
    def _no_inline_token(cls, data: Any) -> Any:
        return refuse_inline_secrets(data, "tokenSecretRef")


class FromTrainingRun(ApiModel):
    """Serve the newest adapter that a CodexTrainingRun published and whose gates passed."""

    __rules__ = (
        exactly_one_rule("name", "selector"),
        labels_rule("selector"),
    )

    name: Optional[str] = Field(None, description="name of one CodexTrainingRun in this namespace.",
                                pattern=NAME_PATTERN, max_length=253)
    selector: Optional[Labels] = Field(
        None, description="selector picks, among the runs whose labels match, the newest Succeeded run whose gates "
        "passed; a newer passing run rolls the model forward.",
    )


class Adapter(ApiModel):
    """Where the LoRA adapter comes from: exactly one of hub, pvc or fromTrainingRun."""

    __rules__ = (
        exactly_one_rule("hub", "pvc", "fromTrainingRun"),
    )

    hub: Optional[HubAdapter] = Field(None, description="hub is an adapter repo on the Hugging Face Hub.")
    pvc: Optional[PvcPath] = Field(None, description="pvc is an adapter directory on a PVC.")
    from_training_run: Optional[FromTrainingRun] = Field(
        None, description="fromTrainingRun serves the adapter of a passing CodexTrainingRun, resolved into "
        "status.servedAdapter.",
    )


class ModelResources(ApiModel):
    """Compute for each serving pod."""

    __rules__ = (labels_rule("nodeSelector"), extended_resource_rule("gpuResourceName"))

    cpu: Optional[str] = Field(None, description="cpu request and limit, such as \"2\".", pattern=QUANTITY_PATTERN, max_length=64)
    memory: Optional[str] = Field(None, description="memory request and limit, such as \"4Gi\".",
                                  pattern=QUANTITY_PATTERN, max_length=64)
    gpus: int = Field(0, description="gpus per pod. Defaults to 0 (CPU serving, builtin runtime only).", ge=0, le=16)
    gpu_resource_name: str = gpu_resource_field()
    node_selector: Labels = Field(default_factory=dict, description="nodeSelector for the pods. Defaults to "
                                          "{}.")
    tolerations: list[Toleration] = Field(default_factory=list, description="tolerations for the pods. Defaults to "
                                          "[].")


class Autoscaling(ApiModel):
    """A HorizontalPodAutoscaler on CPU utilisation."""

    __rules__ = (
        Rule(
            cel="!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
            message="minReplicas must not exceed maxReplicas",
            check=lambda m: m.min_replicas <= m.max_replicas,
            field="minReplicas",
        ),
    )

    min_replicas: int = Field(1, description="minReplicas. Defaults to 1.", ge=1)
    max_replicas: int = Field(description="maxReplicas.", ge=1, le=1000)
    target_cpu_utilization: int = Field(
        70, description="targetCPUUtilization is the average CPU percent the HPA aims for. Defaults to 70.", ge=1, le=100
    )


class Server(ApiModel):
    """Settings of the inference server."""

    @model_validator(mode="before")
    @classmethod
    def _no_inline_key(cls, data: Any) -> Any:
        return refuse_inline_secrets(data, "apiKeySecretRef")

    max_new_tokens: int = Field(256, description="maxNewTokens caps max_tokens per request. Defaults to 256.",
                                ge=1, le=32768)
    max_prompt_tokens: int = Field(2048, description="maxPromptTokens caps the prompt length. Defaults to 2048.",
                                   ge=1, le=131072)
    api_key_secret_ref: Optional[SecretKeyRef] = Field(
        None, description="apiKeySecretRef names a Secret key holding the API key clients send as a Bearer token. "
        "Unset leaves the endpoint open.",
    )
    mask_secrets: bool = Field(True, description="maskSecrets replaces credentials (sk-, AKIA, ghp_, private keys, "
                               "...) in completions with [SECRET]. Defaults to true.")
    max_concurrency: int = Field(4, description="maxConcurrency is how many generations run at once per pod; more "
                                 "get 429 with Retry-After. Defaults to 4.", ge=1, le=1024)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="dtype the weights load and compute in. auto: the model's own dtype (vllm), fp32 on CPU "
        "and bf16 on a GPU (builtin). Defaults to auto.")
    merge_adapter: bool = Field(False, description="mergeAdapter merges the LoRA weights into the base at load "
                                "(builtin runtime) for faster generation. Defaults to false.")


class ServiceSettings(ApiModel):
    """The Service in front of the pods."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field("ClusterIP", description="type of the Service. "
                                                                   "Defaults to ClusterIP.")
    port: int = Field(8000, description="port the Service listens on. Defaults to 8000.", ge=1, le=65535)


def _cannot_load_embedded(runtime: str) -> Rule:
    """The rule a catalogue entry with ``loads_embedded=False`` adds, so the apiserver refuses the spec."""
    return Rule(
        cel=f"!has(self.runtime) || self.runtime != '{runtime}' || !has(self.baseModel) || "
            "!has(self.baseModel.embedded)",
        message=f"the {runtime} runtime cannot load an embedded model; use hub or pvc",
        check=lambda m: m.runtime != runtime or m.base_model is None or m.base_model.embedded is None,
        field="runtime",
    )


def _needs_gpu(runtime: str) -> Rule:
    """The rule a catalogue entry with ``needs_gpu`` adds: a spec with no GPU is refused at apply."""
    return Rule(
        cel=f"!has(self.runtime) || self.runtime != '{runtime}' || "
            "(has(self.resources) && has(self.resources.gpus) && self.resources.gpus >= 1)",
        message=f"the {runtime} runtime needs at least one GPU; use runtime: builtin for CPU serving",
        check=lambda m: m.runtime != runtime or m.resources.gpus >= 1,
        field="resources.gpus",
    )


def _ignores_setting(runtime: str, setting: str) -> Rule:
    """The rule that refuses a spec.server setting a runtime does not honour (rather than ignoring it)."""
    attr = to_snake(setting)
    return Rule(
        cel=f"!has(self.runtime) || self.runtime != '{runtime}' || !has(self.server) || !has(self.server.{setting})",
        message=f"{setting} is not honoured by the {runtime} runtime; remove it or use another runtime",
        check=lambda m: m.runtime != runtime or attr not in m.server.model_fields_set,
        field=f"server.{setting}",
    )


class CodexModelSpec(ApiModel):
    """CodexModelSpec is the desired inference deployment."""

    __rules__ = (
        Rule(
            cel="has(self.baseModel) || has(self.adapter.fromTrainingRun)",
            message="baseModel is required unless adapter.fromTrainingRun supplies it",
            check=lambda m: m.base_model is not None or m.adapter.from_training_run is not None,
            field="baseModel",
        ),
        *(_cannot_load_embedded(r.name) for r in runtimes.RUNTIMES if not r.loads_embedded),
        *(_needs_gpu(r.name) for r in runtimes.RUNTIMES if r.needs_gpu),
        *(_ignores_setting(r.name, setting) for r in runtimes.RUNTIMES if r.server_settings is not None
          for setting in sorted(set(Server.model_fields[a].alias or a for a in Server.model_fields)
                                - r.server_settings)),
    )

    base_model: Optional[ModelSource] = Field(
        None, description="baseModel is the model the adapter was trained on. Unset with fromTrainingRun means the "
        "run's own baseModel.",
    )
    adapter: Adapter = Field(description="adapter is the LoRA adapter to serve.")
    runtime: RuntimeName = Field(runtimes.DEFAULT, description=runtimes.field_description())
    replicas: int = Field(1, description="replicas when autoscaling is unset. Defaults to 1.", ge=0, le=1000)
    resources: ModelResources = Field(default_factory=ModelResources, description="resources per pod.")
    autoscaling: Optional[Autoscaling] = Field(None, description="autoscaling adds an HPA and overrides replicas.")
    server: Server = Field(default_factory=Server, description="server configures the inference server.")
    service: ServiceSettings = Field(default_factory=ServiceSettings, description="service exposes the pods.")
    image: Optional[str] = Field(None, description="image overrides the runtime's default image.", max_length=512,
                                 pattern=IMAGE_PATTERN)


class ServedAdapter(ApiModel):
    """The adapter the Deployment actually serves."""

    source: Literal["hub", "pvc", "trainingRun"] = Field(description="source is where it came from.")
    repo: Optional[str] = Field(None, description="repo is the Hub repo id.")
    revision: Optional[str] = Field(None, description="revision is the commit (Hub) or content hash (PVC).")
    claim_name: Optional[str] = Field(None, description="claimName is the PVC holding it.")
    path: Optional[str] = Field(None, description="path inside the PVC.")
    training_run: Optional[str] = Field(None, description="trainingRun that produced it.")
    base_model: Optional[ModelSource] = Field(
        None, description="baseModel is the run's base model the adapter is served on, when spec.baseModel is unset "
        "and a training run supplies it; it keeps the adapter servable after the run is deleted.",
    )

    @property
    def origin(self) -> Optional[str]:
        """What events, messages and the rollout annotation call it: its run, Hub repo or PVC."""
        return self.training_run or self.repo or self.claim_name


class CodexModelStatus(ApiModel):
    """CodexModelStatus is what the operator observed."""

    phase: Optional[ModelPhase] = Field(None, description="phase is Pending, Progressing, Available or Degraded.")
    conditions: list[Condition] = Field(default_factory=list, **CONDITIONS_FIELD)
    observed_generation: Optional[int] = Field(None, description="observedGeneration last reconciled.")
    endpoint: Optional[str] = Field(None, description="endpoint is the in-cluster base URL of the OpenAI API.")
    ready_replicas: int = Field(0, description="readyReplicas of the Deployment. Defaults to 0.")
    replicas: int = Field(0, description="replicas of the Deployment. Defaults to 0.")
    served_adapter: Optional[ServedAdapter] = Field(None, description="servedAdapter is the adapter being served.")
    deployment_name: Optional[str] = Field(None, description="deploymentName is the serving Deployment.")
    message: Optional[str] = Field(None, description="message is a one-line summary of the state.")
    last_updated: Optional[datetime] = Field(None, description="lastUpdated is when status last changed.")


class CodexModel(ApiModel):
    """CodexModel serves a base causal LM plus a LoRA adapter behind an OpenAI-compatible endpoint, with the
    builtin server or vLLM."""

    __rules__ = (object_name_rule("CodexModel"),)

    api_version: Literal["codex.dev/v1alpha1"] = Field("codex.dev/v1alpha1", description="apiVersion.")
    kind: Literal["CodexModel"] = Field("CodexModel", description="kind.")
    metadata: ObjectMeta = Field(description="metadata.")
    spec: CodexModelSpec = Field(description="spec is the desired deployment.")
    status: Optional[CodexModelStatus] = Field(None, description="status is the observed state.")
