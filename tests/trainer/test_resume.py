"""SIGTERM mid-training: checkpoint, exit 44, and a second pod resumes from that step and finishes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from codex_api import contract
from codex_api.contract import TrainerReport

from .kit import tiny_run, trainer_environ

MAX_STEPS = 60


def _start(tmp_path: Path, environ: dict[str, str], attempt: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "codex_trainer.cli", "run", "--config", str(tmp_path / "run.yaml"),
         "--termination-log", str(tmp_path / f"termination-log-{attempt}")],
        env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_sigterm_saves_a_checkpoint_and_the_next_run_resumes_there(tmp_path, models_dir):
    run = tiny_run(training={"maxSteps": MAX_STEPS}, checkpointing={"saveSteps": 5, "keepLast": 2},
                   evaluation={"tasks": None})
    (tmp_path / "run.yaml").write_text(json.dumps(run.to_wire()))
    environ = trainer_environ(tmp_path, models_dir)
    first_checkpoint = tmp_path / "checkpoints" / "checkpoint-5" / "codex_state.json"

    first = _start(tmp_path, environ, 1)
    deadline = time.monotonic() + 240
    while not first_checkpoint.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == contract.EXIT_PREEMPTED == 44, stderr[-3000:]
    stopped = [e for e in _events(stderr) if e.get("event") == "preempted"]
    assert len(stopped) == 1
    step = stopped[0]["step"]
    assert 5 <= step < MAX_STEPS
    report = TrainerReport.model_validate_json((tmp_path / "termination-log-1").read_text())
    assert (report.phase, report.reason, report.message) == (
        "Failed", "Preempted", f"SIGTERM during training; checkpoint-{step} saved")
    state = json.loads((tmp_path / "checkpoints" / f"checkpoint-{step}" / "codex_state.json").read_text())
    assert (state["step"], state["seed"]) == (step, 1337)

    second = _start(tmp_path, environ, 2)
    _, stderr = second.communicate(timeout=600)
    assert second.returncode == contract.EXIT_OK, stderr[-3000:]
    events = _events(stderr)
    resumed = [e for e in events if e.get("event") == "resume"]
    assert [(e["checkpoint"], e["step"]) for e in resumed] == [(f"checkpoint-{step}", step)]
    assert not [e for e in events if e.get("event") == "resume.config_differs"]
    done = [e for e in events if e.get("event") == "done" and e.get("stage") == "train"][0]
    assert (done["steps"], done["resumed_from"]) == (MAX_STEPS, f"checkpoint-{step}")
    losses = json.loads((tmp_path / "data" / "pvc" / "artifacts" / "tiny" / "results.json").read_text())["train"]
    assert len(losses["losses"]) == MAX_STEPS  # the log history carries over from the checkpoint
    assert TrainerReport.model_validate_json((tmp_path / "termination-log-2").read_text()).phase == "Succeeded"
