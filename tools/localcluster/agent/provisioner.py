"""A hostPath volume provisioner: every Pending PersistentVolumeClaim gets a PV backed by a host directory.

It registers the default StorageClass ``standard`` (like kind and minikube). For
each unbound claim it creates a PersistentVolume pre-bound to the claim
(``claimRef``), and kube-controller-manager's PV controller binds the pair, so
claims become ``Bound`` the ordinary way. Deleting the claim deletes the PV and
its directory.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from kubernetes.client.exceptions import ApiException

from .kube import REQUEST_TIMEOUT

log = logging.getLogger(__name__)
PROVISIONER = "localcluster.codex.dev/hostpath"
STORAGE_CLASS = "standard"


class Provisioner:
    def __init__(self, kube, state_dir: Path):
        self.kube = kube
        self.root = state_dir / "pv"

    def ensure_storage_class(self) -> None:
        body = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": STORAGE_CLASS,
                             "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"}
        try:
            self.kube.storage.create_storage_class(body, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as err:
            if err.status != 409:
                raise

    def on_list(self, claims: list[dict]) -> None:
        for claim in claims:
            self.on_event("ADDED", claim)

    def on_event(self, event_type: str, claim: dict) -> None:
        meta, spec = claim["metadata"], claim["spec"]
        pv_name = f"pvc-{meta['uid']}"
        if event_type == "DELETED":
            self._delete(pv_name)
            return
        if spec.get("volumeName") or meta.get("deletionTimestamp") or (claim.get("status") or {}).get(
                "phase", "Pending") != "Pending":
            return
        path = self.root / pv_name
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)  # any pod user may write, as with local-path-provisioner
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        body = {
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
                         "labels": {"localcluster.codex.dev/claim-namespace": meta["namespace"]}},
            "spec": {
                "capacity": {"storage": storage},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "storageClassName": spec.get("storageClassName") or "",
                "persistentVolumeReclaimPolicy": "Delete",
                "volumeMode": spec.get("volumeMode") or "Filesystem",
                "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                             "name": meta["name"], "uid": meta["uid"]},
            },
        }
        try:
            self.kube.core.create_persistent_volume(body, _request_timeout=REQUEST_TIMEOUT)
            log.info("provisioned %s for claim %s/%s at %s", pv_name, meta["namespace"], meta["name"], path)
        except ApiException as err:
            if err.status != 409:
                raise

    def _delete(self, pv_name: str) -> None:
        try:
            self.kube.core.delete_persistent_volume(pv_name, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as err:
            if err.status != 404:
                raise
        shutil.rmtree(self.root / pv_name, ignore_errors=True)
