"""Startup, readiness and liveness probes: httpGet, tcpSocket and exec, with the kubelet's thresholds."""

from __future__ import annotations

import http.client
import socket
import ssl
from typing import Callable

# exec_fn(command, timeout_seconds) -> (exit code, output)
ExecFn = Callable[[list[str], float], tuple[int, str]]


def _port(value, container: dict) -> int:
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    for port in container.get("ports") or []:
        if port.get("name") == value:
            return int(port["containerPort"])
    raise ValueError(f"named port {value!r} is not declared by container {container['name']}")


def check(probe: dict, container: dict, pod_ip: str, exec_fn: ExecFn) -> tuple[bool, str]:
    """Run one probe once: (success, message for the Unhealthy event)."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    try:
        if "httpGet" in probe:
            return _http(probe["httpGet"], container, pod_ip, timeout)
        if "tcpSocket" in probe:
            host = probe["tcpSocket"].get("host") or pod_ip
            port = _port(probe["tcpSocket"]["port"], container)
            with socket.create_connection((host, port), timeout=timeout):
                return True, ""
        if "exec" in probe:
            code, output = exec_fn(probe["exec"].get("command") or [], timeout)
            return code == 0, f"command exited {code}: {output.strip()[-300:]}" if code else ""
        if "grpc" in probe:
            return False, "grpc probes are not supported by the local node"
        return False, "probe has no handler"
    except (OSError, ValueError, http.client.HTTPException) as err:
        return False, str(err) or type(err).__name__


def _http(action: dict, container: dict, pod_ip: str, timeout: float) -> tuple[bool, str]:
    host = action.get("host") or pod_ip
    port = _port(action["port"], container)
    path = action.get("path") or "/"
    if action.get("scheme", "HTTP").upper() == "HTTPS":
        connection = http.client.HTTPSConnection(host, port, timeout=timeout,
                                                 context=ssl._create_unverified_context())
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {h["name"]: h["value"] for h in action.get("httpHeaders") or []}
    headers.setdefault("User-Agent", "kube-probe/1.34")
    try:
        connection.request("GET", path, headers=headers)
        status = connection.getresponse().status
    finally:
        connection.close()
    if 200 <= status < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {status}"


class Prober:
    """One probe of one container run: when it is due and what its thresholds say."""

    def __init__(self, kind: str, probe: dict):
        self.kind = kind  # startup, readiness or liveness
        self.probe = probe
        self.period = float(probe.get("periodSeconds") or 10)
        self.success_threshold = int(probe.get("successThreshold") or 1)
        self.failure_threshold = int(probe.get("failureThreshold") or 3)
        self.next_run = float("inf")
        self.successes = 0
        self.failures = 0
        # Readiness starts failed, startup unknown, liveness healthy: as in the kubelet.
        self.healthy = kind == "liveness"

    def arm(self, started_at: float) -> None:
        self.next_run = started_at + float(self.probe.get("initialDelaySeconds") or 0)
        self.successes = self.failures = 0
        self.healthy = self.kind == "liveness"

    def disarm(self) -> None:
        self.next_run = float("inf")

    def due(self, now: float) -> bool:
        return now >= self.next_run

    def run(self, now: float, container: dict, pod_ip: str, exec_fn: ExecFn) -> tuple[bool, str]:
        """Probe once; returns (whether ``healthy`` changed, failure message)."""
        ok, message = check(self.probe, container, pod_ip, exec_fn)
        self.next_run = now + self.period
        before = self.healthy
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= self.success_threshold:
                self.healthy = True
        else:
            self.successes, self.failures = 0, self.failures + 1
            if self.failures >= self.failure_threshold:
                self.healthy = False
        return before != self.healthy, message
