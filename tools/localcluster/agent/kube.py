"""The few API calls the agent makes, on plain dicts (the JSON the apiserver sends).

Working on the wire JSON keeps the pod spec's own field names (``valueFrom``,
``mountPath``) in the agent's code instead of the client's snake_case models.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timezone

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)
REQUEST_TIMEOUT = 15
COMPONENT = "localcluster-kubelet"


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kube:
    def __init__(self, api_client: client.ApiClient):
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.storage = client.StorageV1Api(api_client)

    @staticmethod
    def read(fn, *args, **kwargs) -> dict | None:
        """Call a read/list method and return the decoded JSON, or None on 404."""
        try:
            response = fn(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return json.loads(response.data)

    def configmap(self, namespace: str, name: str) -> dict | None:
        return self.read(self.core.read_namespaced_config_map, name, namespace)

    def secret(self, namespace: str, name: str) -> dict | None:
        return self.read(self.core.read_namespaced_secret, name, namespace)

    def pvc(self, namespace: str, name: str) -> dict | None:
        return self.read(self.core.read_namespaced_persistent_volume_claim, name, namespace)

    def pv(self, name: str) -> dict | None:
        return self.read(self.core.read_persistent_volume, name)

    def patch_pod_status(self, namespace: str, name: str, status: dict) -> bool:
        """Strategic-merge the pod's status; False when the pod no longer exists."""
        try:
            self.core.patch_namespaced_pod_status(name, namespace, {"status": status},
                                                  _request_timeout=REQUEST_TIMEOUT)
            return True
        except ApiException as err:
            if err.status == 404:
                return False
            raise

    def delete_pod_now(self, namespace: str, name: str, uid: str) -> None:
        """Finish a graceful deletion (grace 0), only if the pod is still the one with ``uid``."""
        body = client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid))
        try:
            self.core.delete_namespaced_pod(name, namespace, body=body, grace_period_seconds=0,
                                            _request_timeout=REQUEST_TIMEOUT)
        except ApiException as err:
            if err.status not in (404, 409):
                raise

    def request_token(self, namespace: str, service_account: str, pod: dict, audience: str | None,
                      expiration_seconds: int) -> tuple[str, str]:
        """TokenRequest bound to the pod: (token, expirationTimestamp)."""
        spec = {"expirationSeconds": expiration_seconds,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod["metadata"]["name"],
                                   "uid": pod["metadata"]["uid"]}}
        if audience:
            spec["audiences"] = [audience]
        response = self.core.create_namespaced_service_account_token(
            service_account, namespace, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                         "spec": spec},
            _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        status = json.loads(response.data)["status"]
        return status["token"], status["expirationTimestamp"]

    def event(self, pod: dict, event_type: str, reason: str, message: str, node: str,
              container: str | None = None) -> None:
        """Record an Event on the pod, like the kubelet; never raises (events are best effort)."""
        meta = pod["metadata"]
        involved = {"kind": "Pod", "apiVersion": "v1", "namespace": meta["namespace"], "name": meta["name"],
                    "uid": meta["uid"], "resourceVersion": meta.get("resourceVersion")}
        if container:
            involved["fieldPath"] = f"spec.containers{{{container}}}"
        stamp = now_rfc3339()
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
            "involvedObject": involved, "reason": reason, "message": message[:1024], "type": event_type,
            "source": {"component": COMPONENT, "host": node}, "reportingComponent": COMPONENT,
            "reportingInstance": node, "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        }
        try:
            self.core.create_namespaced_event(meta["namespace"], body, _request_timeout=REQUEST_TIMEOUT)
        except Exception as err:  # noqa: BLE001 - an event is never worth failing a pod for
            log.warning("event %s on %s/%s not recorded: %s", reason, meta["namespace"], meta["name"], err)
