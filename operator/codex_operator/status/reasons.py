"""Condition and phase reasons, one CamelCase word each."""

from codex_api import contract

# --- CodexTrainingRun ---
# The spec failed validation; the message names the field. Not retried.
INVALID_SPEC = contract.REASON_INVALID_SPEC
# The children are being created; no Job observed yet.
CREATING = "Creating"
# spec.job.suspend holds the Job.
SUSPENDED = "Suspended"
# The Job waits in a Kueue queue for admission.
QUEUED = "Queued"
# The trainer pod is scheduled or its container is starting.
POD_PENDING = "PodPending"
# A previous attempt ended and the Job controller is starting the next one.
RETRYING = "Retrying"
# The trainer is preparing data or training.
TRAINING = "Training"
# The trainer is evaluating the adapter (status.progress.stage evaluate).
EVALUATING = "Evaluating"
# The trainer is saving or pushing the adapter (stage save or push).
PUSHING = "Pushing"
# The Job completed and the adapter was published.
SUCCEEDED = contract.REASON_SUCCEEDED
# The adapter was trained but failed its quality gates; it is kept, not promoted.
GATES_NOT_MET = contract.REASON_GATES_NOT_MET
# The trainer rejected its data (exit 42).
INVALID_DATA = contract.REASON_INVALID_DATA
# The last attempt was preempted and retries are exhausted.
PREEMPTED = contract.REASON_PREEMPTED
# The last attempt failed on a transient error and retries are exhausted.
TRANSIENT_ERROR = contract.REASON_TRANSIENT
# Every retry (spec.job.backoffLimit) was used up.
BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
# spec.job.activeDeadlineSeconds passed.
DEADLINE_EXCEEDED = "DeadlineExceeded"
# A staged run's sandbox stage (the generated code's Job) failed: OOM-killed, deadline, retries used up.
SANDBOX_FAILED = "SandboxFailed"
# The Job failed for another reason; the message carries the Job's own words.
JOB_FAILED = "JobFailed"
# The run ended before the gates were evaluated.
GATES_NOT_EVALUATED = "NotEvaluated"
# Every gate passed.
GATES_PASSED = "GatesPassed"
# The Job runs the current spec.
SPEC_APPLIED = "Applied"
# A training field changed after the run started; the Job keeps the original (CEL should refuse this).
IMMUTABLE_FIELD_CHANGED = "ImmutableFieldChanged"
# A pod-template field changed; the existing Job's pods keep the old template.
POD_TEMPLATE_CHANGED = "PodTemplateChanged"

# --- CodexModel ---
# No referenced CodexTrainingRun has succeeded with passing gates yet.
WAITING_FOR_TRAINING_RUN = "WaitingForTrainingRun"
# The Deployment is being created.
DEPLOYMENT_PENDING = "DeploymentPending"
# The Deployment is rolling out a new template (for example a new adapter).
ROLLING_OUT = "RollingOut"
# Every replica runs the current template and is ready.
DEPLOYMENT_AVAILABLE = "DeploymentAvailable"
# No ready replica.
NO_READY_REPLICAS = "NoReadyReplicas"
# The rollout stalled past progressDeadlineSeconds, or pods cannot be created.
DEPLOYMENT_DEGRADED = "DeploymentDegraded"
# Scaled to zero replicas on purpose.
SCALED_TO_ZERO = "ScaledToZero"
# Nothing is wrong.
AS_EXPECTED = "AsExpected"
