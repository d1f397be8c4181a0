"""Where live progress goes: the run's status subresource and the log.

Least privilege: the trainer's ServiceAccount may patch only its own run's ``/status``
subresource, and the trainer writes only ``status.progress`` (a JSON merge patch, at most
every ``min_interval`` seconds) and, once in its prepare stage, ``status.memoryPlan``
(:meth:`StatusPatcher.record`). The operator creates that Role and RoleBinding beside the Job,
not before it, and RBAC reaches the authorizer's cache a moment later still, so a refusal
(401/403/404) in the first ``grant_grace`` seconds is retried on the next update; after that it
stops the patching. Any failure logs one warning, and training carries on.

Without the ML stack: the publish stage reports its progress through these too.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Protocol

from codex_api import API_GROUP, API_VERSION
from codex_api.training_run import PLURAL

from .logs import event

log = logging.getLogger(__name__)


class Sink(Protocol):
    def __call__(self, progress: dict[str, Any], force: bool = False) -> None: ...


def record(sinks: list, field: str, value: dict[str, Any]) -> None:
    """Hand ``status.<field>`` (written once, not throttled) to each sink that keeps such records."""
    for sink in sinks:
        if hasattr(sink, "record"):
            sink.record(field, value)


class StatusPatcher:
    """Merge-patches ``status.progress`` of one CodexTrainingRun through the status subresource."""

    def __init__(self, name: str, namespace: str, min_interval: float = 10.0, api: Any = None,
                 clock: Callable[[], float] = time.monotonic, grant_grace: float = 300.0):
        self.name, self.namespace = name, namespace
        self.min_interval = min_interval
        self.clock = clock
        self._grace_until = clock() + grant_grace
        self._api = api
        self._last = -float("inf")
        self._warned = False
        self._disabled = False
        self._pending: dict[str, Any] = {}  # recorded fields not yet patched

    def __call__(self, progress: dict[str, Any], force: bool = False) -> None:
        now = self.clock()
        if self._disabled or (not force and now - self._last < self.min_interval):
            return
        self._last = now
        self._patch({"progress": progress}, now)

    def record(self, field: str, value: dict[str, Any]) -> None:
        """``status.<field>`` now (the memory plan); if that fails, again with each progress patch until one lands."""
        self._pending[field] = value
        if not self._disabled:
            self._patch({}, self.clock())

    def _patch(self, status: dict[str, Any], now: float) -> None:
        body = {**self._pending, **status}
        try:
            self._client().patch_namespaced_custom_object_status(
                API_GROUP, API_VERSION, self.namespace, PLURAL, self.name, {"status": body}
            )
            self._pending.clear()
        except Exception as error:  # any failure: warn once, keep training
            code = getattr(error, "status", None)
            if code in (401, 403, 404) and now >= self._grace_until:
                self._disabled = True  # no permission (or no run): retrying only adds load
            if not self._warned or self._disabled:  # the first failure, and the one that disables
                self._warned = True
                log.warning('{"event": "progress.patch_failed", "status": %s, "error": "%s", "next": "%s"}',
                            code or "null", type(error).__name__, "disabled" if self._disabled else "will retry")

    def _client(self) -> Any:
        if self._api is None:
            from kubernetes import client, config

            config.load_incluster_config()
            self._api = client.CustomObjectsApi()
        return self._api


class LogSink:
    """One ``progress`` log line at most every ``min_interval`` seconds (and on stage changes)."""

    def __init__(self, min_interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.min_interval, self.clock = min_interval, clock
        self._last = -float("inf")

    def __call__(self, progress: dict[str, Any], force: bool = False) -> None:
        now = self.clock()
        if force or now - self._last >= self.min_interval:
            self._last = now
            fields = {k: v for k, v in progress.items() if k != "stage"}
            event(progress.get("stage") or "train", "progress", **fields)
