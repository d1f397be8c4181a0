"""The training Job: the trainer image, its volumes, env and a podFailurePolicy from the exit-code contract."""

from __future__ import annotations

from typing import Any, Optional

from codex_api import CodexTrainingRun, CodexTrainingRunSpec, contract, paths, stages
from codex_api.training_run import IMMUTABLE_FIELDS

from .. import names
from ..config import OperatorConfig
from .common import (
    container_security_context,
    env_field,
    env_secret,
    env_value,
    metadata,
    object_hash,
    pod_security_context,
    resource_requirements,
    sorted_env,
    tolerations,
    volume_name,
)
from .configmap import SPEC_KEY
from .pvc import checkpoint_claim_name
from .rbac import uses_own_account
from .service import RENDEZVOUS_PORT

TMP_DIR = "/tmp"
WORK_VOLUME = "work"
SHM_DIR = "/dev/shm"


def trainer_image(run: CodexTrainingRun, cfg: OperatorConfig) -> str:
    return run.spec.job.image or cfg.trainer_image


def training_hashes(spec: CodexTrainingRunSpec) -> str:
    """``field=hash`` pairs of the immutable fields, recorded on the Job to explain refused changes."""
    wire = spec.to_wire()
    return ",".join(f"{field}={object_hash(wire.get(field))[:8]}" for field in IMMUTABLE_FIELDS)


def hf_token_ref(run: CodexTrainingRun):
    """The Secret key behind the training pod's HF_TOKEN: the push token (which can also read), or else
    the read token. A staged run trains with the read token only: its publish stage pushes."""
    if run.spec.output.hub is not None and not stages.is_staged(run.spec):
        return run.spec.output.hub.token_secret_ref
    return run.spec.base_model.token_secret_ref


def data_volumes(run: CodexTrainingRun) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every ConfigMap and PVC the spec references, mounted under paths.DATA_ROOT. The output PVC is
    writable, except in a staged run's training Job: there only the publish stage writes it."""
    spec = run.spec
    config_maps = {ref.name for ref in (spec.dataset.source.config_map,
                                        spec.evaluation.tasks.config_map if spec.evaluation.tasks else None) if ref}
    readonly_claims = {ref.claim_name for ref in (spec.base_model.pvc, spec.dataset.source.pvc,
                                                 spec.evaluation.tasks.pvc if spec.evaluation.tasks else None) if ref}
    writable_claims = {spec.output.pvc.claim_name} if spec.output.pvc and not stages.is_staged(spec) else set()
    readonly_claims |= {spec.output.pvc.claim_name} - writable_claims if spec.output.pvc else set()
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for name in sorted(config_maps):
        volumes.append({"name": volume_name("cm", name), "configMap": {"name": name}})
        mounts.append({"name": volume_name("cm", name), "mountPath": str(paths.configmap_dir(name)),
                       "readOnly": True})
    for claim in sorted(readonly_claims | writable_claims):
        readonly = claim not in writable_claims
        volumes.append({"name": volume_name("pvc", claim),
                        "persistentVolumeClaim": {"claimName": claim, "readOnly": readonly}})
        mounts.append({"name": volume_name("pvc", claim), "mountPath": str(paths.pvc_dir(claim)),
                       "readOnly": readonly})
    return volumes, mounts


def _volumes(run: CodexTrainingRun) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    data, data_mounts = data_volumes(run)
    claim = checkpoint_claim_name(run)
    checkpoints = {"persistentVolumeClaim": {"claimName": claim}} if claim else {"emptyDir": {}}
    volumes = [
        {"name": "spec", "configMap": {"name": names.spec_configmap_name(run.metadata.name),
                                       "items": [{"key": SPEC_KEY, "path": SPEC_KEY}]}},
        {"name": "checkpoints", **checkpoints},
        {"name": "scratch", "emptyDir": {}},
        {"name": "hf-home", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts = [
        {"name": "spec", "mountPath": str(paths.SPEC_DIR), "readOnly": True},
        {"name": "checkpoints", "mountPath": str(paths.CHECKPOINT_DIR)},
        {"name": "scratch", "mountPath": str(paths.SCRATCH_DIR)},
        {"name": "hf-home", "mountPath": str(paths.HF_HOME)},
        {"name": "tmp", "mountPath": TMP_DIR},
    ]
    if stages.is_staged(run.spec):
        volumes.append(work_volume(run))
        mounts.append({"name": WORK_VOLUME, "mountPath": str(stages.WORK_DIR)})
    if run.spec.resources.gpus_per_node > 1:
        # NCCL and DataLoader workers share memory through /dev/shm; the default 64Mi is too small.
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
        mounts.append({"name": "dshm", "mountPath": SHM_DIR})
    return volumes + data, mounts + data_mounts


def work_volume(run: CodexTrainingRun, read_only: bool = False) -> dict[str, Any]:
    """The run's work PVC: the training Job writes the hand-off, the later stages read it."""
    claim: dict[str, Any] = {"claimName": names.work_pvc_name(run.metadata.name)}
    if read_only:
        claim["readOnly"] = True
    return {"name": WORK_VOLUME, "persistentVolumeClaim": claim}


def _env(run: CodexTrainingRun, cfg: OperatorConfig) -> list[dict[str, Any]]:
    resources = run.spec.resources
    env = [
        env_value(paths.ENV_RUN_NAME, run.metadata.name),
        env_value(paths.ENV_RUN_NAMESPACE, run.metadata.namespace),
        env_value(paths.ENV_DATA_ROOT, str(paths.DATA_ROOT)),
        env_value(paths.ENV_CHECKPOINT_DIR, str(paths.CHECKPOINT_DIR)),
        env_value(paths.ENV_IMAGE, trainer_image(run, cfg)),
        env_value("HF_HOME", str(paths.HF_HOME)),
        # TRL and the Hub client report usage to the Hub unless told not to.
        env_value("HF_HUB_DISABLE_TELEMETRY", "1"),
        env_value("TMPDIR", TMP_DIR),
        env_value("NNODES", str(resources.nodes)),
        env_value("NPROC_PER_NODE", str(max(resources.gpus_per_node, 1))),
    ]
    token = hf_token_ref(run)
    if token is not None:
        env.append(env_secret(paths.ENV_HF_TOKEN, token.name, token.key))
    if cfg.trainer_gpu_memory_gib:
        env.append(env_value(paths.ENV_GPU_MEMORY_GIB, f"{cfg.trainer_gpu_memory_gib:g}"))
    if run.spec.training.sharding != "none" and resources.gpus_per_node > 0:
        # FSDP gathers and frees every layer's weights each step; expandable segments keep the CUDA caching
        # allocator from fragmenting under that (PyTorch's advice for FSDP2).
        env.append(env_value("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True"))
    if resources.nodes > 1:
        job = names.job_name(run.metadata.name)
        env += [
            env_field("NODE_RANK", f"metadata.annotations['{names.ANNOTATION_COMPLETION_INDEX}']"),
            env_value("MASTER_ADDR", f"{job}-0.{names.workers_service_name(run.metadata.name)}"),
            env_value("MASTER_PORT", str(RENDEZVOUS_PORT)),
        ]
    return sorted_env(env)


def _pod_spec(run: CodexTrainingRun, cfg: OperatorConfig) -> dict[str, Any]:
    spec = run.spec
    volumes, mounts = _volumes(run)
    args = ["run", "--config", str(paths.SPEC_FILE), *(("--stage", stages.TRAIN) if stages.is_staged(spec) else ())]
    container = trainer_container(run, cfg, args, _env(run, cfg), resource_requirements(
        spec.resources.cpu, spec.resources.memory, spec.resources.gpus_per_node, spec.resources.gpu_resource_name,
        cfg.trainer_resources), mounts)
    pod = trainer_pod(run, container, volumes)
    if spec.resources.node_selector:
        pod["nodeSelector"] = dict(sorted(spec.resources.node_selector.items()))
    if spec.resources.tolerations:
        pod["tolerations"] = tolerations(spec.resources.tolerations)
    if spec.job.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in spec.job.image_pull_secrets]
    if spec.resources.nodes > 1:
        pod["subdomain"] = names.workers_service_name(run.metadata.name)
        pod["topologySpreadConstraints"] = [_one_pod_per_node(run)]
    return pod


def _one_pod_per_node(run: CodexTrainingRun) -> dict[str, Any]:
    """Each torchrun node on a Kubernetes node of its own: a skew of at most 1 over the nodes the pod may
    use (its nodeSelector's), so two pods on two such nodes take one each, and on a single one share it."""
    labels = names.run_labels(run.metadata.name)
    return {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {names.LABEL_TRAINING_RUN: labels[names.LABEL_TRAINING_RUN],
                                              names.LABEL_COMPONENT: names.COMPONENT_TRAINER}}}


def trainer_container(run: CodexTrainingRun, cfg: OperatorConfig, args: list[str], env: list[dict[str, Any]],
                      resources: dict[str, Any], mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """The trainer image's container, as every stage runs it (``codex-train`` with ``args``)."""
    container = {"name": names.TRAINER_CONTAINER, "image": trainer_image(run, cfg), "command": ["codex-train"],
                 "args": args, "env": sorted_env(env), "resources": resources,
                 "securityContext": container_security_context(),
                 "terminationMessagePath": str(paths.TERMINATION_MESSAGE_PATH),
                 "terminationMessagePolicy": "FallbackToLogsOnError", "volumeMounts": mounts}
    if cfg.image_pull_policy:
        container["imagePullPolicy"] = cfg.image_pull_policy
    return container


def trainer_pod(run: CodexTrainingRun, container: dict[str, Any], volumes: list[dict[str, Any]]) -> dict[str, Any]:
    """A pod of the trainer's identity (the training and publish stages): the run's own ServiceAccount,
    whose token may patch the run's status, or the one the spec names."""
    own_account = uses_own_account(run)
    return {
        "automountServiceAccountToken": own_account,
        "containers": [container],
        "restartPolicy": "Never",
        "securityContext": pod_security_context(),
        "serviceAccountName": names.trainer_account_name(run.metadata.name) if own_account
        else run.spec.job.service_account_name,
        "volumes": volumes,
    }


def pod_failure_policy(codes=contract.NON_RETRYABLE_EXIT_CODES) -> dict[str, Any]:
    """Invalid input and unmet gates fail the Job at once; disruptions do not count as failures."""
    return {"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": names.TRAINER_CONTAINER, "operator": "In",
                                              "values": sorted(codes)}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    ]}


def build_pod_template(run: CodexTrainingRun, cfg: OperatorConfig) -> dict[str, Any]:
    return {
        "metadata": {
            "labels": names.run_labels(run.metadata.name),
            "annotations": {names.ANNOTATION_TRAINING_RUN: run.metadata.name,
                            "kubectl.kubernetes.io/default-container": names.TRAINER_CONTAINER},
        },
        "spec": _pod_spec(run, cfg),
    }


def is_queued(run: CodexTrainingRun) -> bool:
    return run.spec.job.queue_name is not None


def build_job(run: CodexTrainingRun, cfg: OperatorConfig) -> dict[str, Any]:
    spec = run.spec
    template = build_pod_template(run, cfg)
    labels = names.run_labels(run.metadata.name)
    if is_queued(run):
        labels[names.LABEL_KUEUE_QUEUE] = spec.job.queue_name
    annotations = {
        names.ANNOTATION_TRAINING_RUN: run.metadata.name,
        names.ANNOTATION_POD_TEMPLATE_HASH: object_hash(template),
        names.ANNOTATION_TRAINING_HASHES: training_hashes(run.spec),
    }
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.job.backoff_limit,
        "completions": spec.resources.nodes,
        "parallelism": spec.resources.nodes,
        "podFailurePolicy": pod_failure_policy(),
        # Kueue admits a queued Job by unsuspending it.
        "suspend": spec.job.suspend or is_queued(run),
        "template": template,
    }
    if spec.resources.nodes > 1:
        job_spec["completionMode"] = "Indexed"
    if spec.job.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.job.active_deadline_seconds
    if spec.job.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.job.ttl_seconds_after_finished
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(names.job_name(run.metadata.name), run.metadata.namespace, labels, annotations),
        "spec": job_spec,
    }


def desired_pod_template_hash(run: CodexTrainingRun, cfg: OperatorConfig) -> str:
    return object_hash(build_pod_template(run, cfg))


def job_mutable_fields(run: CodexTrainingRun) -> dict[str, Optional[Any]]:
    """The Job fields a spec change may still patch onto an existing Job (None removes the field)."""
    fields: dict[str, Optional[Any]] = {
        "suspend": run.spec.job.suspend,
        "activeDeadlineSeconds": run.spec.job.active_deadline_seconds,
        "ttlSecondsAfterFinished": run.spec.job.ttl_seconds_after_finished,
    }
    if is_queued(run) and not run.spec.job.suspend:
        # Kueue owns the suspend flag of a queued Job: it admits the Job by clearing it.
        del fields["suspend"]
    return fields
