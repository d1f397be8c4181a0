"""One sample's sandbox: its limits, its environment, its audit hook, and what its process does first.

The executor (:mod:`codex_trainer.executor`) forks every sample from one warm process and calls
:func:`enter_sample` in the child. Per sample, each layer enough on its own for the common cases:

- its own session and process group, killed with all its descendants when it ends or at the wall
  timeout (the executor walks /proc for the ones that left the group);
- rlimits: CPU seconds, address space, file size, process count (the fork bomb runs out of
  processes, the 10 GB allocation gets MemoryError);
- a scrubbed environment (no HF_TOKEN or anything else of ours), no file descriptor of the
  executor's, and a fresh temporary working directory that is deleted afterwards;
- when the executor runs as root (a laptop, CI), the sample drops to ``nobody`` so RLIMIT_NPROC
  applies and file permissions protect the rest of the filesystem;
- a Python audit hook installed before the program runs: writes outside the working directory,
  reading /proc, /sys and mounted Secrets, process creation, sockets and ctypes raise
  PermissionError. It is a courtesy that turns honest mistakes into clear errors, not a boundary:
  code in the same interpreter can get past it. The boundary is the process (and, in a cluster,
  the credential-less, network-less pod the executor runs in).

Linux namespaces (``unshare``) would add network and PID isolation but need privileges the trainer
pod does not have, so nothing here depends on them. Standard library only: the executor imports
this module in a bare interpreter.
"""

from __future__ import annotations

import builtins
import linecache
import math
import os
import resource
import signal
import sys
import traceback
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Optional

NOBODY = 65534
OUTPUT_TAIL_BYTES = 2000
# The exit status of a sample whose own set-up failed (a bug of ours, reported in its output).
SETUP_FAILED = 70

_DENY_READ = ("/proc", "/sys", "/var/run/secrets", "/run/secrets", "/etc/codex")
_BLOCKED = ("os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.kill",
            "os.killpg", "subprocess.Popen", "pty.spawn", "ctypes.", "socket.", "os.chown", "os.setuid",
            "gc.get_objects", "gc.get_referrers", "gc.get_referents")
_BLOCKED_IMPORTS = ("ctypes", "_ctypes", "_posixsubprocess", "_socket")
# Filesystem changes that must stay inside the working directory: for each of the first two path
# arguments, the position of the dir_fd it is relative to (None: relative to the cwd).
_MUTATE = {"os.remove": (1,), "os.rmdir": (1,), "os.mkdir": (2,), "os.chmod": (2,), "os.utime": (3,),
           "os.rename": (2, 3), "os.link": (2, 3), "os.symlink": (None, 2), "os.truncate": (),
           "shutil.rmtree": (), "shutil.copyfile": (), "shutil.move": ()}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


@dataclass(frozen=True)
class Limits:
    """What one sample may use. ``audit_hook`` is off only in tests that play a program which has
    already switched the hook off, to show that the process-level defences hold without it."""

    timeout_seconds: float = 5.0
    memory_bytes: int = 1 << 30
    file_size_bytes: int = 10 << 20
    processes: int = 16
    audit_hook: bool = True


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


def run_untrusted(program: str, limits: Limits = Limits()) -> SandboxResult:
    """Run one program (Python source) in the sandbox and say how it ended; never raises for what it does."""
    from .executor import run_programs

    return run_programs([program], limits, workers=1)[0]


def classify(wait_status: int, timed_out: bool, elapsed: float, output_tail: str) -> SandboxResult:
    """How a sample ended, from its wait status: the executor's own observation, nothing the program wrote."""
    returncode = os.waitstatus_to_exitcode(wait_status)
    if timed_out or returncode == -signal.SIGXCPU:
        status = "timeout"
    elif returncode < 0:
        status = "killed"
    else:
        status = "passed" if returncode == 0 else "failed"
    return SandboxResult(status, returncode, round(elapsed, 4), output_tail)


def enter_sample(program: str, workdir: str, output_fd: int, limits: Limits, drop_to: Optional[int],
                 nproc: int) -> NoReturn:
    """In the forked child: isolate, run ``program``, exit with its status. Never returns into the executor."""
    status = SETUP_FAILED
    try:
        _isolate(workdir, output_fd, limits, drop_to, nproc)
        status = _run_program(program, limits.audit_hook)
    except BaseException:  # noqa: B036 - whatever happened, this process must end here
        traceback.print_exc()
    finally:
        os._exit(status)


def _isolate(workdir: str, output_fd: int, limits: Limits, drop_to: Optional[int], nproc: int) -> None:
    os.setsid()
    signal.pthread_sigmask(signal.SIG_SETMASK, [])  # the executor blocks SIGCHLD; programs get the default
    for signum in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
        # SIGINT too: a sibling's Ctrl-C shows as a signal (rerun alone), not as a KeyboardInterrupt failure.
        signal.signal(signum, signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDONLY)
    for target, source in ((0, devnull), (1, output_fd), (2, output_fd)):
        os.dup2(source, target)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the executor's pipes and the other samples' outputs
    os.chdir(workdir)
    cpu = max(1, math.ceil(limits.timeout_seconds))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if drop_to is not None:
        os.setgroups([])
        os.setgid(drop_to)
        os.setuid(drop_to)
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    environment = scrubbed_env()
    if os.environ != environment:  # the executor already runs with it; this is for any other caller
        os.environ.clear()
        os.environ.update(environment)


def _run_program(program: str, audit_hook: bool) -> int:
    """Run ``program`` as ``python program.py`` would and return its exit status."""
    sys.argv = ["program.py"]
    linecache.cache["program.py"] = (len(program), None, program.splitlines(True), "program.py")
    try:
        code = compile(program, "program.py", "exec")
        if audit_hook:
            install_guard(os.getcwd())
        exec(code, {"__name__": "__main__", "__builtins__": builtins})  # noqa: S102 - the sandbox's purpose
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()  # the interpreter waits for non-daemon threads at exit; so do we
        status = 0
    except SystemExit as stop:
        status = _exit_status(stop.code)
    except BaseException as error:  # noqa: B036 - reported as the program's failure, as python would
        traceback.print_exception(type(error), error, error.__traceback__.tb_next)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    return status


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _denied(message: str) -> PermissionError:
    return PermissionError(f"sandbox: {message}")


def install_guard(root: str) -> None:
    """The audit hook for everything the program does from here on (see the module docstring)."""
    realpath, readlink, join, isabs, fsdecode, sep = (os.path.realpath, os.readlink, os.path.join,
                                                      os.path.isabs, os.fsdecode, os.sep)
    function = type(install_guard)
    # Private copies: rebinding the module's tables from the program changes nothing here.
    deny_read, blocked, blocked_imports, mutate = _DENY_READ, _BLOCKED, _BLOCKED_IMPORTS, dict(_MUTATE)

    def inside(path: object, dir_fd: int = -1) -> bool:
        text = fsdecode(path)
        if dir_fd != -1 and not isabs(text):
            text = join(readlink(f"/proc/self/fd/{dir_fd}"), text)  # judged where it really points
        real = realpath(text)
        return real == root or real.startswith(root + sep)

    def check_open(path: object, mode: Optional[str], flags: int) -> None:
        if isinstance(path, int):
            return  # an already open descriptor
        text = fsdecode(path)
        writing = any(c in mode for c in "wax+") if mode is not None else bool(flags & _WRITE_FLAGS)
        if writing and mode is None and not isabs(text):
            raise _denied(f"os.open of {text!r} for writing needs an absolute path (a dir_fd is not checked)")
        if writing and not inside(text):
            raise _denied(f"writing {text!r} outside the working directory")
        if realpath(text).startswith(deny_read):
            raise _denied(f"reading {text!r} is not allowed")

    def check_mutate(event: str, args: tuple) -> None:
        fd_positions = mutate[event]
        for position, path in enumerate(args[:2]):
            if isinstance(path, (str, bytes)):
                fd_at = fd_positions[position] if position < len(fd_positions) else None
                dir_fd = args[fd_at] if fd_at is not None and isinstance(args[fd_at], int) else -1
                if not inside(path, dir_fd):
                    raise _denied(f"{event} outside the working directory")

    def guard(event: str, args: tuple) -> None:
        if event == "open":
            check_open(*args)
        elif event.startswith(blocked):
            raise _denied(f"{event} is not allowed")
        elif event in mutate:
            check_mutate(event, args)
        elif event == "import" and args[0] in blocked_imports:
            raise _denied(f"importing {args[0]} is not allowed")
        elif event == "object.__setattr__" and isinstance(args[0], function):
            raise _denied("changing a function's code is not allowed")

    sys.addaudithook(guard)


# ---- finding and ending processes ------------------------------------------------------------
def parents_of_all() -> dict[int, int]:
    """pid -> ppid of every process, from /proc/<pid>/stat (readable even for non-dumpable ones)."""
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as handle:
                    stat = handle.read()
            except OSError:
                continue
            parents[int(name)] = int(stat[stat.rindex(b")") + 2:].split()[1])
    return parents


def descendants(root: int, parents: Optional[dict[int, int]] = None) -> list[int]:
    """Every process below ``root``, parents before their children."""
    children: dict[int, list[int]] = {}
    for pid, parent in (parents if parents is not None else parents_of_all()).items():
        children.setdefault(parent, []).append(pid)
    found, queue = [], deque([root])
    while queue:
        for child in children.get(queue.popleft(), ()):
            found.append(child)
            queue.append(child)
    return found


def kill_tree(root: int, parents: Optional[dict[int, int]] = None) -> None:
    """SIGKILL ``root``, its process group and every descendant: what forks meanwhile is orphaned to
    the executor when its parent dies, and the next sweep kills it."""
    for kill, target in ((os.killpg, root), *((os.kill, pid) for pid in [root, *descendants(root, parents)])):
        try:
            kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def kill_descendants(root: int) -> None:
    """SIGKILL every process below ``root`` (not ``root`` itself)."""
    for pid in descendants(root):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def process_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
        return stat[stat.rindex(b")") + 2:].split()[0].decode()
    except (OSError, ValueError, IndexError):
        return "?"


def user_task_count(uid: int) -> int:
    """Tasks (threads count) this uid already runs: RLIMIT_NPROC counts them all, system-wide."""
    count = 0
    for name in os.listdir("/proc"):
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{name}/status").read_text().splitlines()
                          if line.startswith(("Uid:", "Threads:")))
            if name.isdigit() and int(fields["Uid"].split()[0]) == uid:
                count += int(fields["Threads"])
        except (OSError, ValueError, KeyError):
            continue
    return count
