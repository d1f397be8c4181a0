"""Which adapter a CodexModel serves: pure resolution of spec.adapter into status.servedAdapter.

Promotion flows through status only: the operator never edits a user's spec. For
``fromTrainingRun`` the newest Succeeded run whose gates passed wins; when none exists
yet the model keeps serving what it served before, or waits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from codex_api import CodexModel
from codex_api.common import ModelSource
from codex_api.model import ServedAdapter

from .conditions import parse_time


@dataclass(frozen=True)
class Resolution:
    """The adapter to serve (what status.servedAdapter reports) and the base model it needs."""

    served_adapter: Optional[ServedAdapter]
    base_model: Optional[ModelSource]
    # Why nothing can be served yet (None when served_adapter is set).
    waiting: Optional[str] = None
    # The adapter's LoRA rank when known (a run's spec.lora.r): vLLM sizes its LoRA slots from it.
    lora_rank: Optional[int] = None

    @property
    def ready(self) -> bool:
        """Whether there is something to serve: an adapter and the base model it needs."""
        return self.served_adapter is not None and self.base_model is not None


def selector_matches(selector: Mapping[str, str], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return all(labels.get(key) == value for key, value in selector.items())


def is_passing(run: Mapping[str, Any]) -> bool:
    """Succeeded with passing gates (or no gates evaluated) and a published artifact."""
    status = run.get("status") or {}
    gates = status.get("gates")
    artifact = status.get("artifact") or {}
    has_artifact = bool(artifact.get("path") or artifact.get("hubRepo"))
    return status.get("phase") == "Succeeded" and (gates is None or bool(gates.get("passed"))) and has_artifact


def references_run(model: CodexModel, run: Mapping[str, Any]) -> bool:
    source = model.spec.adapter.from_training_run
    if source is None:
        return False
    meta = run.get("metadata") or {}
    if source.name is not None:
        return meta.get("name") == source.name
    return selector_matches(source.selector or {}, meta.get("labels"))


def newest_passing_run(model: CodexModel, runs: Iterable[Mapping[str, Any]]) -> Optional[Mapping[str, Any]]:
    candidates = [run for run in runs if references_run(model, run) and is_passing(run)]

    def order(run: Mapping[str, Any]) -> tuple:
        status = run.get("status") or {}
        finished = parse_time(status.get("completionTime")) or parse_time(run["metadata"].get("creationTimestamp"))
        return (finished.timestamp() if finished else 0.0, run["metadata"].get("name", ""))

    return max(candidates, key=order, default=None)


def adapter_from_run(run: Mapping[str, Any]) -> ServedAdapter:
    """servedAdapter for a run's artifact: the PVC copy when there is one (no download), else the Hub."""
    artifact = (run.get("status") or {}).get("artifact") or {}
    revision = artifact.get("revision") or artifact.get("commitSha")
    name = run["metadata"]["name"]
    if artifact.get("path") and artifact.get("claimName"):
        return ServedAdapter(source="trainingRun", training_run=name, revision=revision,
                             claim_name=artifact["claimName"], path=artifact["path"])
    return ServedAdapter(source="trainingRun", training_run=name, repo=artifact.get("hubRepo"),
                         revision=artifact.get("commitSha") or revision)


def run_base_model(run: Mapping[str, Any]) -> Optional[ModelSource]:
    base = (run.get("spec") or {}).get("baseModel")
    try:
        return ModelSource.model_validate(base) if base else None
    except ValueError:
        return None


def resolve(model: CodexModel, runs: Iterable[Mapping[str, Any]],
            current: Optional[ServedAdapter] = None) -> Resolution:
    """Resolve spec.adapter; ``current`` is the status.servedAdapter already being served."""
    adapter = model.spec.adapter
    if adapter.hub is not None:
        served = ServedAdapter(source="hub", repo=adapter.hub.repo_id, revision=adapter.hub.revision)
        return Resolution(served, model.spec.base_model)
    if adapter.pvc is not None:
        served = ServedAdapter(source="pvc", claim_name=adapter.pvc.claim_name, path=adapter.pvc.path)
        return Resolution(served, model.spec.base_model)
    runs = list(runs)
    newest = newest_passing_run(model, runs)
    if newest is not None:
        rank = ((newest.get("spec") or {}).get("lora") or {}).get("r")
        served, base = adapter_from_run(newest), model.spec.base_model
        if base is None:  # the run's own base model, recorded so that the adapter outlives the run
            base = run_base_model(newest)
            served = served.model_copy(update={"base_model": base})
        return Resolution(served, base, lora_rank=rank if isinstance(rank, int) else None)
    if current is not None and current.source == "trainingRun":
        # The served run may have been deleted: keep serving its adapter rather than tearing down.
        previous = next((r for r in runs if r["metadata"].get("name") == current.training_run), None)
        base = model.spec.base_model or (run_base_model(previous) if previous else None) or current.base_model
        if base is not None:
            return Resolution(current, base)
    source = adapter.from_training_run
    wanted = f"run {source.name!r}" if source.name else f"a run matching {source.selector}"
    return Resolution(None, None, f"waiting for {wanted} to succeed with its gates passed")
