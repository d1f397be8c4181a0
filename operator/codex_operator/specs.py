"""Parsed views of runs and models: each spec is parsed once per generation.

Parsing a spec (pydantic validation) is the costly part of a reconcile, and a run is reconciled
on every event of its Job and pods. So the reconcilers keep, per object, the view of its newest
generation (state.Tracked.view): whether the spec is valid, and the hashes status compares with
the Job. A run's parsed model itself is kept only through the reconcile that parsed it (a
thousand parsed runs would cost megabytes for nothing); a model's is kept, since models are few
and every run event may ask which models serve from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional, TypeVar

from codex_api import ApiModel, CodexModel, CodexTrainingRun, SpecError, parse, stages

from .builders.job import desired_pod_template_hash, training_hashes
from .config import OperatorConfig

M = TypeVar("M", bound=ApiModel)
# What a spec's validity depends on: the rest of an object (status, managed fields) is not read.
SPEC_KEYS = ("apiVersion", "kind", "metadata", "spec")


def parse_object(model: type[M], body: Mapping[str, Any]) -> M:
    """The validated object; raises SpecError whose lines name the field (``spec.lora.r: ...``)."""
    return parse(model, {k: body[k] for k in SPEC_KEYS if k in body})


def generation_of(body: Mapping[str, Any]) -> tuple[Optional[str], Optional[int]]:
    meta = body.get("metadata") or {}
    return meta.get("uid"), meta.get("generation")


@dataclass(frozen=True, slots=True)
class SpecView:
    """Which object and generation a view was computed for."""

    uid: Optional[str]
    generation: Optional[int]

    def describes(self, body: Mapping[str, Any]) -> bool:
        return (self.uid, self.generation) == generation_of(body)


@dataclass(frozen=True, slots=True)
class RunView(SpecView):
    """One generation of a run's spec, as the reconciler and status read it."""

    invalid: Optional[SpecError] = None
    # builders.job.training_hashes of the spec, and the pod-template hash it would build.
    training_hashes: str = ""
    template_hash: Optional[str] = None
    # Whether the run has code tasks, and so runs as stages (codex_api.stages.is_staged).
    staged: bool = False
    # The parsed run, only in the view returned by the reconcile that parsed it (see kept()).
    parsed: Optional[CodexTrainingRun] = dataclasses.field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, body: Mapping[str, Any], cfg: OperatorConfig) -> "RunView":
        uid, generation = generation_of(body)
        try:
            run = parse_object(CodexTrainingRun, body)
        except SpecError as error:
            return cls(uid, generation, invalid=error)
        return cls(uid, generation, None, training_hashes(run.spec), desired_pod_template_hash(run, cfg),
                   stages.is_staged(run.spec), run)

    def kept(self) -> "RunView":
        """The view as remembered between reconciles: without the parsed run."""
        return dataclasses.replace(self, parsed=None)

    def run(self, body: Mapping[str, Any]) -> CodexTrainingRun:
        """The parsed run (parsed again when this view is a remembered one)."""
        return self.parsed if self.parsed is not None else parse_object(CodexTrainingRun, body)


@dataclass(frozen=True, slots=True)
class ModelView(SpecView):
    """One generation of a model's spec: the parsed model, or why it is invalid."""

    model: Optional[CodexModel] = None
    invalid: Optional[SpecError] = None

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> "ModelView":
        uid, generation = generation_of(body)
        try:
            return cls(uid, generation, parse_object(CodexModel, body))
        except SpecError as error:
            return cls(uid, generation, invalid=error)
