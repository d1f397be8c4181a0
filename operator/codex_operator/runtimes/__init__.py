"""The CodexModel runtimes: what each one builds, by the name spec.runtime gives it.

A runtime is a module here, named after its entry in the API's catalogue
(``codex_api.runtimes.RUNTIMES``; ``-`` in a name is ``_`` in the module's), with one function::

    def build_deployment(model: CodexModel, resolution: Resolution, cfg: OperatorConfig) -> dict

It returns the serving Deployment for the validated model, the resolved adapter and base model
(:class:`~codex_operator.promotion.Resolution`) and the operator's config, and raises
:class:`~codex_operator.builders.serving.ServeSpecError` for a spec it cannot serve. The
Service and HPA in front of it are the same for every runtime (builders/serving.py).

Adding a runtime is its catalogue entry plus its module: the registry below finds the module by
name, so nothing else (the config, the flags, Helm, the manifests) changes.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, Protocol

from codex_api import CodexModel, runtimes

from ..config import OperatorConfig
from ..promotion import Resolution


class RuntimeBuilder(Protocol):
    """What a runtime module provides."""

    def build_deployment(self, model: CodexModel, resolution: Resolution, cfg: OperatorConfig) -> dict[str, Any]:
        ...


def _load(runtime: runtimes.Runtime) -> RuntimeBuilder:
    try:
        return import_module(f"{__name__}.{runtime.module}")  # type: ignore[return-value]
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{runtime.module}":
            raise
        raise ImportError(f"runtime {runtime.name!r} is in codex_api.runtimes but has no builder: add "
                          f"operator/codex_operator/runtimes/{runtime.module}.py") from None


# spec.runtime -> its builder, one per catalogue entry.
REGISTRY: dict[str, RuntimeBuilder] = {runtime.name: _load(runtime) for runtime in runtimes.RUNTIMES}


def build_deployment(model: CodexModel, resolution: Resolution, cfg: OperatorConfig) -> dict[str, Any]:
    """The Deployment of ``model``'s runtime."""
    return REGISTRY[model.spec.runtime].build_deployment(model, resolution, cfg)
