"""Generate the CustomResourceDefinitions from the pydantic models.

pydantic emits JSON Schema (``$ref``, ``anyOf: [X, null]``, numeric
``exclusiveMinimum``); Kubernetes wants a *structural* OpenAPI v3 schema: every
node typed, no ``$ref``, no untyped ``anyOf``, boolean ``exclusiveMinimum``.
:func:`structural` does that translation and keeps every description, so
``kubectl explain`` reads like the models.

Run ``python -m codex_api.crdgen crds/`` (``make crds``) to rewrite the files.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from .base import API_GROUP, API_VERSION
from .model import PLURAL as MODEL_PLURAL, CodexModel
from .training_run import PLURAL as RUN_PLURAL, CodexTrainingRun

_DROP = {"title", "default", "additionalProperties", "examples"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").split("/")[-1]]
        merged = dict(_resolve(target, defs))
        # Field-level keys (description, list-map markers) win over the referenced type's.
        merged.update({k: _resolve(v, defs) for k, v in node.items()})
        return merged
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"untyped anyOf cannot become structural: {branches}")
        merged = dict(_resolve(branches[0], defs))
        merged.update({k: _resolve(v, defs) for k, v in node.items()})
        return merged
    return {k: _resolve(v, defs) for k, v in node.items()}


def _structural(node: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: _structural(prop) for name, prop in value.items()}
        elif key == "items":
            out[key] = _structural(value)
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "format" and value not in ("date-time", "int64", "int32", "double", "float", "byte"):
            continue
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    additional = node.get("additionalProperties")
    if isinstance(additional, dict):
        out["additionalProperties"] = _structural(additional)
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("type") == "number" and "format" not in out:
        out["format"] = "double"
    return out


def structural(model: type, field: str) -> dict[str, Any]:
    """The structural schema of one top-level field (``spec`` or ``status``) of a kind."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    defs = schema.get("$defs", {})
    resolved = _resolve(schema["properties"][field], defs)
    return _structural(resolved)


def _root_schema(model: type) -> dict[str, Any]:
    """The openAPIV3Schema of a kind: its spec and status from the model, the rest as every CRD has it,
    and the kind's own rules (on its name)."""
    rules = [rule.to_crd() for rule in getattr(model, "__rules__", ())]
    return ({"x-kubernetes-validations": rules} if rules else {}) | {
        "type": "object",
        "description": " ".join((model.__doc__ or "").split()),
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of the object."},
            "kind": {"type": "string", "description": "Kind of the object."},
            # name is declared for the kind's rule to point at (a CRD may say nothing else of metadata).
            "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
            "spec": structural(model, "spec"),
            "status": structural(model, "status"),
        },
        "required": ["spec"],
    }


def _crd(model: type, plural: str, short_names: list[str], columns: list[dict[str, Any]]) -> dict[str, Any]:
    kind = model.__name__
    root = _root_schema(model)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{API_GROUP}",
            "labels": {"app.kubernetes.io/part-of": "codex-operator"},
        },
        "spec": {
            "group": API_GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["codex"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


# The printer columns of `kubectl get cxrun` and `kubectl get cxmodel`.
RUN_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Progress", "type": "integer", "jsonPath": ".status.progress.percent",
     "description": "Percent of training steps done."},
    {"name": "Loss", "type": "number", "jsonPath": ".status.progress.loss"},
    {"name": "Perplexity", "type": "number", "jsonPath": ".status.metrics.perplexity"},
    {"name": "Gates", "type": "boolean", "jsonPath": ".status.gates.passed"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
MODEL_COLUMNS = [
    {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
    {"name": "Runtime", "type": "string", "jsonPath": ".spec.runtime", "priority": 1},
    {"name": "Adapter", "type": "string", "jsonPath": ".status.servedAdapter.revision"},
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def training_run_crd() -> dict[str, Any]:
    return _crd(CodexTrainingRun, RUN_PLURAL, ["cxrun"], RUN_COLUMNS)


def model_crd() -> dict[str, Any]:
    return _crd(CodexModel, MODEL_PLURAL, ["cxmodel"], MODEL_COLUMNS)


CRD_FILES = {
    "codex.dev_codextrainingruns.yaml": training_run_crd,
    "codex.dev_codexmodels.yaml": model_crd,
}


def render(builder) -> str:
    header = "# Generated by `make crds` from api/codex_api. Do not edit.\n"
    return header + yaml.safe_dump(builder(), sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    out_dir = Path((argv or sys.argv[1:] or ["crds"])[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    for filename, builder in CRD_FILES.items():
        (out_dir / filename).write_text(render(builder))
        print(f"wrote {out_dir / filename}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
