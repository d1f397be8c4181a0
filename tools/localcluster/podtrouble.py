"""Pods that will not start on their own, told apart from pods that are only slow.

A waiter (``make demo``, a test) that polls for a Deployment to be Available or a run to finish
would otherwise sit out its whole timeout behind a pod that can never get there. These do not
get better by waiting, so a waiter stops at the first one it sees and prints why:

- the scheduler found no Node for it (``PodScheduled=False``, reason ``Unschedulable``);
- a container is in ``CrashLoopBackOff`` having crashed twice (once may be a dependency not up
  yet; kubelet backs off the same way either way), or waits on something it lacks (a missing ConfigMap or
  Secret key: ``CreateContainerConfigError``; an image the node will not run);
- a container could not be started at all (``StartError``: its command does not exist, say).

:func:`pod_problem` is pure; :func:`report` adds the pod's last log lines and its events, which
is what ``kubectl describe`` and ``kubectl logs --previous`` would have shown.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

WAITING_FOR_GOOD = {"CrashLoopBackOff", "CreateContainerConfigError", "ImageNotRunnable", "ImageSkipped",
                    "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "RunContainerError"}
NEVER_STARTED = {"StartError", "ContainerCannotRun"}
LOG_LINES = 20


def pod_problem(pod: Mapping[str, Any]) -> str | None:
    """Why ``pod`` cannot start without someone changing something, or None."""
    status = pod.get("status") or {}
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return None
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False" \
                and condition.get("reason") == "Unschedulable":
            return f"Unschedulable: {condition.get('message', '')}".rstrip(": ")
    for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (container.get("state") or {}).get("waiting") or {}
        crashed_once = waiting.get("reason") == "CrashLoopBackOff" and not container.get("restartCount")
        if waiting.get("reason") in WAITING_FOR_GOOD and not crashed_once:
            last = ((container.get("lastState") or {}).get("terminated") or {})
            detail = waiting.get("message") or ""
            if last:
                detail = f"last run ended {last.get('reason', '')} (exit code {last.get('exitCode')})" + (
                    f": {last['message']}" if last.get("message") else "")
            return f"container {container['name']}: {waiting['reason']}" + (f": {detail}" if detail else "")
        for state in ((container.get("state") or {}).get("terminated"),
                      (container.get("lastState") or {}).get("terminated")):
            if state and state.get("reason") in NEVER_STARTED:
                return f"container {container['name']}: {state['reason']}: {state.get('message', '')}".rstrip(": ")
    return None


def report(pod: Mapping[str, Any], problem: str, logs: Callable[[str], str], events: list[Mapping[str, Any]]) -> str:
    """What a person needs to see: the problem, each container's last log lines, the pod's events."""
    meta = pod["metadata"]
    lines = [f"pod {meta['namespace']}/{meta['name']} cannot start: {problem}"]
    for container in (pod.get("spec") or {}).get("containers") or []:
        try:
            text = logs(container["name"])
        except LookupError:
            text = ""
        tail = text.splitlines()[-LOG_LINES:]
        lines.append(f"--- last {len(tail)} log lines of container {container['name']}")
        lines += [f"    {line}" for line in tail] or ["    (no output)"]
    lines.append("--- events")
    for event in sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or ""):
        count = f" (x{event['count']})" if event.get("count", 1) > 1 else ""
        lines.append(f"    {event.get('type', '')} {event.get('reason', '')}{count}: {event.get('message', '')}")
    if lines[-1] == "--- events":
        lines.append("    (none)")
    return "\n".join(lines)
