"""codex.dev/v1alpha1 API types: the single source of truth for the CRDs, the operator and the trainer."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import ValidationError

from .base import API_GROUP, API_VERSION, GROUP_VERSION, ApiModel, Rule, SpecError, check_transition
from .model import CodexModel, CodexModelSpec, CodexModelStatus
from .training_run import CodexTrainingRun, CodexTrainingRunSpec, CodexTrainingRunStatus

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "GROUP_VERSION",
    "ApiModel",
    "CodexModel",
    "CodexModelSpec",
    "CodexModelStatus",
    "CodexTrainingRun",
    "CodexTrainingRunSpec",
    "CodexTrainingRunStatus",
    "Rule",
    "SpecError",
    "check_transition",
    "parse",
    "parse_spec",
]

M = TypeVar("M", bound=ApiModel)


def parse_spec(model: type[M], spec: Any) -> M:
    """Validate a spec mapping; raise :class:`SpecError` whose lines start with ``spec.<field>``."""
    try:
        return model.model_validate(spec if spec is not None else {})
    except ValidationError as error:
        raise SpecError.from_validation(error, "spec") from None


def parse(model: type[M], obj: Any) -> M:
    """Validate a whole object (apiVersion, kind, metadata, spec, status)."""
    try:
        return model.model_validate(obj)
    except ValidationError as error:
        raise SpecError.from_validation(error, "") from None
