"""List, then watch from the list's resourceVersion; relist only when the watch expires (410 Gone)."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)
WATCH_SECONDS = 240


def run_informer(name: str, list_fn: Callable, on_list: Callable[[list[dict]], None],
                 on_event: Callable[[str, dict], None], stop: threading.Event, **selectors) -> None:
    """Feed ``on_list`` every (re)list and ``on_event`` every watch event, until ``stop`` is set.

    Handlers get plain dicts (the wire JSON). Errors in a handler are logged and
    never end the loop: one bad object must not stop the agent.
    """
    while not stop.is_set():
        try:
            response = list_fn(_preload_content=False, _request_timeout=30, **selectors)
            listed = json.loads(response.data)
            resource_version = listed["metadata"]["resourceVersion"]
            _guard(name, on_list, listed.get("items") or [])
            resource_version = _watch(name, list_fn, on_event, stop, resource_version, selectors)
        except Exception as err:  # noqa: BLE001 - the API may be restarting; back off and relist
            if stop.is_set():
                return
            log.warning("%s: list/watch failed (%s); retrying", name, err)
            stop.wait(1.0)


def _watch(name, list_fn, on_event, stop, resource_version, selectors) -> str:
    while not stop.is_set():
        watcher = watch.Watch()
        started = time.monotonic()
        try:
            for event in watcher.stream(list_fn, resource_version=resource_version, timeout_seconds=WATCH_SECONDS,
                                        allow_watch_bookmarks=True, _request_timeout=WATCH_SECONDS + 30,
                                        **selectors):
                if stop.is_set():
                    watcher.stop()
                    break
                raw = event.get("raw_object") or {}
                resource_version = raw.get("metadata", {}).get("resourceVersion", resource_version)
                if event["type"] != "BOOKMARK":
                    _guard(name, on_event, event["type"], raw)
        except ApiException as err:
            if err.status == 410:
                return resource_version  # the watch expired: the caller relists
            raise
        if time.monotonic() - started < 1:
            stop.wait(1.0)  # a watch that ends at once would otherwise spin
    return resource_version


def _guard(name: str, handler: Callable, *args) -> None:
    try:
        handler(*args)
    except Exception:  # noqa: BLE001
        log.exception("%s: handler failed", name)
