"""A thin asyncio wrapper around the official kubernetes client.

The client is synchronous, so every request runs in a thread pool (never on kopf's event
loop). Bodies are plain dicts in and out: requests go through ``ApiClient.call_api`` with
JSON, skipping the generated model classes, which keeps a request cheap on two cores.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable, Optional

import kubernetes
from kubernetes.client import ApiClient

from . import metrics

logger = logging.getLogger(__name__)

# Every kind the operator reads or writes, by apiVersion; a plural is kind + "s" unless IRREGULAR says.
KINDS: dict[str, tuple[str, ...]] = {
    "v1": ("ConfigMap", "Event", "PersistentVolumeClaim", "Pod", "Service", "ServiceAccount"),
    "apps/v1": ("Deployment",),
    "autoscaling/v2": ("HorizontalPodAutoscaler",),
    "batch/v1": ("Job",),
    "networking.k8s.io/v1": ("NetworkPolicy",),
    "rbac.authorization.k8s.io/v1": ("Role", "RoleBinding"),
    "codex.dev/v1alpha1": ("CodexTrainingRun", "CodexModel"),
}
IRREGULAR = {"NetworkPolicy": "networkpolicies"}
PLURALS: dict[tuple[str, str], str] = {(v, k): IRREGULAR.get(k, k.lower() + "s") for v, kinds in KINDS.items()
                                       for k in kinds}
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
# The field manager of everything the operator applies (metadata.managedFields names it).
FIELD_MANAGER = "codex-operator"
TIMEOUT = (5, 30)
# Request priorities: what stands between a new run and its Job goes first under a burst.
URGENT = 0
NORMAL = 1


class PriorityExecutor:
    """A thread pool that runs queued calls by priority, then in arrival order."""

    def __init__(self, workers: int, name: str = "kube"):
        self.queue: queue.PriorityQueue = queue.PriorityQueue()
        self.order = itertools.count()
        self.threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for thread in self.threads:
            thread.start()

    def submit(self, priority: int, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        self.queue.put((priority, next(self.order), future, fn, args))
        return future

    def _work(self) -> None:
        while True:
            _, _, future, fn, args = self.queue.get()
            if future is None:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as error:  # handed to the awaiting coroutine
                future.set_exception(error)

    def shutdown(self) -> None:
        for _ in self.threads:
            self.queue.put((float("inf"), next(self.order), None, None, ()))


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str = ""):
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"{status} {reason}: {message}".strip(": "))


class NotOwnedError(Exception):
    """A child's deterministic name is taken by an object another owner controls."""


def resource_path(api_version: str, kind: str, namespace: Optional[str], name: Optional[str] = None,
                  subresource: Optional[str] = None) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = prefix + (f"/namespaces/{namespace}" if namespace else "") + "/" + PLURALS[(api_version, kind)]
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


def owned_by(obj: dict[str, Any], owner_uid: str) -> bool:
    return any(ref.get("uid") == owner_uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])


def load_client_config() -> kubernetes.client.Configuration:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    return configuration


class Kube:
    """Create, get, patch and delete plain-dict objects without blocking the event loop."""

    def __init__(self, configuration: kubernetes.client.Configuration, workers: int = 16):
        configuration.connection_pool_maxsize = workers
        self.client = ApiClient(configuration)
        self.executor = PriorityExecutor(workers)

    def close(self) -> None:
        self.executor.shutdown()
        self.client.close()

    def _call(self, method: str, path: str, body: Any, content_type: Optional[str],
              query: Optional[list[tuple[str, str]]] = None, text: bool = False) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        _, url, headers, _, _ = self.client.param_serialize(
            method=method, resource_path=path, query_params=query, header_params=headers,
            auth_settings=["BearerToken"])
        response = self.client.call_api(method, url, header_params=headers, body=body, _request_timeout=TIMEOUT)
        data = response.read()
        if not 200 <= response.status < 300:
            try:
                details = json.loads(data)
            except ValueError:
                details = {}
            raise ApiError(response.status, details.get("reason") or response.reason or "", details.get("message", ""))
        if text:
            return data.decode("utf-8", "replace")
        return json.loads(data) if data else None

    async def request(self, method: str, path: str, body: Any = None, content_type: Optional[str] = None,
                      kind: str = "", priority: int = NORMAL, query: Optional[list[tuple[str, str]]] = None,
                      text: bool = False) -> Any:
        metrics.API_REQUESTS.labels(verb=method.lower(), kind=kind).inc()
        future = self.executor.submit(priority, self._call, method, path, body, content_type, query, text)
        return await asyncio.wrap_future(future)

    async def read_log(self, namespace: str, pod: str, container: str, tail_lines: int) -> Optional[str]:
        """The last ``tail_lines`` lines of a container's log; None when the pod or its log is gone."""
        path = resource_path("v1", "Pod", namespace, pod, "log")
        try:
            return await self.request("GET", path, kind="Pod", text=True,
                                      query=[("container", container), ("tailLines", str(tail_lines))])
        except ApiError as error:
            if error.status in (400, 404):
                return None
            raise

    async def apply(self, obj: dict[str, Any], priority: int = NORMAL) -> dict[str, Any]:
        """Server-side apply ``obj`` as :data:`FIELD_MANAGER`: the apiserver merges it into the live object,
        tracks which fields the operator owns (managedFields), and with ``force`` takes back a field that
        was changed by hand. Fields ``obj`` leaves out stay with whoever owns them (an HPA's replicas)."""
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        return await self.request("PATCH", path, obj, APPLY_PATCH, kind=obj["kind"], priority=priority,
                                  query=[("fieldManager", FIELD_MANAGER), ("force", "true")])

    async def create(self, obj: dict[str, Any], priority: int = NORMAL) -> dict[str, Any]:
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"))
        return await self.request("POST", path, obj, kind=obj["kind"], priority=priority)

    async def get(self, api_version: str, kind: str, namespace: str, name: str,
                  priority: int = NORMAL) -> Optional[dict[str, Any]]:
        try:
            return await self.request("GET", resource_path(api_version, kind, namespace, name), kind=kind,
                                      priority=priority)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def patch(self, api_version: str, kind: str, namespace: str, name: str, patch: dict[str, Any],
                    subresource: Optional[str] = None) -> Optional[dict[str, Any]]:
        """JSON merge patch; None when the object is gone."""
        path = resource_path(api_version, kind, namespace, name, subresource)
        try:
            return await self.request("PATCH", path, patch, MERGE_PATCH, kind=kind)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        try:
            await self.request("DELETE", resource_path(api_version, kind, namespace, name),
                               {"propagationPolicy": "Background"}, kind=kind)
        except ApiError as error:
            if error.status != 404:
                raise

    async def ensure(self, obj: dict[str, Any], owner_uid: str, priority: int = NORMAL,
                     apply: bool = False) -> tuple[dict[str, Any], bool]:
        """Create ``obj`` or find it; (live object, created). Idempotent thanks to deterministic names.

        409 AlreadyExists counts as success once the existing object is verified to belong to
        ``owner_uid``; otherwise :class:`NotOwnedError`. With ``apply``, an existing object of the
        owner's is then brought to ``obj`` by server-side apply (for children whose whole desired
        state the operator owns); without it, it is returned as found (a Job's template is immutable).
        """
        try:
            return await self.create(obj, priority), True
        except ApiError as error:
            if error.status != 409:
                raise
        meta = obj["metadata"]
        live = await self.get(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"], priority)
        if live is None:  # deleted in between: try once more on the next round
            raise ApiError(409, "Conflict", f"{obj['kind']} {meta['name']} was being deleted")
        if not owned_by(live, owner_uid):
            raise NotOwnedError(f"{obj['kind']} {meta['namespace']}/{meta['name']} exists and is not owned by "
                                f"this object")
        if apply:
            live = await self.apply(obj, priority)
        return live, False
