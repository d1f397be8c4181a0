"""Multi-process launch: `codex-train run` re-starts itself under torchrun from the operator's env.

Two CPU processes (gloo) on this machine stand in for NPROC_PER_NODE GPUs; the exit-code contract
must survive torchrun, which itself only says "a worker failed".
"""

from __future__ import annotations

import json
import subprocess
import sys

from codex_api import contract
from codex_api.contract import TrainerReport

from .kit import tiny_run, trainer_environ


def _run(tmp_path, environ, max_steps: int):
    run = tiny_run(training={"maxSteps": max_steps}, checkpointing={"saveSteps": 2},
                   evaluation={"samplesPerTask": 1, "k": [1], "maxNewTokens": 8, "thresholds": {"logicOk": 0.9}})
    (tmp_path / "run.yaml").write_text(json.dumps(run.to_wire()))
    result = subprocess.run(
        [sys.executable, "-m", "codex_trainer.cli", "run", "--config", str(tmp_path / "run.yaml"),
         "--termination-log", str(tmp_path / "termination-log")],
        env=environ, capture_output=True, text=True, timeout=600)
    return result, [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]


def test_two_processes_train_together_resume_together_and_rank_zero_reports(tmp_path, models_dir):
    environ = {**trainer_environ(tmp_path, models_dir), "NNODES": "1", "NPROC_PER_NODE": "2"}
    result, events = _run(tmp_path, environ, max_steps=4)
    # Gates fail on purpose: 43 must come through torchrun, which itself exits 1.
    assert result.returncode == contract.EXIT_GATES_NOT_MET, result.stderr[-3000:]
    ready = [e for e in events if e.get("event") == "trainer.ready"]
    assert [e["world_size"] for e in ready] == [2, 2]
    assert len([e for e in events if e.get("event") == "report"]) == 1
    assert len([e for e in events if e.get("event") == "progress" and e.get("stage") == "prepare"]) == 1
    report = TrainerReport.model_validate_json((tmp_path / "termination-log").read_text())
    assert report.reason == "GatesNotMet"
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]

    # A longer run on the same checkpoints: both ranks agree to resume from step 4.
    result, events = _run(tmp_path, environ, max_steps=6)
    assert result.returncode == contract.EXIT_GATES_NOT_MET, result.stderr[-3000:]
    assert [(e["checkpoint"], e["step"]) for e in events if e.get("event") == "resume"] == [("checkpoint-4", 4)] * 2
    assert [e["steps"] for e in events if e.get("event") == "done" and e.get("stage") == "train"] == [6, 6]
