"""progress.py, report.py, logs.py and checkpoints.py without a model."""

from __future__ import annotations

import io
import json
import logging
from types import SimpleNamespace

import pytest

from codex_api import contract
from codex_api.contract import TrainerReport
from codex_api.training_run import Gate, Gates, Lineage, Metrics
from codex_trainer.checkpoints import ResumeState, find_resume_checkpoint, why_incomplete
from codex_trainer.logs import Redactor, setup_logging
from codex_trainer.progress import ProgressTracker
from codex_trainer.sinks import StatusPatcher
from codex_trainer.report import build_report, encode, write_report

TOKEN = "hf_progresstoken0123456789abcdefg"


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FakeApi:
    def __init__(self, error=None):
        self.calls, self.error = [], error

    def patch_namespaced_custom_object_status(self, group, version, namespace, plural, name, body):
        self.calls.append((group, version, namespace, plural, name, body))
        if self.error:
            raise self.error


def test_status_patch_touches_only_progress_and_is_throttled():
    clock, api = FakeClock(), FakeApi()
    patcher = StatusPatcher("demo", "ns", min_interval=10, api=api, clock=clock)
    patcher({"step": 1})
    clock.now += 3
    patcher({"step": 2})
    patcher({"stage": "evaluate"}, force=True)
    clock.now += 11
    patcher({"step": 3})
    assert [call[5] for call in api.calls] == [{"status": {"progress": {"step": 1}}},
                                               {"status": {"progress": {"stage": "evaluate"}}},
                                               {"status": {"progress": {"step": 3}}}]
    assert api.calls[0][:5] == ("codex.dev", "v1alpha1", "ns", "codextrainingruns", "demo")


def test_memory_plan_is_recorded_once_and_again_with_progress_until_it_lands():
    """The plan is recorded in the first seconds, when the trainer's RBAC grant may not have arrived:
    a refused record rides along with the next progress patches until one succeeds, then stops."""
    forbidden = Exception("Forbidden")
    forbidden.status = 403
    clock, api = FakeClock(), FakeApi(error=forbidden)
    patcher = StatusPatcher("demo", "ns", min_interval=0, api=api, clock=clock)
    patcher.record("memoryPlan", {"perDeviceGiB": 1.5})
    patcher({"step": 1}, force=True)
    api.error = None
    patcher({"step": 2}, force=True)
    patcher({"step": 3}, force=True)
    assert [call[5]["status"] for call in api.calls] == [
        {"memoryPlan": {"perDeviceGiB": 1.5}},
        {"memoryPlan": {"perDeviceGiB": 1.5}, "progress": {"step": 1}},
        {"memoryPlan": {"perDeviceGiB": 1.5}, "progress": {"step": 2}},
        {"progress": {"step": 3}}]


def test_forbidden_patch_is_retried_while_the_grant_may_be_appearing_then_disabled(caplog):
    """The operator creates the Role and RoleBinding beside the Job: early 403s are retried, a
    refusal after ``grant_grace`` stops the patching; two warnings in all, training carries on."""
    forbidden = Exception("Forbidden")
    forbidden.status = 403
    clock, api = FakeClock(), FakeApi(error=forbidden)
    patcher = StatusPatcher("demo", "ns", min_interval=0, api=api, clock=clock, grant_grace=60)
    with caplog.at_level(logging.WARNING):
        for step in range(3):
            patcher({"step": step}, force=True)
            clock.now += 10
        assert len(api.calls) == 3  # still inside the grace: every update tried
        api.error = None
        patcher({"step": 3})
        assert len(api.calls) == 4  # the grant arrived: patched
        api.error = forbidden
        clock.now += 60
        for step in range(4, 8):
            patcher({"step": step}, force=True)
    assert len(api.calls) == 5  # disabled by the first 403 after the grace
    warnings = [r.getMessage() for r in caplog.records if "progress.patch_failed" in r.getMessage()]
    assert len(warnings) == 2 and all('"status": 403' in w for w in warnings)
    assert '"will retry"' in warnings[0] and '"disabled"' in warnings[1]


def test_tracker_reports_step_total_loss_eta_and_stage():
    clock, seen = FakeClock(), []
    tracker = ProgressTracker([lambda progress, force=False: seen.append(progress)], clock=clock)
    state = SimpleNamespace(global_step=10, max_steps=50, epoch=0.5, is_world_process_zero=True)
    tracker.set_stage("train")
    tracker.on_train_begin(None, state, None)
    clock.now += 20
    state.global_step, state.epoch = 20, 1.0
    tracker.on_log(None, state, None, logs={"loss": 1.25})
    tracker.on_step_end(None, state, None)
    latest = seen[-1]
    assert {k: latest[k] for k in ("stage", "step", "totalSteps", "epoch", "loss", "etaSeconds", "percent")} == {
        "stage": "train", "step": 20, "totalSteps": 50, "epoch": 1.0, "loss": 1.25, "etaSeconds": 60, "percent": 40}


def test_report_fits_in_four_kib_and_never_carries_the_token(tmp_path):
    gate = Gate(value=0.5, threshold=0.8, passed=False, base=0.25, delta=0.25)
    many = {f"pass@{k}": 0.5 for k in range(1, 400)}
    metrics = Metrics(train_loss=1.0, pass_at_k=many, base_pass_at_k={**many, "pass@1": 0.25},
                      pass_at_k_delta={**many, "pass@1": 0.25})
    report = build_report("Failed", contract.REASON_GATES_NOT_MET, f"push failed for token {TOKEN} " + "x" * 5000,
                          Redactor([TOKEN]), metrics=metrics,
                          gates=Gates(passed=False, syntax_ok=gate, logic_ok=gate, security_ok=gate, perf_ok=gate),
                          lineage=Lineage(dataset_sha256="a" * 64, config_hash="b" * 64))
    data = encode(report)
    assert len(data) < contract.REPORT_MAX_BYTES
    assert TOKEN not in data.decode() and "***" in report.message
    assert report.gates is not None and report.lineage is not None
    assert list(report.metrics.pass_at_k) == ["pass@1", "pass@10"]
    # the base model's and the delta keep the same k values, so each row still reads base / tuned / delta
    assert report.metrics.base_pass_at_k == report.metrics.pass_at_k_delta == {"pass@1": 0.25, "pass@10": 0.5}
    assert report.gates.logic_ok.base == 0.25 and report.gates.logic_ok.delta == 0.25
    write_report(report, tmp_path / "termination-log")
    assert TrainerReport.model_validate_json((tmp_path / "termination-log").read_text()) == report


def test_logs_are_json_lines_with_secrets_redacted():
    stream = io.StringIO()
    setup_logging(Redactor([TOKEN]), stream=stream)
    try:
        logging.getLogger("huggingface_hub").warning("request with Authorization: Bearer %s failed", TOKEN)
        logging.getLogger("codex_trainer").info(json.dumps({"stage": "push", "event": "retry", "attempt": 1}))
        try:
            raise RuntimeError(f"boom {TOKEN}")
        except RuntimeError:
            logging.getLogger("codex_trainer").exception("crashed")
    finally:
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert TOKEN not in stream.getvalue()
    assert lines[0]["message"] == "request with Authorization: Bearer *** failed"
    assert (lines[1]["stage"], lines[1]["event"], lines[1]["attempt"]) == ("push", "retry", 1)
    assert "boom ***" in lines[2]["exception"]


def _checkpoint(root, step, state_overrides=None):
    from safetensors.torch import save_file
    import torch

    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(path / "adapter_model.safetensors"))
    (path / "optimizer.pt").write_bytes(b"opt")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    state = {"step": step, "epoch": 1.0, "seed": 1, "data_sha256": "d", "config_hash": "c", "train_records": 4}
    (path / "codex_state.json").write_text(json.dumps({**state, **(state_overrides or {})}))
    return path


def test_resume_picks_the_newest_complete_checkpoint_and_logs_skipped_ones(tmp_path, caplog):
    _checkpoint(tmp_path, 4)
    missing_state = _checkpoint(tmp_path, 8)
    (missing_state / "codex_state.json").unlink()
    truncated = _checkpoint(tmp_path, 12)
    (truncated / "adapter_model.safetensors").write_bytes(b"\x00\x01")
    wrong_step = _checkpoint(tmp_path, 16, {"step": 3})
    assert why_incomplete(missing_state) == "codex_state.json missing"
    assert why_incomplete(truncated).startswith("adapter_model.safetensors unreadable")
    assert why_incomplete(wrong_step) == "step in the state files does not match the directory"
    with caplog.at_level(logging.INFO):
        path, state = find_resume_checkpoint(tmp_path, remove_incomplete=True)
    assert path.name == "checkpoint-4"
    assert state == ResumeState(step=4, epoch=1.0, seed=1, data_sha256="d", config_hash="c", train_records=4)
    skipped = [json.loads(r.getMessage())["checkpoint"] for r in caplog.records if "checkpoint.skipped" in r.getMessage()]
    assert skipped == ["checkpoint-16", "checkpoint-12", "checkpoint-8"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4"]
    assert state.disagreements(ResumeState(0, 0.0, 2, "d", "c", 4)) == ["seed: checkpoint 1, now 2"]


@pytest.mark.parametrize("files", [{}, {"optimizer.pt": None}], ids=["empty-dir", "no-optimizer"])
def test_incomplete_directories(tmp_path, files):
    path = _checkpoint(tmp_path, 2)
    if files:
        (path / "optimizer.pt").unlink()
        assert why_incomplete(path) == "optimizer.pt missing"
    else:
        empty = tmp_path / "checkpoint-9"
        empty.mkdir()
        assert why_incomplete(empty) == "codex_state.json missing"
