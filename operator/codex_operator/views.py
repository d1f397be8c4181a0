"""What the reconcilers read: kopf's in-memory indexes (handlers/indexes.py), never the API.

kopf fills every index before any watch handler runs, and updates an object's indexes before
its handlers see the event, so a key queued by a handler always finds the object at least as
new as the event that queued it. After a restart every existing Job is already indexed, so a
reconcile never creates a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

# An index maps a key to the objects filed under it (kopf.Index: key -> Store of values).
Index = Mapping[Any, Iterable[dict[str, Any]]]

CHILD_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion", "labels", "annotations",
                  "ownerReferences", "creationTimestamp", "deletionTimestamp")
# A run's own annotations (kubectl's last-applied) are copies of its spec: not kept.
OWNER_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion", "labels", "creationTimestamp",
                  "deletionTimestamp")


def slim(body: Mapping[str, Any], keep: tuple[str, ...] = ("spec", "status"),
         spec_fields: Optional[tuple[str, ...]] = None, metadata: tuple[str, ...] = CHILD_METADATA) -> dict[str, Any]:
    """The parts of an object that reconciling reads (managedFields and the rest are dropped)."""
    meta = body.get("metadata") or {}
    out: dict[str, Any] = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
                           "metadata": {k: meta[k] for k in metadata if k in meta}}
    out.update({k: body[k] for k in keep if k in body})
    if spec_fields is not None and "spec" in out:
        out["spec"] = {k: out["spec"][k] for k in spec_fields if k in out["spec"]}
    return out


def slim_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """A Job as job_index files it: the spec fields status reads or a spec change may patch."""
    return slim(job, spec_fields=("suspend", "completions", "activeDeadlineSeconds", "ttlSecondsAfterFinished"))


@dataclass(frozen=True)
class Views:
    """The indexes by name; see handlers/indexes.py for what each one files."""

    run_index: Index
    run_names: Index
    models_by_namespace: Index
    job_index: Index
    pod_index: Index
    deployment_index: Index
    service_index: Index
    hpa_index: Index

    def run(self, namespace: str, name: str) -> Optional[dict[str, Any]]:
        return next(iter(self.run_index.get((namespace, name)) or ()), None)

    def runs(self, namespace: str) -> list[dict[str, Any]]:
        return [run for name in self.run_names.get(namespace) or () if (run := self.run(namespace, name))]

    def models(self, namespace: str) -> list[dict[str, Any]]:
        return list(self.models_by_namespace.get(namespace) or ())

    def model(self, namespace: str, name: str) -> Optional[dict[str, Any]]:
        return next((m for m in self.models(namespace) if m["metadata"]["name"] == name), None)

