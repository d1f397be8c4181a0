"""One container of a pod: its process, its probes, its restarts and its ContainerStatus."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .. import procs
from .kube import now_rfc3339
from .probes import Prober

SHIM_SOURCE = Path(__file__).resolve().parent / "mountns.py"


def install_shim(state_dir: Path) -> Path:
    """Copy the shim into the state dir: a running agent keeps the shim it started with, whatever is edited."""
    shim = state_dir / "mountns.py"
    shim.write_bytes(SHIM_SOURCE.read_bytes())
    return shim
MAX_MESSAGE = 4096
FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES = 80, 2048
BACKOFF_INITIAL, BACKOFF_MAX = 1.0, 60.0
BACKOFF_RESET_AFTER = 120.0  # a run this long forgets earlier crashes


def _oom_kills() -> int:
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Container:
    def __init__(self, spec: dict, pod_uid: str, pod_path: Path, running_dir: Path, shim: Path,
                 sidecar: bool = False, restart_count: int = 0):
        self.shim = shim
        self.spec = spec
        self.name = spec["name"]
        self.pod_uid = pod_uid
        self.sidecar = sidecar  # an init container with restartPolicy Always
        self.dir = pod_path / "containers" / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.termination_log = self.dir / "termination-log"
        self.termination_log.touch()
        self.termination_log.chmod(0o666)  # the container may run as any user
        self.running_record = running_dir / f"{pod_uid}-{self.name}.json"
        self.restart_count = restart_count
        self.runs = restart_count  # log file number of the next run
        self.state: dict = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: dict = {}
        self.proc: subprocess.Popen | None = None
        self.launch: dict = {}  # the shim spec of the current run, reused by exec probes
        self.record: procs.ProcessRecord | None = None
        self.started_at = 0.0
        self.next_start = 0.0
        self.backoff = 0.0
        self.done = False  # terminated and will not run again
        self.stop_deadline: float | None = None
        self.kill_reason = ""
        self.oom_kills_at_start = 0
        self.probers = {kind: Prober(kind, spec[f"{kind}Probe"])
                        for kind in ("startup", "readiness", "liveness") if spec.get(f"{kind}Probe")}

    # ----- state -------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None

    @property
    def started(self) -> bool:
        prober = self.probers.get("startup")
        return self.running and (prober is None or prober.healthy)

    @property
    def ready(self) -> bool:
        if not self.started:
            return False
        prober = self.probers.get("readiness")
        return prober is None or prober.healthy

    @property
    def succeeded(self) -> bool:
        return self.done and self.state.get("terminated", {}).get("exitCode") == 0

    def set_waiting(self, reason: str, message: str = "") -> None:
        self.state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}

    def status(self, image: str) -> dict:
        status = {"name": self.name, "image": image, "imageID": f"localcluster://{image}",
                  "restartCount": self.restart_count, "ready": self.ready, "started": self.started,
                  "state": self.state, "lastState": self.last_state}
        if self.record is not None:
            status["containerID"] = f"localcluster://{self.pod_uid}-{self.name}-{self.runs}"
        return status

    # ----- process -----------------------------------------------------------------------------
    def start(self, launch: dict, log_path: Path, wake: threading.Event) -> None:
        """Spawn the shim (which execs the command); ``launch`` is the shim's spec without the paths."""
        start_error = self.dir / "start-error"
        start_error.unlink(missing_ok=True)
        self.termination_log.write_text("")
        rootfs = self.dir / "rootfs"
        rootfs.mkdir(exist_ok=True)
        spec = {**launch, "rootfs": str(rootfs), "start_error": str(start_error), "agent_pid": os.getpid()}
        spec_path = self.dir / "launch.json"
        spec_path.touch(mode=0o600)
        spec_path.write_text(json.dumps(spec))
        self.record = None
        self.oom_kills_at_start = _oom_kills()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.record, self.proc = procs.spawn(f"{self.pod_uid}/{self.name}",
                                             [sys.executable, "-I", "-S", str(self.shim), "run", str(spec_path)],
                                             log_path, env={})
        self.running_record.write_text(json.dumps(self.record.to_dict()))
        self.started_at = time.monotonic()
        self.stop_deadline, self.kill_reason = None, ""
        self.state = {"running": {"startedAt": now_rfc3339()}}
        for prober in self.probers.values():
            prober.arm(self.started_at)
        for kind in ("readiness", "liveness"):  # these wait for the startup probe
            if "startup" in self.probers and kind in self.probers:
                self.probers[kind].disarm()
        proc = self.proc
        threading.Thread(target=lambda: (proc.wait(), wake.set()), daemon=True,
                         name=f"reap-{self.name}").start()

    def exec_in(self, command: list[str], launch: dict, timeout: float) -> tuple[int, str]:
        """Run ``command`` inside this container's namespaces, as its user (exec probes)."""
        if self.proc is None:
            return 1, "container is not running"
        spec = {**launch, "argv": command, "start_error": "/dev/null", "agent_pid": os.getpid()}
        spec_path = self.dir / "exec.json"
        spec_path.touch(mode=0o600)
        spec_path.write_text(json.dumps(spec))
        try:
            done = subprocess.run([sys.executable, "-I", "-S", str(self.shim), "enter", str(self.proc.pid),
                                   str(spec_path)], capture_output=True, text=True, timeout=timeout, env={})
        except subprocess.TimeoutExpired:
            return 1, f"command timed out after {timeout}s"
        return done.returncode, done.stdout + done.stderr

    def stop(self, grace: float, reason: str) -> None:
        """SIGTERM the container's process group now; ``enforce_stop`` sends SIGKILL at the deadline."""
        if self.proc is None or self.stop_deadline is not None:
            return
        self.kill_reason = reason
        self.stop_deadline = time.monotonic() + max(grace, 0.0)
        self._signal(signal.SIGTERM)

    def enforce_stop(self, now: float) -> None:
        if self.proc is not None and self.stop_deadline is not None and now >= self.stop_deadline:
            self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def exited(self) -> int | None:
        """The exit code once the process has ended (128+signal for a signal), else None."""
        if self.proc is None or self.proc.poll() is None:
            return None
        code = self.proc.returncode
        # Whatever the main process left in its group goes with it, as in a container.
        self._signal(signal.SIGKILL)
        return 128 - code if code < 0 else code

    def finish(self, code: int, log_path: Path, restart_policy: str, stopping: bool) -> bool:
        """Record the terminated state; decide whether to run again. Returns True if it will restart."""
        start_error = self.dir / "start-error"
        reason = "Completed" if code == 0 else "Error"
        message = self._termination_message(code, log_path)
        if start_error.exists() and start_error.stat().st_size:
            reason, message = "StartError", start_error.read_text()[:MAX_MESSAGE]
        elif code == 128 + signal.SIGKILL and not self.kill_reason and _oom_kills() > self.oom_kills_at_start:
            reason = "OOMKilled"
        terminated = {"exitCode": code, "reason": reason, "startedAt": self.state.get("running", {}).get(
            "startedAt", now_rfc3339()), "finishedAt": now_rfc3339(), "containerID": self.status("")["containerID"]}
        if message:
            terminated["message"] = message
        ran_for = time.monotonic() - self.started_at
        self.proc = None
        self.running_record.unlink(missing_ok=True)
        for prober in self.probers.values():
            prober.disarm()
        restart = not stopping and (restart_policy == "Always" or self.sidecar
                                    or (restart_policy == "OnFailure" and code != 0))
        if not restart:
            self.state, self.done = {"terminated": terminated}, True
            return False
        self.backoff = BACKOFF_INITIAL if ran_for > BACKOFF_RESET_AFTER or not self.backoff else min(
            self.backoff * 2, BACKOFF_MAX)
        self.next_start = time.monotonic() + self.backoff
        self.last_state = {"terminated": terminated}
        self.set_waiting("CrashLoopBackOff", f"back-off {self.backoff:.0f}s restarting failed container="
                                             f"{self.name} pod={self.pod_uid}")
        return True

    def note_restart(self) -> None:
        self.restart_count += 1
        self.runs += 1

    def _termination_message(self, code: int, log_path: Path) -> str:
        try:
            message = self.termination_log.read_bytes()[:MAX_MESSAGE].decode(errors="replace")
        except OSError:
            message = ""
        if not message and code != 0 and self.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            try:
                lines = log_path.read_bytes().decode(errors="replace").splitlines()[-FALLBACK_LOG_LINES:]
            except OSError:
                lines = []
            message = "\n".join(lines)[-FALLBACK_LOG_BYTES:]
        return message
