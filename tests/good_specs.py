"""A minimal valid CodexTrainingRun and CodexModel, and one way to change them.

The model tests (tests/api) and the apiserver tests (tests/cluster) start from the same good
objects and break one field at a time with :func:`with_changes`. Never mutate ``GOOD_RUN`` or
``GOOD_MODEL`` in place: every module shares them."""

from __future__ import annotations

import copy
from typing import Any, Mapping

GOOD_RUN: dict[str, Any] = {
    "apiVersion": "codex.dev/v1alpha1",
    "kind": "CodexTrainingRun",
    "metadata": {"name": "good-run"},
    "spec": {
        "baseModel": {"embedded": "tiny-llama"},
        "dataset": {"source": {"configMap": {"name": "data", "key": "train.jsonl"}}},
        "output": {"pvc": {"claimName": "artifacts", "path": "/r1"}},
    },
}
GOOD_MODEL: dict[str, Any] = {
    "apiVersion": "codex.dev/v1alpha1",
    "kind": "CodexModel",
    "metadata": {"name": "good-model"},
    "spec": {"baseModel": {"embedded": "tiny-llama"}, "adapter": {"pvc": {"claimName": "artifacts", "path": "/r1"}}},
}


class _Delete:
    """The type of :data:`DELETE`."""

    def __repr__(self) -> str:
        return "DELETE"


#: As a value in :func:`with_changes`: remove the field instead of setting it.
DELETE = _Delete()


def with_changes(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with each dotted path in ``changes`` set to its value.

    Missing parents are created; a value of :data:`DELETE` removes the field (if present).
    ``with_changes(GOOD_RUN, {"spec.lora": {"r": 0}, "metadata.name": "x"})``."""
    obj = copy.deepcopy(dict(base))
    for path, value in changes.items():
        node = obj
        *parents, last = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = copy.deepcopy(value)
    return obj
