"""The later stages of a run with code tasks (codex_api.stages): the sandbox and the publish Job,
the deny-all NetworkPolicy around the sandbox, and the work volume the stages hand off through.

The sandbox pod holds nothing worth taking: no token (env or file), no ServiceAccount token, no
Secret volume, no network, the work volume read-only, a read-only root filesystem with an emptyDir
at /tmp, Pod Security ``restricted``, and the runtimeClassName the spec or the operator names.
"""

from __future__ import annotations

from typing import Any, Optional

from codex_api import CodexTrainingRun, contract, paths, stages

from .. import names
from ..config import OperatorConfig, Resources
from .common import env_secret, env_value, metadata, pod_security_context, resource_requirements, volume_name
from .configmap import SPEC_KEY
from .job import (TMP_DIR, WORK_VOLUME, pod_failure_policy, trainer_container, trainer_image, trainer_pod,
                  work_volume)
from .pvc import checkpoint_claim_name

# A sandbox pod that fails (OOM-killed, node lost) runs again at most this often.
SANDBOX_BACKOFF_LIMIT = 2
# What publishing needs: bandit over the batch, a copy of the adapter, the Hub upload.
PUBLISH_RESOURCES = Resources(cpu="1", memory="2Gi")
# The work volume holds the adapter and the hand-off; the operator sizes it when the spec does not.
WORK_VOLUME_SIZE = "10Gi"


def build_work_pvc(run: CodexTrainingRun) -> Optional[dict[str, Any]]:
    """The run's work volume (None for a run without code tasks, which runs as one Job)."""
    if not stages.is_staged(run.spec):
        return None
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"] if run.spec.resources.nodes == 1 else ["ReadWriteMany"],
        "resources": {"requests": {"storage": run.spec.checkpointing.size or WORK_VOLUME_SIZE}},
    }
    if run.spec.checkpointing.storage_class_name:
        spec["storageClassName"] = run.spec.checkpointing.storage_class_name
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": metadata(names.work_pvc_name(run.metadata.name), run.metadata.namespace,
                                 names.run_labels(run.metadata.name)),
            "spec": spec}


def sandbox_labels(run: CodexTrainingRun) -> dict[str, str]:
    return names.run_labels(run.metadata.name, component=stages.SANDBOX)


def build_sandbox_network_policy(run: CodexTrainingRun) -> dict[str, Any]:
    """Deny all ingress and egress of the run's sandbox pods (DNS included: they resolve nothing)."""
    labels = sandbox_labels(run)
    selector = {k: labels[k] for k in (names.LABEL_TRAINING_RUN, names.LABEL_COMPONENT)}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": metadata(names.child_name(run.metadata.name, stages.SANDBOX), run.metadata.namespace,
                                 names.run_labels(run.metadata.name)),
            "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress", "Egress"],
                     "ingress": [], "egress": []}}


def _stage_job(run: CodexTrainingRun, stage: str, pod: dict[str, Any], backoff_limit: int,
               failing_codes: tuple[int, ...]) -> dict[str, Any]:
    labels = names.run_labels(run.metadata.name, component=stage)
    annotations = {names.ANNOTATION_TRAINING_RUN: run.metadata.name, names.ANNOTATION_STAGE: stage}
    template = {"metadata": {"labels": labels, "annotations": {
        **annotations, "kubectl.kubernetes.io/default-container": names.TRAINER_CONTAINER}}, "spec": pod}
    if pod.get("imagePullSecrets") is None and run.spec.job.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in run.spec.job.image_pull_secrets]
    job_spec: dict[str, Any] = {"backoffLimit": backoff_limit, "completions": 1, "parallelism": 1,
                                "podFailurePolicy": pod_failure_policy(failing_codes), "template": template}
    if run.spec.job.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = run.spec.job.ttl_seconds_after_finished
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": metadata(names.stage_job_name(run.metadata.name, stage), run.metadata.namespace, labels,
                                 annotations),
            "spec": job_spec}


def sandbox_runtime_class(run: CodexTrainingRun, cfg: OperatorConfig) -> Optional[str]:
    return run.spec.evaluation.sandbox.runtime_class_name or cfg.sandbox_runtime_class


def build_sandbox_job(run: CodexTrainingRun, cfg: OperatorConfig) -> dict[str, Any]:
    """The Job that runs the generated programs, with nothing in reach (see the module's docstring)."""
    sandbox = run.spec.evaluation.sandbox
    mounts = [{"name": WORK_VOLUME, "mountPath": str(stages.WORK_DIR), "readOnly": True},
              {"name": "tmp", "mountPath": TMP_DIR}]
    env = [env_value("HOME", TMP_DIR), env_value("TMPDIR", TMP_DIR)]
    container = trainer_container(run, cfg, ["sandbox"], env, resource_requirements(
        sandbox.cpu, sandbox.memory, 0, run.spec.resources.gpu_resource_name, Resources()), mounts)
    pod: dict[str, Any] = {
        # No credential of any kind: no ServiceAccount token, no Secret, no token in the environment.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "containers": [container],
        "restartPolicy": "Never",
        "securityContext": pod_security_context(),
        "volumes": [work_volume(run, read_only=True), {"name": "tmp", "emptyDir": {}}],
    }
    runtime_class = sandbox_runtime_class(run, cfg)
    if runtime_class:
        pod["runtimeClassName"] = runtime_class
    return _stage_job(run, stages.SANDBOX, pod, SANDBOX_BACKOFF_LIMIT, (contract.EXIT_INVALID,))


def _publish_volumes(run: CodexTrainingRun) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes = [
        {"name": "spec", "configMap": {"name": names.spec_configmap_name(run.metadata.name),
                                       "items": [{"key": SPEC_KEY, "path": SPEC_KEY}]}},
        work_volume(run, read_only=True),
        {"name": "scratch", "emptyDir": {}}, {"name": "hf-home", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}},
    ]
    mounts = [
        {"name": "spec", "mountPath": str(paths.SPEC_DIR), "readOnly": True},
        {"name": WORK_VOLUME, "mountPath": str(stages.WORK_DIR), "readOnly": True},
        {"name": "scratch", "mountPath": str(paths.SCRATCH_DIR)},
        {"name": "hf-home", "mountPath": str(paths.HF_HOME)}, {"name": "tmp", "mountPath": TMP_DIR},
    ]
    claim = checkpoint_claim_name(run)
    if claim:  # the base-score cache of a run without an output PVC lives with the checkpoints
        volumes.append({"name": "checkpoints", "persistentVolumeClaim": {"claimName": claim}})
        mounts.append({"name": "checkpoints", "mountPath": str(paths.CHECKPOINT_DIR)})
    output = run.spec.output.pvc
    if output is not None:
        name = volume_name("pvc", output.claim_name)
        volumes.append({"name": name, "persistentVolumeClaim": {"claimName": output.claim_name}})
        mounts.append({"name": name, "mountPath": str(paths.pvc_dir(output.claim_name))})
    return volumes, mounts


def build_publish_job(run: CodexTrainingRun, cfg: OperatorConfig, sandbox_report: str) -> dict[str, Any]:
    """The Job that judges the gates and publishes: the only stage that holds the Hub write token."""
    volumes, mounts = _publish_volumes(run)
    env = [
        env_value(paths.ENV_RUN_NAME, run.metadata.name), env_value(paths.ENV_RUN_NAMESPACE, run.metadata.namespace),
        env_value(paths.ENV_DATA_ROOT, str(paths.DATA_ROOT)),
        env_value(paths.ENV_CHECKPOINT_DIR, str(paths.CHECKPOINT_DIR)),
        env_value(paths.ENV_IMAGE, trainer_image(run, cfg)), env_value("HF_HOME", str(paths.HF_HOME)),
        env_value("HF_HUB_DISABLE_TELEMETRY", "1"),
        env_value("TMPDIR", TMP_DIR), env_value(stages.ENV_SANDBOX_RESULTS, sandbox_report),
    ]
    hub = run.spec.output.hub
    if hub is not None and hub.token_secret_ref is not None:
        env.append(env_secret(paths.ENV_HF_TOKEN, hub.token_secret_ref.name, hub.token_secret_ref.key))
    container = trainer_container(run, cfg, ["publish", "--config", str(paths.SPEC_FILE)], env,
                           resource_requirements(None, None, 0, run.spec.resources.gpu_resource_name,
                                                 PUBLISH_RESOURCES), mounts)
    pod = trainer_pod(run, container, volumes)
    return _stage_job(run, stages.PUBLISH, pod, run.spec.job.backoff_limit, contract.NON_RETRYABLE_EXIT_CODES)
