"""Run untrusted generated code in a separate, limited process.

Layers, each enough on its own for the common cases:

- a separate process in its own session, killed with its whole process group at the wall timeout;
- rlimits: CPU seconds, address space, file size, process count (the fork bomb runs out of
  processes, the 10 GB allocation gets MemoryError);
- a scrubbed environment (no HF_TOKEN or anything else of ours) and a fresh temporary working
  directory that is deleted afterwards;
- when the trainer runs as root (a laptop, CI), the child drops to ``nobody`` so RLIMIT_NPROC
  applies and file permissions protect the rest of the filesystem;
- a Python audit hook installed before the snippet runs: writes outside the working directory,
  reading /proc, /sys and mounted Secrets, process creation, sockets and ctypes raise
  PermissionError.

Linux namespaces (``unshare``) would add network and PID isolation but need privileges the trainer
pod does not have, so nothing here depends on them.
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

NOBODY = 65534
OUTPUT_TAIL_BYTES = 2000

# Runs inside the child before the snippet: from here on, the audit hook cannot be removed.
GUARD = r'''
import os, sys
_ROOT = os.path.realpath(os.getcwd())
_DENY_READ = ("/proc", "/sys", "/var/run/secrets", "/run/secrets", "/etc/codex")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_BLOCKED = ("os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.kill",
            "os.killpg", "subprocess.Popen", "pty.spawn", "ctypes.", "socket.", "os.chown", "os.setuid")
_MUTATE = ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.link", "os.symlink",
           "os.truncate", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move")

def _inside(path):
    if isinstance(path, int):
        return True
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    real = os.path.realpath(path)
    return real == _ROOT or real.startswith(_ROOT + os.sep)

def _guard(event, args):
    if event == "open":
        path, mode, flags = args
        if isinstance(path, int):
            return
        text = os.fsdecode(path) if isinstance(path, bytes) else str(path)
        writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (mode is None and flags & _WRITE_FLAGS)
        if writing and not _inside(text):
            raise PermissionError(f"sandbox: writing {text!r} outside the working directory")
        if os.path.realpath(text).startswith(_DENY_READ):
            raise PermissionError(f"sandbox: reading {text!r} is not allowed")
    elif event.startswith(_BLOCKED):
        raise PermissionError(f"sandbox: {event} is not allowed")
    elif event.startswith(_MUTATE) and args and not all(_inside(a) for a in args[:2] if isinstance(a, (str, bytes))):
        raise PermissionError(f"sandbox: {event} outside the working directory")
    elif event == "import" and args[0] in ("ctypes", "_ctypes", "_posixsubprocess", "_socket"):
        raise PermissionError(f"sandbox: importing {args[0]} is not allowed")

sys.addaudithook(_guard)
del _guard
with open("program.py", encoding="utf-8") as _source:
    _code = compile(_source.read(), "program.py", "exec")
exec(_code, {"__name__": "__main__"})
'''


@dataclass(frozen=True)
class Limits:
    timeout_seconds: float = 5.0
    memory_bytes: int = 1 << 30
    file_size_bytes: int = 10 << 20
    processes: int = 16


@dataclass(frozen=True)
class SandboxResult:
    """``status`` is passed (exit 0), failed (non-zero exit), timeout (wall or CPU limit) or killed (a signal)."""

    status: str
    returncode: Optional[int]
    elapsed: float
    output_tail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def in_time(self) -> bool:
        return self.status in ("passed", "failed")


def scrubbed_env() -> dict[str, str]:
    """A minimal environment: nothing inherited, so no token or credential can leak in."""
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}


def _user_task_count(uid: int) -> int:
    """Tasks (threads count) this uid already runs: RLIMIT_NPROC counts them all, system-wide."""
    count = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            for line in status.read_text().splitlines():
                if line.startswith("Uid:"):
                    if int(line.split()[1]) == uid:
                        threads = next(int(t.split()[1]) for t in status.read_text().splitlines()
                                       if t.startswith("Threads:"))
                        count += threads
                    break
        except (OSError, ValueError, StopIteration):
            continue
    return count


def _world_executable(path: str) -> bool:
    real = Path(os.path.realpath(path))
    if not (real.is_file() and real.stat().st_mode & 0o001):
        return False
    return all(parent.stat().st_mode & 0o001 for parent in real.parents)


def interpreter(dropping_privileges: bool) -> str:
    """A Python the child can execute: ours, or (after dropping to nobody) a system one if ours sits in
    a private directory such as /root."""
    if not dropping_privileges:
        return sys.executable
    for candidate in (sys.executable, shutil.which("python3") or "", "/usr/bin/python3"):
        if candidate and _world_executable(candidate):
            return candidate
    raise RuntimeError("sandbox: no Python interpreter is executable by the unprivileged user")


def _preexec(limits: Limits, drop_to: Optional[int], nproc: int):
    cpu = max(1, math.ceil(limits.timeout_seconds))

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if drop_to is not None:
            os.setgroups([])
            os.setgid(drop_to)
            os.setuid(drop_to)
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))

    return apply


def run_untrusted(program: str, limits: Limits = Limits()) -> SandboxResult:
    """Run ``program`` (Python source) in the sandbox and say how it ended; never raises for what it does."""
    workdir = Path(tempfile.mkdtemp(prefix="codex-sandbox-"))
    drop_to = NOBODY if os.geteuid() == 0 else None
    uid = drop_to if drop_to is not None else os.getuid()
    nproc = _user_task_count(uid) + limits.processes
    try:
        (workdir / "program.py").write_text(program, encoding="utf-8")
        if drop_to is not None:
            os.chown(workdir, drop_to, drop_to)
        with open(workdir / "output.txt", "wb") as output:
            started = time.monotonic()
            process = subprocess.Popen(
                [interpreter(drop_to is not None), "-I", "-c", GUARD],
                cwd=workdir, env=scrubbed_env(), stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_preexec(limits, drop_to, nproc), close_fds=True,
            )
            timed_out, returncode = False, None
            try:
                returncode = process.wait(timeout=limits.timeout_seconds)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                # Always, even when SIGTERM interrupts the wait: nothing of the snippet outlives this call.
                elapsed = time.monotonic() - started
                _kill_group(process.pid)
                if returncode is None:
                    process.wait()
        tail = _tail(workdir / "output.txt")
        if timed_out or returncode == -signal.SIGXCPU:
            return SandboxResult("timeout", returncode, elapsed, tail)
        if returncode is not None and returncode < 0:
            return SandboxResult("killed", returncode, elapsed, tail)
        return SandboxResult("passed" if returncode == 0 else "failed", returncode, elapsed, tail)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _kill_group(pgid: int) -> None:
    # The snippet's own children (if any got past the limits) share its process group.
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - OUTPUT_TAIL_BYTES))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
