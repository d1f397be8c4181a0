"""sandbox.py: hostile generated code fails safely, and the evaluating process carries on after each."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from codex_trainer.sandbox import NOBODY, Limits, run_untrusted

SECRET = "hf_sandboxsecret0123456789abcdefgh"
LIMITS = Limits(timeout_seconds=2.0)


def _processes_of(uid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Uid:") and int(line.split()[1]) == uid:
                found.append(int(status.parent.name))
    return found


@pytest.fixture(autouse=True)
def token_in_environment(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)


def assert_evaluator_survives() -> None:
    assert run_untrusted("print(6 * 7)\n", LIMITS).output_tail == "42\n"
    if os.geteuid() == 0:
        deadline = time.monotonic() + 3
        while _processes_of(NOBODY) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _processes_of(NOBODY) == []


def test_infinite_loop_is_stopped_at_the_wall_timeout():
    result = run_untrusted("while True:\n    pass\n", LIMITS)
    assert result.status == "timeout" and not result.in_time
    assert 1.9 <= result.elapsed < 6
    assert_evaluator_survives()


@pytest.mark.parametrize("program", [
    "import os\nwhile True:\n    os.fork()\n",
    "import multiprocessing\nwhile True:\n    multiprocessing.Process(target=lambda: None).start()\n",
    "import subprocess\nwhile True:\n    subprocess.Popen(['python3', '-c', 'pass'])\n",
], ids=["os-fork", "multiprocessing", "subprocess"])
def test_fork_bomb_cannot_multiply(program):
    result = run_untrusted(program, LIMITS)
    assert result.status == "failed"
    assert "PermissionError: sandbox:" in result.output_tail
    assert_evaluator_survives()


def test_ten_gigabyte_allocation_hits_the_memory_limit():
    result = run_untrusted("data = bytearray(10 * 1024 ** 3)\nprint('allocated')\n", LIMITS)
    assert result.status == "failed"
    assert "MemoryError" in result.output_tail and "allocated" not in result.output_tail
    assert_evaluator_survives()


def test_writing_outside_the_temp_dir_is_refused(tmp_path):
    outside = tmp_path / "escaped.txt"
    program = (f"open({str(outside)!r}, 'w').write('x')\n")
    result = run_untrusted(program, LIMITS)
    assert result.status == "failed" and "outside the working directory" in result.output_tail
    assert not outside.exists()
    inside = run_untrusted("open('scratch.txt', 'w').write('ok')\nprint(open('scratch.txt').read())\n", LIMITS)
    assert inside.status == "passed" and inside.output_tail == "ok\n"
    assert_evaluator_survives()


def test_big_files_hit_the_file_size_limit():
    result = run_untrusted("open('big.bin', 'wb').write(b'x' * (64 << 20))\n", LIMITS)
    assert result.status == "failed" and "File too large" in result.output_tail


@pytest.mark.parametrize("program", [
    "import os\nprint(os.environ.get('HF_TOKEN'))\nprint(dict(os.environ))\n",
    f"print(open('/proc/{os.getpid()}/environ', 'rb').read())\n",
    "print(open('/proc/self/../1/environ', 'rb').read())\n",
], ids=["environ", "parent-proc-environ", "init-environ"])
def test_the_hub_token_cannot_be_read(program):
    result = run_untrusted(program, LIMITS)
    assert SECRET not in result.output_tail
    assert_evaluator_survives()


def test_the_child_runs_with_limits_and_a_scrubbed_environment():
    program = ("import os, resource\n"
               "print(sorted(os.environ))\n"
               "print([resource.getrlimit(r)[0] for r in (resource.RLIMIT_CPU, resource.RLIMIT_AS, "
               "resource.RLIMIT_FSIZE)])\n"
               "print(os.getuid(), os.getcwd().startswith(os.path.realpath(__import__('tempfile').gettempdir())))\n")
    result = run_untrusted(program, Limits(timeout_seconds=3, memory_bytes=1 << 30, file_size_bytes=1 << 20))
    lines = result.output_tail.splitlines()
    assert lines[0] == "['LANG', 'PATH', 'PYTHONDONTWRITEBYTECODE', 'PYTHONHASHSEED']"
    assert lines[1] == f"[3, {1 << 30}, {1 << 20}]"
    uid = NOBODY if os.geteuid() == 0 else os.getuid()
    assert lines[2] == f"{uid} True"


@pytest.mark.parametrize("program", [
    "import os\nfd = os.open({outside!r}, os.O_RDONLY)\nos.mkdir('made', dir_fd=fd)\n",
    "import os\nfd = os.open({outside!r}, os.O_RDONLY)\nos.close(os.open('made', os.O_WRONLY | os.O_CREAT, dir_fd=fd))\n",
    "import os\nfd = os.open({outside!r}, os.O_RDONLY)\nopen('made', 'w', opener=lambda p, f: os.open(p, f, dir_fd=fd))\n",
    "import gc\nhooks = [o for o in gc.get_objects() if callable(o)]\n",
], ids=["mkdir-dir-fd", "os-open-dir-fd", "opener-dir-fd", "gc-walk"])
def test_the_audit_hook_sees_through_dir_fd_and_keeps_its_own_code(program):
    outside = Path(tempfile.mkdtemp(prefix="codex-outside-", dir="/tmp"))  # writable by whoever the program runs as
    outside.chmod(0o777)
    try:
        result = run_untrusted(program.format(outside=str(outside)), LIMITS)
        assert result.status == "failed" and "PermissionError: sandbox:" in result.output_tail
        assert list(outside.iterdir()) == []
    finally:
        shutil.rmtree(outside)
