"""The parallel executor: every sample of an evaluation in its own process, on a pool sized to the CPUs.

:func:`run_programs` starts one executor process (a bare ``python -I`` with a scrubbed environment
and none of the caller's descriptors) and sends it the batch. The executor makes itself
non-dumpable (``PR_SET_DUMPABLE`` 0: a same-uid program can neither ptrace it nor read its
/proc/<pid>/mem, environ or fd) and a child subreaper (``PR_SET_CHILD_SUBREAPER``: an orphaned
descendant comes back to it, not to init), imports what programs commonly use, and then forks every
sample from itself, a warm "zygote": a sample starts in about a millisecond instead of the 20-40 ms
of a fresh interpreter. The child enters :func:`sandbox.enter_sample` and runs the program.

A program decides at most its own sample, through its exit status, which only the executor
observes (waitpid). Its output goes to a memfd that only it and the executor hold, kept as a
diagnostic tail. Results are held in the executor's memory and sent over a pipe no program holds;
nothing is read back from anything a program can write. What a program cannot do to the others:

- outlive its sample: its process group is killed when it ends, its whole tree (walked through /proc
  by ppid) at its timeout, and an orphan reparented to the executor that is not a live sample's root
  at the next sweep; at the end the executor kills and reaps until it has no child left;
- change a sibling's result by killing or stopping it: a sample that dies by a signal the executor
  did not send, or is found stopped at its timeout, runs again alone once the batch is done;
- change the results by killing or stopping the executor: the caller sees it die (or fall silent past
  a watchdog), kills what is left of its tree and runs the unfinished samples again one at a time; a
  program that kills the executor while it runs alone is the one marked "killed".

What it still can (hence the separate, credential-less, network-less pod): whatever its uid can do
outside this process tree (read what the uid can read, use the network, signal other processes of
the uid), slow its siblings down, and touch their scratch directories, from which nothing is read.
"""

from __future__ import annotations

import gc
import json
import math
import os
import select
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from .sandbox import (NOBODY, OUTPUT_TAIL_BYTES, Limits, SandboxResult, classify, enter_sample, kill_descendants,
                      kill_tree, parents_of_all, process_state, scrubbed_env, user_task_count)

PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 4, 36
# At least this often the executor looks for orphans; more rarely when a /proc scan is slow (many processes).
SWEEP_SECONDS = 0.1
# The caller gives up on a silent executor after two timeouts plus this (start-up on a loaded machine).
WATCHDOG_SLACK_SECONDS = 30.0
# What HumanEval-style programs import, loaded once so that a forked sample finds them ready.
WARM_MODULES = ("array", "bisect", "cmath", "collections", "copy", "dataclasses", "datetime", "decimal", "enum",
                "fractions", "functools", "hashlib", "heapq", "itertools", "json", "math", "numbers", "operator",
                "random", "re", "statistics", "string", "textwrap", "threading", "typing", "unicodedata")
# Kept out of the executor's sys.modules, so that a program importing them passes the audit hook's check.
FORGET_MODULES = ("ctypes", "_ctypes", "subprocess", "_posixsubprocess", "socket", "_socket")
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[1])
_BOOT = ("import sys; sys.path.insert(0, {root!r}); from codex_trainer.executor import serve; "
         "sys.path[:] = [p for p in sys.path if p and p != {root!r}]; serve()")

Progress = Callable[[int, int], None]


# ---- the executor process ----------------------------------------------------------------------
@dataclass
class _Sample:
    index: int
    started: float
    output: int  # memfd with the program's stdout and stderr
    workdir: Path
    timed_out: bool = False
    stopped: bool = False  # found stopped (SIGSTOP) at its timeout: a sibling may have stopped it


class _Pool:
    """The executor's own state: the programs, the live samples and the suspects, in this process only."""

    def __init__(self, request: dict, emit: Callable[[dict], None]):
        self.programs: list[str] = request["programs"]
        self.limits = Limits(**request["limits"])
        self.workers = max(1, int(request["workers"]))
        self.scratch = Path(request["scratch"])
        self.emit = emit
        self.drop_to = NOBODY if os.geteuid() == 0 else None
        uid = self.drop_to if self.drop_to is not None else os.getuid()
        self.nproc = user_task_count(uid) + self.workers * self.limits.processes
        self.running: dict[int, _Sample] = {}
        self.suspects: list[int] = []
        self.next_sweep, self.sweep_every = 0.0, SWEEP_SECONDS

    def run(self) -> None:
        """All samples on the pool; then, one at a time, those a sibling may have killed or stopped."""
        self._phase(list(range(len(self.programs))), self.workers)
        self._phase(self.suspects, 1)

    def _phase(self, indices: list[int], workers: int) -> None:
        pending = deque(indices)
        while pending or self.running:
            while pending and len(self.running) < workers:
                if workers == 1:
                    self.drain()  # alone means alone: nothing is left of the samples before it
                self._spawn(pending.popleft())
            self._wait()
            self._reap(rerun=workers > 1)
            self._expire()
            if time.monotonic() >= self.next_sweep:
                self._sweep()

    def _spawn(self, index: int) -> None:
        workdir = self.scratch / f"sample-{index:05d}"
        workdir.mkdir(mode=0o700)
        if self.drop_to is not None:
            os.chown(workdir, self.drop_to, self.drop_to)
        output = os.memfd_create(f"codex-sample-{index}")
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            enter_sample(self.programs[index], str(workdir), output, self.limits, self.drop_to, self.nproc)
        self.running[pid] = _Sample(index, started, output, workdir)
        self.emit({"started": index, "pid": pid})

    def _wait(self) -> None:
        """Until a child changes state, the next deadline or the next sweep, whichever comes first."""
        now = time.monotonic()
        wakes = [self.next_sweep] + [s.started + self.limits.timeout_seconds for s in self.running.values()
                                     if not s.timed_out]
        timeout = min(wakes) - now
        if timeout > 0:
            signal.sigtimedwait([signal.SIGCHLD], timeout)

    def _reap(self, rerun: bool) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            sample = self.running.pop(pid, None)
            if sample is not None:  # else an orphan the sweep killed
                self._finish(pid, sample, status, rerun)

    def _finish(self, pid: int, sample: _Sample, status: int, rerun: bool) -> None:
        try:  # what is left in its group now; any that left the group are orphaned to us and swept
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        result = classify(status, sample.timed_out, time.monotonic() - sample.started, _tail(sample.output))
        os.close(sample.output)
        shutil.rmtree(sample.workdir, ignore_errors=True)
        if rerun and (sample.stopped or (result.status == "killed" and not sample.timed_out)):
            self.suspects.append(sample.index)
        else:
            self.emit({"index": sample.index, **asdict(result)})

    def _expire(self) -> None:
        now = time.monotonic()
        for pid, sample in self.running.items():
            if not sample.timed_out and now >= sample.started + self.limits.timeout_seconds:
                sample.timed_out, sample.stopped = True, process_state(pid) in ("T", "t")
                kill_tree(pid)

    def _sweep(self) -> None:
        """Kill every child that is not a live sample's root: an orphan that left its sample (setsid)."""
        started = time.monotonic()
        me, parents = os.getpid(), parents_of_all()
        for pid, parent in parents.items():
            if parent == me and pid not in self.running:
                kill_tree(pid, parents)
        finished = time.monotonic()
        self.sweep_every = max(SWEEP_SECONDS, 20 * (finished - started))  # scans stay under 5% of a core
        self.next_sweep = finished + self.sweep_every

    def drain(self) -> None:
        """Kill and reap every descendant until no child is left. A sample still running then (the executor
        is being stopped) gets no result: it was not its doing, and the caller runs it again."""
        while True:
            try:
                os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return  # no child at all, not even an orphan: nothing to scan for
            kill_descendants(os.getpid())
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                return
            sample = self.running.pop(pid, None)
            if sample is not None:
                os.close(sample.output)
                shutil.rmtree(sample.workdir, ignore_errors=True)


def _tail(output: int) -> str:
    size = os.fstat(output).st_size
    return os.pread(output, OUTPUT_TAIL_BYTES, max(0, size - OUTPUT_TAIL_BYTES)).decode("utf-8", "replace")


def _harden() -> None:
    """Non-dumpable and a child subreaper, before anything else; then forget ctypes (see FORGET_MODULES)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for option, value in ((PR_SET_DUMPABLE, 0), (PR_SET_CHILD_SUBREAPER, 1)):
        if libc.prctl(option, value, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl({option}, {value}) failed")
    for name in WARM_MODULES:
        __import__(name)
    for name in [m for m in sys.modules if m.split(".")[0] in FORGET_MODULES]:
        del sys.modules[name]
    gc.freeze()  # what is loaded now stays out of the samples' collections: fewer copy-on-write pages


def serve() -> None:
    """The executor process: harden, read the batch from stdin, run it, send each result as a JSON line."""
    _harden()
    results = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # a stray print of ours cannot reach the results
    request = json.loads(sys.stdin.buffer.read())
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])  # taken by sigtimedwait instead

    def emit(message: dict) -> None:
        results.write(json.dumps(message) + "\n")
        results.flush()

    pool = _Pool(request, emit)
    emit({"ready": True})
    try:
        pool.run()
    finally:
        pool.drain()
    emit({"done": True})


# ---- the caller's side -------------------------------------------------------------------------
class ExecutorError(RuntimeError):
    """The executor itself failed (not a program): a bug or a broken environment, reported with its stderr."""


def available_cpus() -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup CPU quota (a pod's CPU limit)."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus


def _world_executable(path: str) -> bool:
    real = Path(os.path.realpath(path))
    if not (real.is_file() and real.stat().st_mode & 0o001):
        return False
    return all(parent.stat().st_mode & 0o001 for parent in real.parents)


def interpreter(dropping_privileges: bool) -> str:
    """A Python whose standard library the samples can read: ours, or (when they drop to nobody) a
    system one if ours sits in a private directory such as /root."""
    if not dropping_privileges:
        return sys.executable
    for candidate in (sys.executable, shutil.which("python3") or "", "/usr/bin/python3"):
        if candidate and _world_executable(candidate):
            return candidate
    raise ExecutorError("sandbox: no Python interpreter is executable by the unprivileged user")


def run_programs(programs: Sequence[str], limits: Limits = Limits(), *, workers: Optional[int] = None,
                 progress: Optional[Progress] = None) -> list[SandboxResult]:
    """Run every program (Python source) in its own sandboxed process, ``workers`` at a time (default:
    the CPUs available), and say how each ended; never raises for what a program does.

    ``progress(done, total)`` is called after each result. If the executor dies or falls silent,
    what did not finish runs again, one at a time; a program that kills the executor while it runs
    alone is marked "killed" and the rest carry on.
    """
    results: dict[int, SandboxResult] = {}
    remaining = list(range(len(programs)))
    pool = max(1, min(workers or available_cpus(), len(programs)))

    def record(index: int, result: SandboxResult) -> None:
        results[index] = result
        if progress is not None:
            progress(len(results), len(programs))

    while remaining:
        batch = remaining
        finished = _run_executor([programs[i] for i in batch], limits, pool,
                                 lambda position, result: record(batch[position], result))
        remaining = [i for i in batch if i not in results]
        if not finished and pool == 1 and remaining:  # one at a time, in order: the first unfinished did it
            record(remaining.pop(0), SandboxResult("killed", None, 0.0,
                                                   "sandbox: the executor was killed while this program ran"))
        pool = 1
    return [results[i] for i in range(len(programs))]


def _run_executor(programs: list[str], limits: Limits, workers: int,
                  record: Callable[[int, SandboxResult], None]) -> bool:
    """One executor over ``programs``: True when it finished them all, False when it died or fell silent."""
    import subprocess

    scratch = Path(tempfile.mkdtemp(prefix="codex-exec-"))
    os.chmod(scratch, 0o711)  # samples dropped to nobody reach their own directory, and list nothing
    request = json.dumps({"programs": programs, "limits": asdict(limits), "workers": workers,
                          "scratch": str(scratch)}).encode()
    command = [interpreter(os.geteuid() == 0), "-I", "-B", "-c", _BOOT.format(root=_PACKAGE_PARENT)]
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
                                   env=scrubbed_env(), cwd=scratch, close_fds=True)
        finished, live = False, {}
        try:
            try:
                process.stdin.write(request)
                process.stdin.close()
            except BrokenPipeError:
                pass
            finished = _read_results(process, limits, record, live)
        finally:
            _stop(process, graceful=finished)
            for pid in live.values():  # samples of an executor that died: best effort, they left its tree
                kill_tree(pid)
            _remove_tree(scratch)
        if finished or process.returncode < 0 or process.returncode == 128 + signal.SIGTERM:
            return finished
        errors.seek(0)
        raise ExecutorError(f"the executor failed (exit {process.returncode}): "
                            f"{errors.read()[-OUTPUT_TAIL_BYTES:].decode('utf-8', 'replace')}")


def _read_results(process, limits: Limits, record: Callable[[int, SandboxResult], None],
                  live: dict[int, int]) -> bool:
    """Each result as the executor sends it, and in ``live`` the pid of each sample started and not yet
    done; False on EOF or silence before its "done"."""
    source, buffer = process.stdout.fileno(), b""
    silence = 2 * limits.timeout_seconds + WATCHDOG_SLACK_SECONDS
    while True:
        ready, _, _ = select.select([source], [], [], silence)
        chunk = os.read(source, 1 << 16) if ready else b""
        if not chunk:
            return False
        *lines, buffer = (buffer + chunk).split(b"\n")
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:  # torn by an executor stopped mid-write; what it was about runs again
                continue
            if message.get("done"):
                return True
            if "started" in message:
                live[message["started"]] = message["pid"]
            elif "index" in message:
                live.pop(message["index"], None)
                record(message.pop("index"), SandboxResult(**message))


def _stop(process, graceful: bool) -> None:
    """Let a finished executor exit (it has reaped everything); otherwise kill its whole tree first."""
    import subprocess

    if graceful:
        try:
            process.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:  # it did not exit: treated as stuck
            pass
    if process.poll() is None:
        kill_tree(process.pid)
    process.wait()
    process.stdout.close()


def _remove_tree(path: Path) -> None:
    """rmtree, after making every directory below ``path`` writable again (a program may chmod its own)."""
    shutil.rmtree(path, ignore_errors=True)
    if not path.exists():
        return
    for _, directories, _, parent in os.fwalk(path):
        for name in directories:
            try:
                os.chmod(name, 0o700, dir_fd=parent)
            except OSError:
                pass
    shutil.rmtree(path, ignore_errors=True)
