"""PodWorker: one thread per pod, driving it from Pending to a terminal phase or deletion.

The thread spawns every process of its pod and lives until they have all
exited: the shim sets SIGKILL as parent-death signal, which the kernel ties to
the spawning thread, so a pod's processes die with the agent but never early.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from pathlib import Path

from .. import layout
from . import dnsfiles, probes
from . import status as pod_status
from . import launch as launch_spec
from .config import image_problem
from .container import Container
from .env import ConfigError
from .kube import now_rfc3339
from .podnetwork import Sandbox, SandboxError
from .volumes import PodVolumes, VolumeError

log = logging.getLogger(__name__)
DEFAULT_GRACE = 30
POD_COMPLETED = "pod completed"  # kill reason of sidecars once every main container is done
RETRY_MAX = 30.0
TERMINAL = ("Succeeded", "Failed")


class PodWorker(threading.Thread):
    def __init__(self, pod: dict, agent, gpus: list[int]):
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.pod = pod
        self.agent = agent
        self.kube = agent.kube
        self.config = agent.config
        self.uid, self.namespace, self.pod_name = meta["uid"], meta["namespace"], meta["name"]
        self.node = pod["spec"]["nodeName"]
        self.network = agent.network
        self.sandbox: Sandbox | None = None  # made in _prepare: its IP is the pod's
        self.host_ip = self.network.node_address(self.node)
        self.gpus = gpus
        self.wake = threading.Event()
        self.deleting = bool(meta.get("deletionTimestamp"))
        self.gone = False  # the pod object no longer exists: nothing to patch or delete
        self.shutting_down = False  # the agent is stopping: kill quickly, touch nothing in the API
        self.pod_path = layout.pod_dir(self.config.state_dir, self.namespace, self.pod_name, self.uid)
        self.home = self.pod_path / "home"
        previous = pod.get("status") or {}
        self.start_time = previous.get("startTime") or now_rfc3339()
        self.conditions = {c["type"]: c for c in previous.get("conditions") or [] if c["type"] != "PodScheduled"}
        counts = {c["name"]: c.get("restartCount", 0)
                  for c in (previous.get("containerStatuses") or []) + (previous.get("initContainerStatuses") or [])}
        running_dir = self.config.state_dir / "running"
        running_dir.mkdir(parents=True, exist_ok=True)
        spec = pod["spec"]
        shim = agent.shim
        self.init = [Container(c, self.uid, self.pod_path, running_dir, shim, c.get("restartPolicy") == "Always",
                               counts.get(c["name"], 0)) for c in spec.get("initContainers") or []]
        self.main = [Container(c, self.uid, self.pod_path, running_dir, shim, False, counts.get(c["name"], 0))
                     for c in spec["containers"]]
        self.init_index = 0
        self.volumes = PodVolumes(self.kube, self._view(), self.pod_path, self._allocatable())
        self.prepared = False
        self.retry_at, self.retry_backoff = 0.0, 1.0
        self.published: dict | None = None
        self.publish_retry_at = 0.0
        self.restart_policy = spec.get("restartPolicy") or "Always"

    # ----- called from the agent's watch thread ------------------------------------------------------
    def update(self, pod: dict) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.deleting = True
        self.wake.set()

    def vanish(self) -> None:
        self.gone = self.deleting = True
        self.wake.set()

    def shutdown(self) -> None:
        self.shutting_down = self.deleting = True
        self.wake.set()

    # ----- the thread ------------------------------------------------------------------------------------
    @property
    def containers(self) -> list[Container]:
        return self.init + self.main

    @property
    def initialized(self) -> bool:
        return self.init_index >= len(self.init)

    def run(self) -> None:
        try:
            self._run()
        except Exception as err:  # noqa: BLE001 - a bug must not leave processes or crash the agent
            log.exception("pod %s/%s: worker failed", self.namespace, self.pod_name)
            self._stop_all(0.0)
            if not self.gone and not self.shutting_down:
                self._event("Warning", "AgentError", f"node agent error: {err}")
        finally:
            self.agent.worker_finished(self)

    def _run(self) -> None:
        self.pod_path.mkdir(parents=True, exist_ok=True)
        (self.pod_path / "meta.json").write_text(json.dumps({
            "namespace": self.namespace, "name": self.pod_name, "uid": self.uid,
            "containers": [c.name for c in self.main], "initContainers": [c.name for c in self.init]}))
        problems = {c["name"]: image_problem(c.get("image", ""), self.config)
                    for c in self.pod["spec"]["containers"] + (self.pod["spec"].get("initContainers") or [])}
        if any(problems.values()):
            self._hold(problems)
            return
        while not self.deleting:
            self._step(time.monotonic())
            self._publish()
            if self._phase() in TERMINAL and not any(c.running for c in self.containers):
                return
            self.wake.wait(max(0.02, self._next_deadline() - time.monotonic()))
            self.wake.clear()
        self._terminate()

    def _hold(self, problems: dict) -> None:
        """Images the agent will not run: stay Pending with the reason on each container, and say so once."""
        for container in self.containers:
            problem = problems.get(container.name)
            if problem:
                container.set_waiting(*problem)
            else:
                container.set_waiting("PodInitializing")
        reason, message = next(p for p in problems.values() if p)
        self._publish()
        self._event("Warning", reason, message)

    # ----- one pass of the loop --------------------------------------------------------------------------
    def _step(self, now: float) -> None:
        if not self.prepared and not self._prepare(now):
            return
        if (self.volumes.refresh_due() or float("inf")) <= now:
            self._guarded_volume_refresh()
        for container in self.containers:
            if container.running:
                code = container.exited()
                if code is not None:
                    self._on_exit(container, code)
            container.enforce_stop(now)
        self._advance_init(now)
        if self.initialized:
            for container in self.main:
                if not container.running and not container.done and now >= container.next_start:
                    self._start(container, now)
            if self.main and all(c.done for c in self.main):
                for sidecar in (c for c in self.init if c.running):
                    sidecar.stop(self._grace(), POD_COMPLETED)
        for container in self.containers:
            self._probe(container, now)

    @property
    def pod_ip(self) -> str:
        return self.sandbox.ip if self.sandbox else ""

    def _make_sandbox(self) -> None:
        """The pod's network (its own namespace through CNI, or the node's), and the /etc files that go with it."""
        self.sandbox = self.network.sandbox(self.pod)
        etc = self.pod_path / "etc"
        etc.mkdir(exist_ok=True)
        if self.network.real:
            node_resolv = Path("/etc/resolv.conf").read_text() if Path("/etc/resolv.conf").exists() else ""
            (etc / "resolv.conf").write_text(dnsfiles.resolv_conf(self.pod, self.network.dns_ip, node_resolv))
            if self.sandbox.own:  # kubelet leaves a hostNetwork pod the node's /etc/hosts
                (etc / "hosts").write_text(dnsfiles.hosts_file(self.pod, self.sandbox.ip))
        for path in etc.iterdir():
            path.chmod(0o644)

    def _prepare(self, now: float) -> bool:
        if now < self.retry_at:
            return False
        if self.sandbox is None:
            try:
                self._make_sandbox()
            except (SandboxError, OSError) as err:
                return self._not_yet(now, "FailedCreatePodSandBox", f"Failed to create pod sandbox: {err}")
        try:
            self.volumes.setup()
        except Exception as err:  # noqa: BLE001 - bad input or a busy apiserver: report and retry
            return self._not_yet(now, "FailedMount",
                                 f"MountVolume.SetUp failed: {getattr(err, 'reason', None) or err}")
        self.prepared = True
        self.retry_backoff = 1.0
        for container in self.init[:1] if self.init else self.main:
            container.set_waiting("ContainerCreating")
        for container in self.init[1:] + (self.main if self.init else []):
            container.set_waiting("PodInitializing")
        return True

    def _not_yet(self, now: float, reason: str, message: str) -> bool:
        """The pod cannot be prepared yet: say why on every container and in an event, and retry later."""
        for container in self.containers:
            container.set_waiting("ContainerCreating", message)
        self._event("Warning", reason, message)
        self._retry_later(now)
        return False

    def _retry_later(self, now: float) -> None:
        self.retry_at = now + self.retry_backoff
        self.retry_backoff = min(self.retry_backoff * 2, RETRY_MAX)

    def _guarded_volume_refresh(self) -> None:
        try:
            self.volumes.refresh()
        except Exception as err:  # noqa: BLE001 - keep the old contents; retry at the next renewal
            self._event("Warning", "FailedMount", f"refreshing volumes failed: {err}")

    def _advance_init(self, now: float) -> None:
        while not self.initialized:
            container = self.init[self.init_index]
            if container.succeeded or (container.sidecar and container.started):
                self.init_index += 1
                continue
            if not container.running and not container.done and now >= container.next_start:
                self._start(container, now)
            return

    # ----- containers -------------------------------------------------------------------------------------
    def _start(self, container: Container, now: float) -> None:
        try:
            launch = launch_spec.build(self.kube, self.config, self._view(), container.spec, self.volumes,
                                       container.termination_log, self.home, self.gpus, self._allocatable())
        except Exception as err:  # noqa: BLE001 - bad input or a busy apiserver: report and retry
            if not isinstance(err, (ConfigError, VolumeError, OSError, ValueError)):
                log.warning("pod %s/%s: configuring %s failed: %r", self.namespace, self.pod_name, container.name, err)
            container.set_waiting("CreateContainerConfigError", str(getattr(err, "reason", None) or err))
            container.next_start = now + min(2.0 * (1 + container.restart_count), RETRY_MAX)
            self._event("Warning", "Failed", f"Error: {err}", container.name)
            return
        if container.record is not None:
            container.note_restart()
        self._join_sandbox(launch, container.spec)
        log_path = layout.container_log(self.pod_path, container.name, container.runs)
        container.launch = launch
        try:
            container.start(launch, log_path, self.wake)
        except OSError as err:
            container.set_waiting("RunContainerError", str(err))
            container.next_start = now + min(2.0 * (1 + container.restart_count), RETRY_MAX)
            self._event("Warning", "Failed", f"Error: {err}", container.name)
            return
        self._event("Normal", "Started", f"Started container {container.name}", container.name)

    def _join_sandbox(self, launch: dict, spec: dict) -> None:
        """The container joins the pod's network namespace (as a pause container's) and sees its /etc files."""
        launch["netns"] = self.sandbox.netns if self.sandbox else None
        taken = {m["mountPath"] for m in spec.get("volumeMounts") or []}
        for path in sorted((self.pod_path / "etc").glob("*")):
            target = f"/etc/{path.name}"
            if target not in taken:
                launch["mounts"].append({"source": str(path), "target": target, "read_only": False})

    def _on_exit(self, container: Container, code: int) -> None:
        policy = self.restart_policy
        if container in self.init and not container.sidecar:
            policy = "Never" if policy == "Never" else "OnFailure"
        log_path = layout.container_log(self.pod_path, container.name, container.runs)
        # A sidecar stopped because the pod's main containers are done does not come back.
        stopping = self.deleting or container.kill_reason == POD_COMPLETED
        restarting = container.finish(code, log_path, policy, stopping)
        if restarting:
            self._event("Warning", "BackOff", f"Back-off restarting failed container {container.name} "
                        f"(exit code {code})", container.name)

    def _probe(self, container: Container, now: float) -> None:
        if not container.running or container.stop_deadline is not None:
            return
        for kind, prober in list(container.probers.items()):
            if not prober.due(now):
                continue
            # From the node, as kubelet probes (a NetworkPolicy lets a pod's own node through).
            changed, message = self.network.from_node(self.node, lambda: prober.run(
                now, container.spec, self.pod_ip, lambda cmd, timeout: container.exec_in(cmd, container.launch,
                                                                                          timeout)))
            if kind == "startup" and prober.healthy:
                prober.disarm()
                for other in ("readiness", "liveness"):
                    if other in container.probers:
                        container.probers[other].arm(now)
            elif kind in ("startup", "liveness") and not prober.healthy and prober.failures >= prober.failure_threshold:
                self._event("Warning", "Unhealthy", f"{kind.capitalize()} probe failed: {message}", container.name)
                self._event("Normal", "Killing", f"Container {container.name} failed {kind} probe, will be "
                            "restarted", container.name)
                grace = prober.probe.get("terminationGracePeriodSeconds")
                container.stop(self._grace() if grace is None else float(grace), kind)
                return
            elif kind == "readiness" and changed and not prober.healthy:
                self._event("Warning", "Unhealthy", f"Readiness probe failed: {message}", container.name)

    # ----- termination -----------------------------------------------------------------------------------
    def _grace(self) -> float:
        meta_grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        if self.deleting and meta_grace is not None:
            return float(meta_grace)
        spec_grace = self.pod["spec"].get("terminationGracePeriodSeconds")
        return float(DEFAULT_GRACE if spec_grace is None else spec_grace)

    def _pre_stop(self, deadline: float) -> None:
        """Run the preStop hooks of the running containers side by side (sleep, exec, httpGet), each
        cut short at ``deadline``; a failed hook is a FailedPreStopHook event and stops nothing."""
        def run(container: Container, hook: dict) -> None:
            remaining = max(0.0, deadline - time.monotonic())
            if "sleep" in hook:
                time.sleep(min(float(hook["sleep"].get("seconds") or 0), remaining))
                return
            ok, message = self.network.from_node(self.node, lambda: probes.check(
                {**hook, "timeoutSeconds": max(remaining, 0.1)}, container.spec, self.pod_ip,
                lambda cmd, timeout: container.exec_in(cmd, container.launch, timeout)))
            if not ok:
                self._event("Warning", "FailedPreStopHook", f"PreStopHook failed: {message}", container.name)

        hooks = [threading.Thread(target=run, args=(c, c.spec["lifecycle"]["preStop"]), daemon=True)
                 for c in self.containers if c.running and (c.spec.get("lifecycle") or {}).get("preStop")]
        for thread in hooks:
            thread.start()
        for thread in hooks:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _stop_all(self, grace: float) -> None:
        for container in self.containers:
            if container.running:
                container.stop(grace, "deletion")
        while any(c.running for c in self.containers):
            now = time.monotonic()
            for container in self.containers:
                container.enforce_stop(now)
                code = container.exited() if container.running else None
                if code is not None:
                    self._on_exit(container, code)
            self.wake.wait(0.05)
            self.wake.clear()

    def _terminate(self) -> None:
        """Deletion: each container's preStop hook, SIGTERM, SIGKILL once the grace period (which the
        hooks count against, as kubelet's do) is over, final status, then remove the pod object."""
        grace = 2.0 if self.shutting_down else self._grace()
        deadline = time.monotonic() + grace
        if not self.shutting_down:
            for container in (c for c in self.containers if c.running):
                self._event("Normal", "Killing", f"Stopping container {container.name}", container.name)
            self._pre_stop(deadline)
        self._stop_all(max(0.0, deadline - time.monotonic()))
        if self.gone or self.shutting_down:
            return
        self._publish(final=True)
        self.kube.delete_pod_now(self.namespace, self.pod_name, self.uid)

    # ----- status ---------------------------------------------------------------------------------------------
    def _phase(self, final: bool = False) -> str:
        phase = pod_status.phase(self.init, self.main, self.initialized)
        if final and phase not in TERMINAL:
            return "Succeeded" if self.main and all(c.succeeded for c in self.main) else "Failed"
        return phase

    def _publish(self, final: bool = False) -> None:
        if self.gone or self.shutting_down or (time.monotonic() < self.publish_retry_at and not final):
            return
        phase = self._phase(final)
        pod_status.update_conditions(self.conditions, self.prepared, self.init[self.init_index:], self.main, phase)
        status = pod_status.pod_status(self.pod, self.pod_ip, self.host_ip, self.start_time, phase,
                                       self.conditions, self.init, self.main)
        if status == self.published:
            return
        try:
            if not self.kube.patch_pod_status(self.namespace, self.pod_name, status):
                self.gone = self.deleting = True
            self.published = copy.deepcopy(status)
        except Exception as err:  # noqa: BLE001 - the apiserver may be busy: try again shortly
            log.warning("pod %s/%s: status update failed: %s", self.namespace, self.pod_name, err)
            self.publish_retry_at = time.monotonic() + 1.0

    def _next_deadline(self) -> float:
        deadlines = [time.monotonic() + 30.0, self.volumes.refresh_due() or float("inf")]
        if not self.prepared:
            deadlines.append(self.retry_at)
        if self.publish_retry_at > time.monotonic():
            deadlines.append(self.publish_retry_at)
        for container in self.containers:
            if container.running:
                deadlines += [p.next_run for p in container.probers.values()]
                if container.stop_deadline is not None:
                    deadlines.append(container.stop_deadline)
            elif not container.done:
                deadlines.append(container.next_start)
        return min(deadlines)

    # ----- helpers ----------------------------------------------------------------------------------------------
    def _view(self) -> dict:
        """The pod as the downward API sees it: with our pod IP even before the status says so."""
        view = copy.deepcopy(self.pod)
        status = view.setdefault("status", {})
        status.update({"podIP": self.pod_ip, "podIPs": [{"ip": self.pod_ip}], "hostIP": self.host_ip,
                       "hostIPs": [{"ip": self.host_ip}]})
        return view

    def _allocatable(self) -> dict:
        return dict(self.config.node(self.node)["capacity"])

    def _event(self, event_type: str, reason: str, message: str, container: str | None = None) -> None:
        if not self.gone and not self.shutting_down:
            self.kube.event(self.pod, event_type, reason, message, self.node, container)
