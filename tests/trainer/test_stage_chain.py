"""A staged run on the tiny model through the CLI, as the operator's three Jobs run it: train, sandbox, publish;
then a second run on the same base and tasks, whose train stage finds the base model's outcomes cached."""

from __future__ import annotations

import json
import logging

import pytest
from fakehub.server import TOKEN

from codex_api import contract, paths, stages
from codex_api.contract import TrainerReport
from codex_trainer.cli import main
from codex_trainer.handoff import read_handoff
from codex_trainer.publish import adapter_digest

from .kit import tiny_run, trainer_environ

HUB_REPO = "codex-tester/staged-tiny"


@pytest.fixture
def cluster_env(tmp_path, models_dir, monkeypatch, fake_hub):
    """The stages' environment: the data root and checkpoints as mounted, online only to the fake Hub."""
    for name, value in trainer_environ(tmp_path, models_dir).items():
        if name != "HF_HUB_OFFLINE":
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    spec = tmp_path / "run.yaml"
    spec.write_text(json.dumps(tiny_run(
        training={"maxSteps": 6},
        output={"pvc": {"claimName": "artifacts", "path": "/tiny"},
                "hub": {"repoId": HUB_REPO, "tokenSecretRef": {"name": "hf"}}}).to_wire()))
    yield spec
    logging.getLogger().handlers.clear()


def report(path) -> TrainerReport:
    return TrainerReport.model_validate_json(path.read_text())


def run_stages(tmp_path, spec, name: str, monkeypatch, capsys) -> tuple[dict, TrainerReport]:
    """The three stages of one run into ``tmp_path/name``: what each reported, and the hand-off."""
    work, logs = tmp_path / name, tmp_path / f"{name}-logs"
    logs.mkdir()
    monkeypatch.setenv(paths.ENV_CHECKPOINT_DIR, str(tmp_path / f"{name}-checkpoints"))
    assert main(["run", "--config", str(spec), "--stage", "train", "--work-dir", str(work),
                 "--termination-log", str(logs / "train")]) == contract.EXIT_OK
    trained = report(logs / "train")
    handoff = read_handoff(work / "evaluation.json")
    capsys.readouterr()
    assert main(["sandbox", "--work-dir", str(work), "--termination-log", str(logs / "sandbox")]) == 0
    progress = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    monkeypatch.setenv(stages.ENV_SANDBOX_RESULTS, (logs / "sandbox").read_text())
    monkeypatch.setenv(paths.ENV_HF_TOKEN, TOKEN)  # only the publish stage holds the write token
    code = main(["publish", "--config", str(spec), "--work-dir", str(work), "--termination-log", str(logs / "publish")])
    monkeypatch.delenv(paths.ENV_HF_TOKEN)
    return {"trained": trained, "handoff": handoff, "progress": progress, "code": code}, report(logs / "publish")


def test_a_staged_run_trains_runs_its_programs_in_the_sandbox_and_publishes(tmp_path, cluster_env, monkeypatch, capsys,
                                                                            fake_hub):
    artifacts = tmp_path / "data" / "pvc" / "artifacts"
    first, published = run_stages(tmp_path, cluster_env, "work", monkeypatch, capsys)

    # The train stage: the hand-off and the adapter in the work dir, and a report that says what comes next.
    trained, handoff = first["trained"], first["handoff"]
    assert (trained.phase, trained.reason) == ("Succeeded", contract.REASON_TRAINED)
    assert trained.message == "trained; 32 programs to run in the sandbox"  # 8 tasks x 2 samples, tuned and base
    assert trained.metrics.train_loss > 0 and trained.metrics.perplexity > 1 and trained.metrics.pass_at_k == {}
    assert trained.lineage.base_model_revision == "embedded/tiny-llama@seed1337-v1" and trained.artifact is None
    assert len(handoff.completions) == len(handoff.base_completions) == 8 and handoff.timeout_seconds == 2
    assert handoff.adapter.sha256 == adapter_digest(tmp_path / "work" / "adapter")[0]
    assert first["progress"][-1] == {"event": stages.PROGRESS_EVENT, "done": 32, "total": 32}

    # Publish: the verdict, the adapter on the output PVC and on the Hub, the base's outcomes cached.
    assert first["code"] == contract.EXIT_OK and (published.phase, published.reason) == ("Succeeded", "Succeeded")
    assert set(published.metrics.pass_at_k) == set(published.metrics.base_pass_at_k) == {"pass@1", "pass@2"}
    assert published.metrics.train_loss == trained.metrics.train_loss and published.lineage == trained.lineage
    assert published.gates.passed and published.gates.logic_ok.base is not None
    head = fake_hub.repo(HUB_REPO).branches["main"][-1][0]
    assert (published.artifact.commit_sha, published.artifact.claim_name) == (head, "artifacts")
    assert adapter_digest(artifacts / "tiny")[0] == handoff.adapter.sha256
    assert {"adapter_model.safetensors", "README.md", "results.json"} <= set(fake_hub.files(HUB_REPO))
    results = json.loads((artifacts / "tiny" / "results.json").read_text())
    assert [row["completion"] for row in results["samples"]] == [c for group in handoff.completions for c in group]
    assert results["baseline"]["source"] == "scored" and len(list((artifacts / ".codex-baselines").iterdir())) == 1

    # The next run on the same base and tasks: its train stage finds the base's outcomes and hands off none.
    pushes = sum(1 for _, path in fake_hub.requests if "/commit/" in path)
    second, republished = run_stages(tmp_path, cluster_env, "work-2", monkeypatch, capsys)
    assert second["handoff"].base_completions is None
    assert second["trained"].message == "trained; 16 programs to run in the sandbox"
    assert second["code"] == contract.EXIT_OK
    assert republished.metrics.base_pass_at_k == published.metrics.base_pass_at_k
    assert json.loads((artifacts / "tiny" / "results.json").read_text())["baseline"]["source"] == "cache"
    assert sum(1 for _, path in fake_hub.requests if "/commit/" in path) == pushes + 1


def test_the_train_stage_writes_nothing_but_the_work_dir_and_pushes_nothing(tmp_path, cluster_env, fake_hub):
    artifacts = tmp_path / "data" / "pvc" / "artifacts"
    artifacts.chmod(0o555)  # read-only in this stage (and shown empty below, where root ignores the mode)
    try:
        code = main(["run", "--config", str(cluster_env), "--stage", "train", "--work-dir", str(tmp_path / "work"),
                     "--termination-log", str(tmp_path / "train-log")])
    finally:
        artifacts.chmod(0o755)
    assert code == contract.EXIT_OK and report(tmp_path / "train-log").reason == contract.REASON_TRAINED
    assert list(artifacts.iterdir()) == []
    assert [path for method, path in fake_hub.requests if method != "HEAD"] == []  # HEAD: TRL's telemetry
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {
        p.name for p in (tmp_path / "work" / "adapter").iterdir()}
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["adapter", "evaluation.json"]


def test_the_train_stage_reports_a_bad_spec_as_a_single_job_run_does(tmp_path):
    spec = tmp_path / "run.yaml"
    spec.write_text(json.dumps({**tiny_run().to_wire(), "spec": {**tiny_run().spec.to_wire(), "lora": {"r": 0}}}))
    try:
        code = main(["run", "--config", str(spec), "--stage", "train", "--work-dir", str(tmp_path / "work"),
                     "--termination-log", str(tmp_path / "termination-log")])
    finally:
        logging.getLogger().handlers.clear()
    assert code == 42 and report(tmp_path / "termination-log").reason == "InvalidSpec"
    assert not (tmp_path / "work").exists()
