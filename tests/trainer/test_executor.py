"""executor.py: samples run in parallel, and a hostile program decides at most its own sample.

The hostile programs here run with the audit hook off (``Limits(audit_hook=False)``), as a program
that has switched it off would: what holds is what the executor does at the process level.
"""

from __future__ import annotations

import json
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from codex_trainer import executor
from codex_trainer.executor import available_cpus, interpreter, run_programs
from codex_trainer.sandbox import NOBODY, Limits

HOOK_OFF = Limits(timeout_seconds=2.0, audit_hook=False)
HONEST_PASS = "import time\ntime.sleep(0.5)\nassert sum([1, 2]) == 3\n"
HONEST_FAIL = "import time\ntime.sleep(0.5)\nassert sum([1, 2]) == 4\n"
SIBLINGS = textwrap.dedent("""
    import os, signal, time
    time.sleep(0.2)
    for name in os.listdir("/proc"):
        try:
            stat = open(f"/proc/{name}/stat").read()
        except OSError:
            continue
        if name.isdigit() and int(name) != os.getpid() and int(stat.rsplit(")", 1)[1].split()[1]) == os.getppid():
            os.kill(int(name), signal.%s)
""")


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture(scope="module")
def drop_box():
    """A directory every uid may write to: where the programs' late writers would leave their files."""
    path = Path(tempfile.mkdtemp(prefix="codex-dropbox-", dir="/tmp"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def late_writer(path: Path, delay: float, depth: int) -> str:
    """Program lines, ``depth`` blocks deep: leave the session, wait, then write ``path``, as an escapee would."""
    lines = f"os.setsid()\ntime.sleep({delay})\nopen({str(path)!r}, 'w').write('outlived')\nos._exit(0)\n"
    return textwrap.indent(lines, "    " * depth)


def hostile_programs(drop_box: Path) -> list[str]:
    fake = "".join(f"print({json.dumps(json.dumps({'index': i, 'status': 'passed', 'returncode': 0, 'elapsed': 0}))})\n"
                   for i in range(10))
    return [
        HONEST_PASS,
        HONEST_FAIL,
        fake + "print('{\"done\": true}')\nimport os\nfor fd in range(3, 256):\n    try:\n        os.write(fd, b'x')\n"
        "    except OSError:\n        pass\nraise SystemExit(1)\n",
        textwrap.dedent("""
            import os, json
            for path in ("../sample-00000/forged.json", "../sample-00001/forged.json", "../forged.json",
                         f"/proc/{os.getppid()}/fd/1"):
                try:
                    open(path, "w").write(json.dumps({"index": 1, "status": "passed"}))
                except OSError:
                    pass
            print(os.path.dirname(os.getcwd()))
        """),
        "import os, time\nchild = os.fork()\nif child == 0:\n" + late_writer(drop_box / "late.txt", 1.5, 1)
        + "print(child)\n",
        "import os, time\nreader, writer = os.pipe()\nif os.fork() == 0:\n    grandchild = os.fork()\n"
        "    if grandchild == 0:\n" + late_writer(drop_box / "orphan.txt", 0.5, 2)  # orphaned while its sample runs
        + "    os.write(writer, str(grandchild).encode())\n    os._exit(0)\nprint(os.read(reader, 32).decode())\n"
        "time.sleep(1.0)\n",
        SIBLINGS % "SIGKILL",
        SIBLINGS % "SIGSTOP",
        HONEST_PASS,
        HONEST_FAIL,
    ]


@pytest.fixture(scope="module")
def hostile_batch(drop_box):
    """One batch where every hostile program runs beside honest ones, all at once."""
    results = run_programs(hostile_programs(drop_box), HOOK_OFF, workers=10)
    time.sleep(1.6)  # past the moment the late writers would have written
    return results


def test_each_program_decides_its_own_sample_only(hostile_batch):
    assert [r.status for r in hostile_batch] == ["passed", "failed", "failed", "passed", "passed", "passed",
                                                 "passed", "passed", "passed", "failed"]


def test_no_process_or_file_outlives_its_sample(hostile_batch, drop_box):
    setsid_child, orphan = int(hostile_batch[4].output_tail), int(hostile_batch[5].output_tail)
    assert gone(setsid_child) and gone(orphan)
    assert sorted(p.name for p in drop_box.iterdir()) == []  # the orphan died while its sample still ran
    scratch = Path(hostile_batch[3].output_tail.strip())
    assert scratch.name.startswith("codex-exec-") and not scratch.exists()


def run_as_the_pod_runs_it(programs: list[str], limits: Limits, workers: int, watchdog_slack: float = 30.0):
    """run_programs in a process of one uid shared by executor and programs, as in the trainer pod (nobody
    when the tests run as root, where the samples would otherwise drop to nobody below a root executor)."""
    script = (f"import dataclasses, json, sys; sys.path.insert(0, {str(Path(executor.__file__).parents[1])!r})\n"
              "from codex_trainer import executor\nfrom codex_trainer.sandbox import Limits\n"
              f"executor.WATCHDOG_SLACK_SECONDS = {watchdog_slack!r}\n"
              f"results = executor.run_programs(json.load(sys.stdin), Limits(**{limits.__dict__!r}), workers={workers})\n"
              "print(json.dumps([dataclasses.asdict(r) for r in results]))\n")
    as_nobody = dict(user=NOBODY, group=NOBODY, extra_groups=[]) if os.geteuid() == 0 else {}
    python = interpreter(True) if as_nobody else sys.executable
    done = subprocess.run([python, "-I", "-c", script], input=json.dumps(programs), capture_output=True, text=True,
                          cwd="/tmp", timeout=120, env={"PATH": "/usr/bin:/bin"}, **as_nobody)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_a_program_that_kills_the_executor_is_the_one_marked_killed(signal_name):
    programs = [HONEST_PASS, f"import os, signal\nos.kill(os.getppid(), signal.{signal_name})\n", HONEST_FAIL,
                HONEST_PASS]
    results = run_as_the_pod_runs_it(programs, HOOK_OFF, workers=4)
    assert [r["status"] for r in results] == ["passed", "killed", "failed", "passed"]
    assert "the executor was killed while this program ran" in results[1]["output_tail"]


def test_a_program_that_stops_the_executor_is_found_by_the_watchdog():
    programs = [HONEST_PASS, "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\n", HONEST_FAIL]
    results = run_as_the_pod_runs_it(programs, Limits(timeout_seconds=1.0, audit_hook=False), workers=3,
                                     watchdog_slack=0.5)
    assert [r["status"] for r in results] == ["passed", "killed", "failed"]


def test_results_keep_their_order_and_progress_counts_each():
    seen = []
    programs = ["print('a')\n", "raise SystemExit(3)\n", "while True:\n    pass\n", "import time\ntime.sleep(0.3)\n"]
    results = run_programs(programs, Limits(timeout_seconds=1.0), workers=3,
                           progress=lambda done, total: seen.append((done, total)))
    assert [r.status for r in results] == ["passed", "failed", "timeout", "passed"]
    # The loop is stopped by whichever limit comes first: the wall clock (SIGKILL) or, on a fast
    # machine where it accrues its CPU second first, RLIMIT_CPU (SIGXCPU).
    assert [results[0].returncode, results[1].returncode, results[3].returncode] == [0, 3, 0]
    assert results[2].returncode in (-signal.SIGKILL, -signal.SIGXCPU)
    assert results[0].output_tail == "a\n"
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert run_programs([], Limits()) == []


def test_the_pool_is_sized_to_the_cpus_given():
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


PROBE = textwrap.dedent("""
    import ctypes, os
    parent = os.getppid()
    for name in ("environ", "mem", "fd"):
        try:
            os.listdir(f"/proc/{parent}/fd") if name == "fd" else open(f"/proc/{parent}/{name}", "rb").read(1)
            print(name, "readable")
        except OSError as error:
            print(name, type(error).__name__)
    print("ptrace", ctypes.CDLL(None).ptrace(16, parent, 0, 0))  # PTRACE_ATTACH
    uid = open(f"/proc/{parent}/status").read().split("Uid:")[1].split()[0]
    print("same uid", uid == str(os.getuid()))
""")


def test_same_uid_programs_cannot_reach_into_the_executor():
    """Executor and program share one uid, yet the executor's environ, memory and descriptors are out of reach."""
    [result] = run_as_the_pod_runs_it([PROBE], Limits(audit_hook=False), workers=1)
    assert result["output_tail"].splitlines() == ["environ PermissionError", "mem PermissionError",
                                                  "fd PermissionError", "ptrace -1", "same uid True"]
