"""The ConfigMap holding the rendered CodexTrainingRun the trainer runs (paths.SPEC_FILE)."""

from __future__ import annotations

from typing import Any

import yaml
from codex_api import CodexTrainingRun, paths

from .. import names
from .common import metadata

SPEC_KEY = paths.SPEC_FILE.name


def render_run(run: CodexTrainingRun) -> str:
    """The object the trainer reads: apiVersion, kind, metadata and the spec with defaults filled in.

    Only references to Secrets appear in a spec (the API refuses inline tokens), so the
    rendered file never carries a credential.
    """
    meta = {"name": run.metadata.name, "namespace": run.metadata.namespace}
    labels = getattr(run.metadata, "labels", None)
    if labels:
        meta["labels"] = dict(sorted(labels.items()))
    document = {"apiVersion": run.api_version, "kind": run.kind, "metadata": meta, "spec": run.spec.to_wire()}
    # libyaml's emitter when present: the pure-Python one costs ~15 ms per run at scale.
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(document, Dumper=dumper, sort_keys=True, default_flow_style=False)


def build_spec_configmap(run: CodexTrainingRun) -> dict[str, Any]:
    name = names.spec_configmap_name(run.metadata.name)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(name, run.metadata.namespace, names.run_labels(run.metadata.name)),
        "data": {SPEC_KEY: render_run(run)},
    }
