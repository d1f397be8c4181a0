"""What the reconcilers read: kopf's in-memory indexes (handlers/indexes.py), never the API.

kopf fills every index before any watch handler runs, and updates an object's indexes before
its handlers see the event, so a key queued by a handler always finds the object at least as
new as the event that queued it. After a restart every existing Job is already indexed, so a
reconcile never creates a duplicate.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from . import names

# Strings up to this long are interned (kinds, labels, timestamps, uids), longer ones kept as they are.
MAX_INTERNED = 64
# The annotations and labels of a Job and a pod that reconciling reads.
OWN_PREFIX = "codex.dev/"
JOB_LABELS = (names.LABEL_KUEUE_QUEUE,)
POD_ANNOTATIONS = (names.ANNOTATION_COMPLETION_INDEX, names.ANNOTATION_TRAINING_RUN)
# An index maps a key to the objects filed under it (kopf.Index: key -> Store of values).
Index = Mapping[Any, Iterable[dict[str, Any]]]

CHILD_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion", "labels", "annotations",
                  "ownerReferences", "creationTimestamp", "deletionTimestamp")
# A run's own annotations (kubectl's last-applied) are copies of its spec: not kept.
OWNER_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion", "labels", "creationTimestamp",
                  "deletionTimestamp")


def compact(value: Any) -> Any:
    """The same JSON value built anew with its keys and short strings interned.

    An index holds thousands of objects whose keys ("creationTimestamp", "ownerReferences"), labels
    and owner uids repeat; parsed JSON gives each copy its own string objects. Interned, each is
    stored once: at 10,000 runs that is most of what the indexes cost.
    """
    if isinstance(value, Mapping):
        return {sys.intern(key): compact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [compact(item) for item in value]
    if isinstance(value, str) and len(value) <= MAX_INTERNED:
        return sys.intern(value)
    return value


def slim(body: Mapping[str, Any], keep: tuple[str, ...] = ("spec", "status"),
         spec_fields: Optional[tuple[str, ...]] = None, metadata: tuple[str, ...] = CHILD_METADATA) -> dict[str, Any]:
    """The parts of an object that reconciling reads (managedFields and the rest are dropped), compacted."""
    meta = body.get("metadata") or {}
    out: dict[str, Any] = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
                           "metadata": {k: meta[k] for k in metadata if k in meta}}
    out.update({k: body[k] for k in keep if k in body})
    if spec_fields is not None and "spec" in out:
        out["spec"] = {k: out["spec"][k] for k in spec_fields if k in out["spec"]}
    return compact(out)


def _controller_ref(meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The controller's owner reference alone, with what names.controller_owner reads."""
    return [{k: ref[k] for k in ("kind", "name", "uid", "controller") if k in ref}
            for ref in meta.get("ownerReferences") or () if ref.get("controller")]


def slim_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """A Job as job_index files it: the spec fields status reads or a spec change may patch, our
    annotations (the hashes it was built from) and the Kueue label."""
    out = slim(job, spec_fields=("suspend", "completions", "activeDeadlineSeconds", "ttlSecondsAfterFinished"),
               metadata=("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp"))
    meta = job.get("metadata") or {}
    out["metadata"]["ownerReferences"] = compact(_controller_ref(meta))
    out["metadata"]["annotations"] = compact({k: v for k, v in (meta.get("annotations") or {}).items()
                                              if k.startswith(OWN_PREFIX)})
    out["metadata"]["labels"] = compact({k: v for k, v in (meta.get("labels") or {}).items() if k in JOB_LABELS})
    return out


def slim_pod(pod: Mapping[str, Any], container: str) -> dict[str, Any]:
    """A trainer pod as pod_index files it: who owns it, when it was made, its completion index, and
    the trainer container's state (status/run.py reads nothing else of a pod)."""
    meta = pod.get("metadata") or {}
    out = slim(pod, keep=(), metadata=("name", "uid", "creationTimestamp", "deletionTimestamp"))
    out["metadata"]["ownerReferences"] = compact(_controller_ref(meta))
    out["metadata"]["annotations"] = compact({k: v for k, v in (meta.get("annotations") or {}).items()
                                              if k in POD_ANNOTATIONS})
    statuses = ((pod.get("status") or {}).get("containerStatuses") or ())
    out["status"] = compact({"containerStatuses": [{k: s[k] for k in ("name", "state", "lastState") if k in s}
                                                   for s in statuses if s.get("name") == container]})
    return out


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

