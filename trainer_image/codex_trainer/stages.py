"""The commands of a staged run (codex_api.stages), and the step runner every trainer command shares.

===========  ======================================================================================
stage        command and what runs
===========  ======================================================================================
train        ``codex-train run --stage train``: Recipe.setup, train, hand_off, report_trained
             (recipe.py); the hand-off (handoff.py) and the adapter go to the work directory.
sandbox      ``codex-train sandbox``: :func:`run_sandbox` runs every program of the hand-off on the
             parallel executor and writes one status per sample (codex_api.stages.SandboxReport).
             No ML stack is imported: this module and what it imports at the top stay free of it.
publish      ``codex-train publish``: publisher.Publisher judges the samples from the static checks
             and the sandbox's statuses, writes the adapter folder and pushes it if the gates pass.
===========  ======================================================================================
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional, TextIO

from codex_api import contract, stages

from .config import TrainerEnv
from .errors import HandoffError, InvalidSpecError, TrainerError, TransientError
from .executor import available_cpus
from .handoff import Handoff, handoff_file, read_handoff
from .logs import Redactor
from .sandbox import kill_descendants

log = logging.getLogger("codex_trainer")


def execute(job: Any) -> int:
    """``job.steps()`` in order, the last one's value being the exit code; a trainer error becomes its exit
    code and a report (``job.report_failure``), anything else a transient one."""
    *steps, finish = job.steps()
    try:
        for step in steps:
            step()
        return finish()
    except TrainerError as error:
        log.error(json.dumps({"event": "failed", "reason": error.reason, "message": job.redact(str(error))}))
        return job.report_failure(error)
    except Exception as error:  # a bug or an OOM: retryable, reported without the traceback's secrets
        log.exception(json.dumps({"event": "crashed", "error": type(error).__name__}))
        return job.report_failure(TransientError(f"{type(error).__name__}: {job.redact(str(error))}"))


def fail_early(error: TrainerError, env: TrainerEnv) -> int:
    """A report for errors before the job exists (an unreadable or invalid spec)."""
    from .report import build_report, write_report

    log.error(json.dumps({"event": "failed", "reason": error.reason, "message": str(error)}))
    write_report(build_report("Failed", error.reason, str(error), Redactor([env.hf_token])),
                 env.termination_message_path)
    return error.exit_code


def load_run(path: Path):
    import yaml
    from codex_api import CodexTrainingRun, SpecError, parse

    try:
        return parse(CodexTrainingRun, yaml.safe_load(path.read_text()))
    except OSError as error:
        raise InvalidSpecError(f"{path}: cannot read the run ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise InvalidSpecError(f"{path}: not valid YAML ({error})") from None
    except SpecError as error:
        raise InvalidSpecError("; ".join(error.problems)) from None


# ---- sandbox -----------------------------------------------------------------------------------
class Stopped(Exception):
    """SIGTERM reached the sandbox stage before every program had run."""


class ProgressPrinter:
    """``{"event": PROGRESS_EVENT, "done": d, "total": t}`` lines: about one a second, and always the last.
    Counts only: nothing a program wrote or a completion held reaches the log."""

    def __init__(self, stream: TextIO, min_interval: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.stream, self.min_interval, self.clock = stream, min_interval, clock
        self._last = -float("inf")

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if done < total and now - self._last < self.min_interval:
            return
        self._last = now
        self.stream.write(json.dumps({"event": stages.PROGRESS_EVENT, "done": done, "total": total}) + "\n")
        self.stream.flush()


def sandbox_statuses(handoff: Handoff, progress: Callable[[int, int], None]) -> list[str]:
    """One executor status per sample of the hand-off, in its order; a program that does not parse is not
    run and is "failed" (publish scores it as the syntax error it is, from its own static check)."""
    from .programs import Batch, run_batch

    batch = Batch.of(handoff.samples())
    results = run_batch(batch, handoff.timeout_seconds, workers=available_cpus(), progress=progress)
    return [results[index].status if index in results else "failed" for index in range(len(batch.programs))]


def sandbox_outcome(work_dir: Path, stdout: Optional[TextIO] = None) -> tuple[int, str]:
    """The sandbox stage's exit code and termination message: 0 and the statuses once every program is done;
    42 and the reason when the hand-off cannot be read or the statuses would not fit."""

    def stop(signum: int, frame: Any) -> None:
        raise Stopped()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        statuses = sandbox_statuses(read_handoff(handoff_file(work_dir)), ProgressPrinter(stdout or sys.stdout))
        message = stages.SandboxReport.of(statuses).message()
    except (HandoffError, stages.ResultsError) as error:
        return _failed(str(error), contract.EXIT_INVALID)
    except Stopped:
        return _failed("SIGTERM before every program ran; a retry runs them again", contract.EXIT_PREEMPTED)
    except Exception as error:  # the executor itself failed (not a program): a retry may get past it
        return _failed(f"the executor failed ({type(error).__name__})", contract.EXIT_TRANSIENT)
    finally:
        signal.signal(signal.SIGTERM, previous)
    counts = {status: statuses.count(status) for status in sorted(set(statuses))}
    print(json.dumps({"event": "sandbox.done", "samples": len(statuses), **counts}), file=sys.stderr, flush=True)
    return contract.EXIT_OK, message


def _failed(reason: str, code: int) -> tuple[int, str]:
    line = f"sandbox: {' '.join(reason.split())}"
    print(json.dumps({"event": "sandbox.failed", "exit": code, "message": line}), file=sys.stderr, flush=True)
    return code, line


def run_sandbox(work_dir: Path, termination_log: Path, stdout: Optional[TextIO] = None) -> int:
    """``codex-train sandbox``: as PID 1 of its container (:func:`as_init`), or in this process elsewhere; the
    message goes to the termination log after every program is done."""
    code, message = as_init(lambda: sandbox_outcome(work_dir, stdout))
    write_message(termination_log, message)
    return code


def write_message(path: Path, text: str) -> None:
    """Truncating whatever is there (a previous attempt's, or a program's); a missing mount is not fatal."""
    try:
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(text)
    except OSError as error:
        print(json.dumps({"event": "report.unwritable", "path": str(path), "error": type(error).__name__}),
              file=sys.stderr, flush=True)


def as_init(work: Callable[[], tuple[int, str]], is_init: Optional[bool] = None) -> tuple[int, str]:
    """``work()``'s exit code and message. PID 1 of a container (``is_init``, default: this process is PID 1)
    must handle SIGTERM itself (the kernel drops the signals PID 1 has no handler for) and reap every orphan
    (a sample's stray descendant, a dead executor's samples). So, as tini does, it runs ``work`` in a child,
    forwards SIGTERM to it and reaps the rest meanwhile; the child sends its outcome over a pipe no program
    holds; then every process left is killed, so none can touch the termination log once it is written."""
    if not (os.getpid() == 1 if is_init is None else is_init):
        return work()
    sys.stdout.flush()
    sys.stderr.flush()
    readable, writable = os.pipe()
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])  # no SIGTERM lost before the handler is set
    child = os.fork()
    if child == 0:
        os.close(readable)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
        _run_child(work, writable)
    os.close(writable)
    signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(child, signum))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == child:
            break
    with os.fdopen(readable, "rb") as pipe:
        sent = pipe.read()
    _end_the_rest()
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return 128 - code, f"sandbox: stopped by signal {-code} before it was done"
    return code, json.loads(sent)["message"]


def _run_child(work: Callable[[], tuple[int, str]], writable: int) -> None:
    """In the forked child: ``work``, its outcome to the pipe, and the exit. Never returns."""
    code, message = contract.EXIT_TRANSIENT, "sandbox: crashed"
    try:
        code, message = work()
    except BaseException:  # noqa: B036 - whatever happened, the child ends here with a code
        traceback.print_exc()
    finally:
        with os.fdopen(writable, "w", encoding="utf-8") as pipe:
            pipe.write(json.dumps({"message": message}))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _end_the_rest() -> None:
    """Kill and reap every process left below this one until it has no child at all."""
    while True:
        kill_descendants(os.getpid())
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


# ---- publish -----------------------------------------------------------------------------------
def publish_command(config: Path, work_dir: Path, termination_log: Path) -> int:
    import dataclasses

    from .logs import setup_logging
    from .publisher import Publisher
    from .sinks import StatusPatcher

    env = dataclasses.replace(TrainerEnv.from_env(), termination_message_path=termination_log)
    setup_logging(Redactor([env.hf_token]))
    try:
        run = load_run(config)
    except TrainerError as error:
        return fail_early(error, env)
    sinks = [StatusPatcher(env.run_name, env.run_namespace)] if env.run_name and env.run_namespace else []
    return execute(Publisher(run, env, work_dir, sinks=sinks, hub_endpoint=env.hf_endpoint))
