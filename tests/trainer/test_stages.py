"""The sandbox and publish stages of a staged run (codex_api.stages), on hand-offs written here.

The train stage, and the three stages chained through the CLI on the tiny model, are in
test_stage_chain.py.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
from fakehub.server import TOKEN

from codex_api import contract, stages
from codex_api.contract import TrainerReport
from codex_trainer.baseline import judge
from codex_trainer.evaluation import samples_table, score_samples
from codex_trainer.handoff import handoff_file, read_handoff
from codex_trainer.publisher import Publisher
from codex_trainer.sinks import StatusPatcher
from codex_trainer.stages import ProgressPrinter, execute, run_sandbox

from .kit import env_for, tiny_run
from .stage_kit import (BODIES, EVAL_VOWELS, LOOP, PRINTS, SYNTAX_ERROR, TASKS, trainer_form, without_last_line,
                        write_handoff)

# Both forms of every correct body, and the same with the last line dropped.
BOTH_FORMS = [[body, trainer_form(body)] for body in BODIES]
TRUNCATED = [[without_last_line(c) for c in group] for group in BOTH_FORMS]
SANDBOX_SCRIPT = textwrap.dedent("""\
    import sys
    from codex_trainer import cli
    code = cli.main(sys.argv[1:])
    sys.exit(99 if {"torch", "transformers"} & set(sys.modules) else code)
""")


def sandbox(work_dir, termination_log, timeout=60):
    """``codex-train sandbox`` as its pod runs it: its own process, nothing of ours in its environment."""
    environ = {k: v for k, v in os.environ.items() if k != "HF_TOKEN" and not k.startswith("CODEX_")}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", SANDBOX_SCRIPT, "sandbox", "--work-dir", str(work_dir),
                           "--termination-log", str(termination_log)], capture_output=True, text=True, env=environ,
                          timeout=timeout)
    return done, time.monotonic() - started


def statuses(termination_log, expected):
    return stages.SandboxReport.read(termination_log.read_text(), expected=expected)


def progress_lines(stdout):
    return [json.loads(line) for line in stdout.splitlines()]


# ---- sandbox -------------------------------------------------------------------------------------
def test_the_sandbox_passes_both_completion_forms_and_fails_them_truncated(tmp_path):
    write_handoff(tmp_path / "work", BOTH_FORMS, TRUNCATED)
    log = tmp_path / "termination-log"
    log.write_text("x" * 5000)  # what a previous attempt left is replaced, not appended to
    done, seconds = sandbox(tmp_path / "work", log)
    assert done.returncode == 0, done.stderr  # 99 would mean the ML stack was imported
    assert statuses(log, 8) == ["passed"] * 4 + ["failed"] * 4
    lines = progress_lines(done.stdout)
    assert {line["event"] for line in lines} == {stages.PROGRESS_EVENT}
    assert lines[-1] == {"event": stages.PROGRESS_EVENT, "done": 8, "total": 8}
    assert all(line["total"] == 8 and line["done"] <= 8 for line in lines) and len(lines) <= 2 + seconds
    assert [json.loads(line)["event"] for line in done.stderr.splitlines()] == ["sandbox.done"]


def test_the_sandbox_returns_statuses_in_sample_order_and_no_program_output(tmp_path):
    tuned = [[PRINTS, SYNTAX_ERROR, LOOP], [EVAL_VOWELS, without_last_line(trainer_form(BODIES[1])), BODIES[1]]]
    write_handoff(tmp_path / "work", tuned, timeout=1.0)
    log = tmp_path / "termination-log"
    done, seconds = sandbox(tmp_path / "work", log)
    assert done.returncode == 0, done.stderr
    # A program that does not parse is not run: failed; the loop is stopped at its timeout.
    assert statuses(log, 6) == ["passed", "failed", "timeout", "passed", "failed", "passed"]
    assert seconds < 30
    output = done.stdout + done.stderr
    assert "LEAKMARK" not in output and "while True" not in output and "eval(" not in output
    assert progress_lines(done.stdout)[-1]["done"] == 6


@pytest.mark.parametrize("content,problem", [
    (None, "cannot be read (No such file or directory)"),
    ('{"version": 1, "tasks": "while True: pass"}', "is not a version-1 hand-off: tasks: Input should be a valid array"),
    ("{not json", "is not a version-1 hand-off: (root): Invalid JSON"),
], ids=["missing", "invalid", "not-json"])
def test_an_unreadable_hand_off_exits_42_with_the_reason(tmp_path, capfd, content, problem):
    work = tmp_path / "work"
    work.mkdir()
    if content is not None:
        handoff_file(work).write_text(content)
    log = tmp_path / "termination-log"
    assert run_sandbox(work, log) == contract.EXIT_INVALID == 42
    message = log.read_text()
    assert message.startswith(f"sandbox: the train stage's hand-off {handoff_file(work)} ") and problem in message
    assert message.endswith("re-create the run") and "\n" not in message
    assert "while True" not in message + capfd.readouterr().err


def test_statuses_that_would_not_fit_the_termination_message_exit_42(tmp_path, monkeypatch):
    monkeypatch.setattr(stages, "MAX_MESSAGE_BYTES", 40)
    write_handoff(tmp_path / "work", BOTH_FORMS)
    log = tmp_path / "termination-log"
    assert run_sandbox(tmp_path / "work", log, stdout=io.StringIO()) == 42
    assert log.read_text().startswith("sandbox: 4 sample statuses do not fit in a 40-byte termination message")


@pytest.mark.parametrize("calls,printed", [
    ([(0.0, 0, 5), (0.5, 1, 5), (1.2, 2, 5), (1.3, 5, 5)], [(0, 5), (2, 5), (5, 5)]),
    ([(0.0, 3, 3)], [(3, 3)]),
    ([(0.0, 0, 0)], [(0, 0)]),
], ids=["throttled-then-last", "all-done-at-once", "no-samples"])
def test_progress_is_printed_about_once_a_second_and_always_at_the_end(calls, printed):
    now, lines = [0.0], []
    printer = ProgressPrinter(type("Out", (), {"write": lambda self, text: lines.append(json.loads(text)),
                                               "flush": lambda self: None})(), clock=lambda: now[0])
    for at, done, total in calls:
        now[0] = at
        printer(done, total)
    assert lines == [{"event": stages.PROGRESS_EVENT, "done": d, "total": t} for d, t in printed]


def test_as_pid_1_the_sandbox_reaps_orphans_forwards_sigterm_and_leaves_no_process_behind(tmp_path):
    """PID 1 of a container: orphans come back to it, and SIGTERM reaches it only through a handler. Played by a
    child subreaper; a stray process still running when the work is done must not outlive it (it could
    rewrite the termination message)."""
    script = textwrap.dedent("""\
        import ctypes, os, subprocess, sys, time
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans come here, as to PID 1
        from codex_trainer.stages import as_init
        def work():
            subprocess.run(["sh", "-c", "sleep 0.2 &"])  # orphaned at once, reaped while the work runs
            stray = subprocess.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"], capture_output=True,
                                   text=True).stdout.strip()
            print("ready", stray, flush=True)
            time.sleep(float(sys.argv[1]))
            return 7, "done"
        code, message = as_init(work, is_init=True)
        try:
            os.waitpid(-1, os.WNOHANG)
            left = "a child is left"
        except ChildProcessError:
            left = "no child left"
        print(code, message, left, flush=True)
    """)

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    done = subprocess.run([sys.executable, "-c", script, "1"], capture_output=True, text=True, timeout=30)
    ready, outcome = done.stdout.splitlines()
    assert outcome == "7 done no child left" and gone(int(ready.split()[1])), done.stderr
    child = subprocess.Popen([sys.executable, "-c", script, "60"], stdout=subprocess.PIPE, text=True)
    stray = int(child.stdout.readline().split()[1])
    started = time.monotonic()
    child.terminate()
    assert child.communicate(timeout=10)[0] == f"{128 + 15} sandbox: stopped by signal 15 before it was done " \
                                               "no child left\n"
    assert time.monotonic() - started < 10 and gone(stray)


def test_as_pid_1_the_sandbox_stage_hands_its_statuses_through_the_pipe(tmp_path):
    write_handoff(tmp_path / "work", BOTH_FORMS, TRUNCATED)
    script = ("import sys\nfrom pathlib import Path\nfrom codex_trainer.stages import as_init, sandbox_outcome\n"
              "code, message = as_init(lambda: sandbox_outcome(Path(sys.argv[1])), is_init=True)\n"
              "sys.stderr.write(message)\nsys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "work")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and progress_lines(done.stdout)[-1]["done"] == 8
    message = done.stderr.splitlines()[-1]
    assert stages.SandboxReport.read(message, expected=8) == ["passed"] * 4 + ["failed"] * 4


# ---- publish -------------------------------------------------------------------------------------
def publish_run(hub: bool = False, **evaluation):
    """The run publish reads: its evaluation settings for the hand-offs written here, and its output."""
    output = {"pvc": {"claimName": "artifacts", "path": "/tiny"}}
    if hub:
        output["hub"] = {"repoId": "codex-tester/staged", "tokenSecretRef": {"name": "hf"}}
    return tiny_run(evaluation={"samplesPerTask": 3, "k": [1, 3], "timeoutSeconds": 1,
                                "thresholds": {"syntaxOk": 0, "logicOk": 0, "securityOk": 0, "perfOk": 0}, **evaluation},
                    output=output)


def publish(tmp_path, run, results, fake_hub=None):
    env = dataclasses.replace(env_for(tmp_path, tmp_path / "models", token=TOKEN), sandbox_results=results)
    code = execute(Publisher(run, env, tmp_path / "work", hub_endpoint=fake_hub.url if fake_hub else None,
                             push_base_delay=0))
    return code, TrainerReport.model_validate_json((tmp_path / "termination-log").read_text())


def output_dir(tmp_path):
    return tmp_path / "data" / "pvc" / "artifacts" / "tiny"


def cache_dir(tmp_path):
    return tmp_path / "data" / "pvc" / "artifacts" / ".codex-baselines"


TUNED = [[BODIES[0], PRINTS, SYNTAX_ERROR], [EVAL_VOWELS, LOOP, without_last_line(trainer_form(BODIES[1]))]]
BASE = [[without_last_line(BODIES[0]), trainer_form(BODIES[0]), LOOP], [SYNTAX_ERROR, BODIES[1], BODIES[1]]]


def test_publish_judges_the_sandbox_statuses_as_the_single_process_run_judges_the_samples(tmp_path, fake_hub):
    run = publish_run(hub=True, thresholds={"syntaxOk": 0.5, "logicOk": 0.5, "securityOk": 0.5, "perfOk": 0.5,
                                            "minImprovement": -1})
    # The single-process run: every sample scored in this process, then the verdict beside the base.
    tuned_scores, base_scores = (score_samples(TASKS, group, 1.0) for group in (TUNED, BASE))
    pass_metrics, gates = judge(run.spec.evaluation, TASKS, tuned_scores, base_scores, perplexity=1.6487)
    # The staged run: the sandbox's statuses, then publish.
    write_handoff(tmp_path / "work", TUNED, BASE, spec=run.spec, cache_dir=cache_dir(tmp_path), timeout=1.0)
    assert run_sandbox(tmp_path / "work", tmp_path / "sandbox-log", stdout=io.StringIO()) == 0
    code, report = publish(tmp_path, run, (tmp_path / "sandbox-log").read_text(), fake_hub)
    assert code == contract.EXIT_OK and (report.phase, report.reason) == ("Succeeded", "Succeeded")
    assert report.gates.to_wire() == gates.to_wire() and report.gates.logic_ok.base is not None
    assert report.metrics.pass_at_k == pass_metrics["pass_at_k"] == {"pass@1": 0.5, "pass@3": 1.0}
    assert (report.metrics.base_pass_at_k, report.metrics.pass_at_k_delta) == (
        pass_metrics["base_pass_at_k"], pass_metrics["pass_at_k_delta"])
    assert (report.metrics.train_loss, report.metrics.perplexity) == (1.25, 1.6487)  # from the hand-off
    results = json.loads((output_dir(tmp_path) / "results.json").read_text())
    # The same rows, but for the time each run took, which the sandbox does not return.
    assert results["samples"] == [{**row, "elapsed": 0.0} for row in samples_table(tuned_scores, TUNED)]
    assert results["baseline"]["source"] == "scored" and results["train"] == {"steps": 4}
    assert report.artifact.commit_sha == fake_hub.repo("codex-tester/staged").branches["main"][-1][0]


@pytest.mark.parametrize("logic_ok,code,reason", [(0, 0, "Succeeded"), (0.9, 43, "GatesNotMet")],
                         ids=["gates-pass", "gates-fail"])
def test_publish_keeps_the_adapter_and_pushes_it_only_when_the_gates_pass(tmp_path, fake_hub, logic_ok, code, reason):
    run = publish_run(hub=True, samplesPerTask=2, k=[1], thresholds={"logicOk": logic_ok})
    handoff = write_handoff(tmp_path / "work", BOTH_FORMS, BOTH_FORMS, spec=run.spec, cache_dir=cache_dir(tmp_path))
    results = stages.SandboxReport.of(["passed", "failed", "passed", "passed"] * 2).message()
    exit_code, report = publish(tmp_path, run, results, fake_hub)
    assert (exit_code, report.reason) == (code, reason) and report.gates.logic_ok.value == 0.75
    saved = {p.name for p in output_dir(tmp_path).iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "README.md", "results.json"} == saved
    assert report.artifact.claim_name == "artifacts" and report.artifact.path == "/tiny"
    if code == contract.EXIT_OK:
        commits = [path for _, path in fake_hub.requests if "/commit/" in path]
        assert len(commits) == 1 and report.artifact.hub_repo == "codex-tester/staged"
        assert report.artifact.revision == report.artifact.commit_sha
        assert set(fake_hub.files("codex-tester/staged")) == saved
    else:
        assert fake_hub.requests == [] and report.artifact.hub_repo is None
        assert report.artifact.revision == f"sha256:{handoff.adapter.sha256}"
        assert report.message == "gates not met: logicOk; adapter kept, not promoted"


def test_publish_caches_the_base_outcomes_and_a_later_run_reads_them(tmp_path):
    run = publish_run()
    write_handoff(tmp_path / "work", TUNED, BASE, spec=run.spec, cache_dir=cache_dir(tmp_path))
    base_statuses = ["failed", "passed", "timeout", "failed", "passed", "passed"]
    code, first = publish(tmp_path, run, stages.SandboxReport.of(["passed"] * 6 + base_statuses).message())
    assert code == 0 and len(list(cache_dir(tmp_path).glob("*.json"))) == 1
    # The next run's train stage found the outcomes cached, so it handed off no base completions.
    write_handoff(tmp_path / "work", TUNED, spec=run.spec, cache_dir=cache_dir(tmp_path))
    code, second = publish(tmp_path, run, stages.SandboxReport.of(["passed"] * 6).message())
    assert code == 0 and second.metrics.base_pass_at_k == first.metrics.base_pass_at_k == {"pass@1": 0.5,
                                                                                           "pass@3": 1.0}
    assert second.gates.to_wire() == first.gates.to_wire()
    assert json.loads((output_dir(tmp_path) / "results.json").read_text())["baseline"]["source"] == "cache"
    # Had the cache lost them meanwhile, only a new train stage could generate them again.
    for entry in cache_dir(tmp_path).glob("*.json"):
        entry.unlink()
    code, vanished = publish(tmp_path, run, stages.SandboxReport.of(["passed"] * 6).message())
    assert (code, vanished.reason) == (42, "InvalidData")
    assert "vanished after the train stage found them; re-create the run" in vanished.message


@pytest.mark.parametrize("results,problem", [
    (None, "CODEX_SANDBOX_RESULTS is not set: the sandbox stage's results did not reach the publish stage"),
    (stages.SandboxReport.of(["passed"] * 3).message(),
     "CODEX_SANDBOX_RESULTS: the sandbox returned 3 statuses for 4 samples"),
    ('{"stage": "sandbox", "samples": 4, "results": "cHBwcA=="}',  # "pppp", not compressed: forged
     "CODEX_SANDBOX_RESULTS: the sandbox's results are unreadable: error"),
    ("Error: OOMKilled", "CODEX_SANDBOX_RESULTS: the sandbox's results are unreadable: ValidationError"),
], ids=["missing", "too-few", "forged", "a-log-tail"])
def test_missing_or_forged_sandbox_results_exit_42_and_publish_nothing(tmp_path, fake_hub, results, problem):
    run = publish_run(hub=True, samplesPerTask=2, k=[1])
    write_handoff(tmp_path / "work", BOTH_FORMS, spec=run.spec, cache_dir=cache_dir(tmp_path))
    code, report = publish(tmp_path, run, results, fake_hub)
    assert (code, report.phase, report.reason) == (42, "Failed", "InvalidData")
    assert report.message == problem
    assert not output_dir(tmp_path).exists() and fake_hub.requests == []


def test_an_adapter_that_is_not_the_one_handed_off_exits_42(tmp_path):
    run = publish_run(samplesPerTask=2, k=[1])
    write_handoff(tmp_path / "work", BOTH_FORMS, BOTH_FORMS, spec=run.spec, cache_dir=cache_dir(tmp_path))
    (tmp_path / "work" / "adapter" / "adapter_model.safetensors").write_bytes(b"other weights")
    code, report = publish(tmp_path, run, stages.SandboxReport.of(["passed"] * 8).message())
    assert code == 42 and report.message.endswith("is not the one the train stage saved; re-create the run")
    assert not output_dir(tmp_path).exists()


def test_a_hub_that_stays_down_is_transient_and_the_adapter_is_kept(tmp_path, fake_hub):
    fake_hub.fail("/api/repos/create", 503, times=99)
    run = publish_run(hub=True, samplesPerTask=2, k=[1])
    write_handoff(tmp_path / "work", BOTH_FORMS, BOTH_FORMS, spec=run.spec, cache_dir=cache_dir(tmp_path))
    code, report = publish(tmp_path, run, stages.SandboxReport.of(["passed"] * 8).message(), fake_hub)
    assert (code, report.reason) == (contract.EXIT_TRANSIENT, "TransientError")
    assert report.message.startswith("spec.output.hub.repoId: 'codex-tester/staged'")
    assert report.artifact.claim_name == "artifacts" and report.metrics.pass_at_k == {"pass@1": 1.0}
    assert (output_dir(tmp_path) / "adapter_model.safetensors").is_file()


def test_the_hand_off_round_trips_and_names_its_samples_in_sandbox_order(tmp_path):
    written = write_handoff(tmp_path / "work", TUNED, BASE, spec=publish_run().spec, cache_dir=cache_dir(tmp_path))
    read = read_handoff(handoff_file(tmp_path / "work"))
    assert read == written and sorted(p.name for p in (tmp_path / "work").iterdir()) == ["adapter", "evaluation.json"]
    assert [(task.task_id, completion) for task, completion in read.samples()] == [
        (task.task_id, completion) for group in (TUNED, BASE) for task, completions in zip(TASKS, group)
        for completion in completions]
    wire = json.loads(handoff_file(tmp_path / "work").read_text())
    assert wire["version"] == 1 and wire["metrics"]["trainLoss"] == 1.25 and set(wire["tasks"][0]) == {
        "task_id", "prompt", "test", "entry_point"}


def test_publish_patches_only_the_stage_into_the_run_progress(tmp_path):
    """status.progress keeps the train stage's step counts: publish merges in its stage and time alone."""
    run = publish_run(samplesPerTask=2, k=[1])
    write_handoff(tmp_path / "work", BOTH_FORMS, BOTH_FORMS, spec=run.spec, cache_dir=cache_dir(tmp_path))
    patches = []
    api = type("Api", (), {"patch_namespaced_custom_object_status": lambda self, *args: patches.append(args)})()
    env = dataclasses.replace(env_for(tmp_path, tmp_path / "models"),
                              sandbox_results=stages.SandboxReport.of(["passed"] * 8).message())
    publisher = Publisher(run, env, tmp_path / "work", sinks=[StatusPatcher("tiny", "default", api=api)])
    assert execute(publisher) == contract.EXIT_OK
    assert [args[2:5] for args in patches] == [("default", "codextrainingruns", "tiny")] * 2
    progress = [args[5]["status"]["progress"] for args in patches]
    assert [(p["stage"], sorted(p)) for p in progress] == [("push", ["stage", "updatedAt"]),
                                                           ("report", ["stage", "updatedAt"])]
