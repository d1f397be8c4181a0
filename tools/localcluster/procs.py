"""Start detached daemons and stop them again by the pid recorded at start.

A pid alone can be reused by an unrelated process after ours exits, so each
record also keeps the process start time from /proc/<pid>/stat; ``stop`` only
signals a pid whose start time still matches.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    start_time: int  # clock ticks since boot, field 22 of /proc/<pid>/stat
    log: str

    def to_dict(self) -> dict:
        return asdict(self)


def start_time_of(pid: int) -> int | None:
    """The kernel's start time of ``pid``, or None when no such process exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":  # a zombie has exited already
        return None
    return int(fields[19])


def pids_with(marker: str) -> list[int]:
    """Processes whose command line contains ``marker`` (to find what a pod or test left behind)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:  # the process ended while we looked
            pass
    return pids


def is_alive(record: ProcessRecord) -> bool:
    return start_time_of(record.pid) == record.start_time


def spawn(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> tuple[ProcessRecord, subprocess.Popen]:
    """Start ``argv`` in its own session with stdout and stderr appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=cwd, start_new_session=True, close_fds=True)
    started = start_time_of(proc.pid)
    if started is None:
        proc.wait()
        raise RuntimeError(f"{name} exited at once ({proc.returncode}); see {log}")
    return ProcessRecord(name, proc.pid, started, str(log)), proc


def stop(record: ProcessRecord, grace: float = 10.0, group: bool = True) -> None:
    """SIGTERM the process (and its process group), then SIGKILL after ``grace`` seconds."""
    if not is_alive(record):
        # Its children may live on in its group. A pgid cannot be reused while the group has members,
        # so a group with the dead leader's pid is still ours.
        if group and _group_exists(record.pid):
            os.killpg(record.pid, signal.SIGKILL)
        return
    _signal(record, signal.SIGTERM, group)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(record.pid)
        if not is_alive(record):
            break
        time.sleep(0.05)
    # Stragglers of the group (children of a daemon) get SIGKILL even if the leader has gone.
    _signal(record, signal.SIGKILL, group, force_group=True)
    _reap(record.pid)


def _signal(record: ProcessRecord, sig: signal.Signals, group: bool, force_group: bool = False) -> None:
    leader_alive = is_alive(record)
    try:
        if group and (leader_alive or force_group):
            # The daemon was started with start_new_session, so its pgid is its pid.
            if leader_alive or _group_exists(record.pid):
                os.killpg(record.pid, sig)
        elif leader_alive:
            os.kill(record.pid, sig)
    except ProcessLookupError:
        pass


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our child, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
