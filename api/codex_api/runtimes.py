"""The CodexModel runtimes, declared once: one :class:`Runtime` entry per runtime.

Everything the API must know about a runtime comes from here, so adding one is an entry in
:data:`RUNTIMES` plus its builder module in ``operator/codex_operator/runtimes/`` (named after
it, ``-`` read as ``_``):

- ``CodexModelSpec.runtime``'s enum and description (the CRD, ``kubectl explain``, the reference);
- the CEL rules that refuse a base model a runtime cannot load (``loads_embedded``), a
  ``spec.server`` setting it does not honour (``server_settings``) instead of ignoring it, and a
  spec without a GPU for a runtime that needs one (``needs_gpu``);
- the runtime's default image, which the operator uses unless ``--runtime-image NAME=IMAGE``
  or ``spec.image`` says otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from . import images

_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class Runtime:
    """One CodexModel runtime as the API sees it."""

    # The value of spec.runtime.
    name: str
    # What the runtime is, in a few words: it reaches spec.runtime's description.
    description: str
    # The image the operator runs by default; None is the trainer image, which ships codex-serve.
    default_image: Optional[str]
    # Whether it can load baseModel.embedded (the models baked into the trainer image).
    loads_embedded: bool
    # The spec.server settings (wire names) it honours; None: all of them.
    server_settings: Optional[frozenset[str]] = None
    # Whether it serves only on GPUs (spec.resources.gpus at least 1).
    needs_gpu: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"runtime name {self.name!r}: lowercase letters, digits and '-' only")

    @property
    def module(self) -> str:
        """The name of the operator module that builds this runtime's Deployment."""
        return self.name.replace("-", "_")


# The default runtime comes first.
RUNTIMES: tuple[Runtime, ...] = (
    Runtime(name="builtin", description="codex-serve, CPU or GPU", default_image=None, loads_embedded=True),
    Runtime(name="vllm", description="GPU", default_image=images.VLLM_IMAGE, loads_embedded=True,
            server_settings=frozenset({"maxNewTokens", "maxPromptTokens", "maxConcurrency", "apiKeySecretRef",
                                       "dtype"}),
            needs_gpu=True),
)
BY_NAME: dict[str, Runtime] = {runtime.name: runtime for runtime in RUNTIMES}
NAMES: tuple[str, ...] = tuple(BY_NAME)
DEFAULT: str = NAMES[0]


def runtime(name: str) -> Runtime:
    """The catalogue entry of spec.runtime ``name`` (a validated spec always names one)."""
    return BY_NAME[name]


def field_description() -> str:
    """spec.runtime's description: every runtime, in catalogue order, and the default."""
    entries = [f"{r.name} ({r.description})" for r in RUNTIMES]
    listed = entries[0] if len(entries) == 1 else ", ".join(entries[:-1]) + " or " + entries[-1]
    return f"runtime is {listed}. Defaults to {DEFAULT}."
