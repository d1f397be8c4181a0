"""baseline.py without a model: the cache key, where the cache lives, reading and rewriting it, and the
comparison of the adapter with its base (pass@k, gates, minImprovement); and the demo's table of it."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging

import pytest

from codex_api.evaluation import Thresholds
from codex_trainer.baseline import (CACHE_DIR_NAME, IMPROVEMENT, BaselineCache, Comparison, base_scores,
                                    baseline_inputs, cache_dir, expected_task_ids)
from codex_trainer.data import Task
from codex_trainer.gates import SampleScore, verdict

from api.gate_kit import outcome
from .kit import REPO_ROOT, env_for, tiny_run

TASKS = [Task("t/0", "def f():\n", "def check(f): pass\n", "f"), Task("t/1", "def g():\n", "def check(g): pass\n", "g")]
IDS = expected_task_ids(TASKS, 2)
KEY_FACTS = dict(base_revision="embedded/tiny-llama@seed1337-v1", tasks_sha256="a" * 64, dtype="float32",
                 image="codex-trainer:1")


def scores(*facts: dict) -> list[SampleScore]:
    """Two samples per task, in score_samples' order, good unless ``facts`` say otherwise."""
    return [SampleScore.of(outcome(task_id=task_id, **fact)) for task_id, fact in zip(IDS, facts)]


def inputs(**changes) -> dict:
    run = tiny_run(**changes.pop("spec", {}))
    return baseline_inputs(run.spec, **{**KEY_FACTS, **changes})


def key(**changes) -> str:
    return BaselineCache(REPO_ROOT, inputs(**changes)).key


def test_expected_task_ids_follow_score_samples_order():
    assert IDS == ["t/0", "t/0", "t/1", "t/1"]


@pytest.mark.parametrize("changes", [
    {"base_revision": "embedded/tiny-llama@seed1338-v1"}, {"tasks_sha256": "b" * 64}, {"dtype": "bfloat16"},
    {"image": "codex-trainer:2"},
    {"spec": {"evaluation": {"samplesPerTask": 3}}}, {"spec": {"evaluation": {"k": [1]}}},
    {"spec": {"evaluation": {"maxNewTokens": 13}}}, {"spec": {"evaluation": {"temperature": 0.2}}},
    {"spec": {"evaluation": {"timeoutSeconds": 3}}}, {"spec": {"training": {"seed": 7}}},
    {"spec": {"lora": {"quantization": "4bit"}}},
], ids=["revision", "tasks", "dtype", "image", "samples", "k", "max-new-tokens", "temperature", "timeout", "seed",
        "quantization"])
def test_every_setting_that_changes_the_samples_changes_the_key(changes):
    assert key(**changes) != key()


def test_what_does_not_change_the_samples_keeps_the_key():
    assert key() == key() and len(key()) == 32
    assert key(spec={"training": {"maxSteps": 3, "learningRate": 0.5}, "evaluation": {"thresholds": {"logicOk": 1}},
                     "output": {"pvc": {"claimName": "other", "path": "/x"}}}) == key()


def test_a_pvc_model_is_keyed_by_its_files_too(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    pvc_model = {"spec": {"baseModel": {"embedded": None, "pvc": {"claimName": "models", "path": "/m"}}},
                 "model_dir": tmp_path}
    before = key(**pvc_model)
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    assert key(**pvc_model) != before
    assert "modelFiles" not in inputs(model_dir=tmp_path)  # a hub or embedded revision already says it


@pytest.mark.parametrize("output,where", [
    ({"pvc": {"claimName": "artifacts", "path": "/tiny"}}, "data/pvc/artifacts"),
    ({"pvc": {"claimName": "artifacts", "path": "/"}}, "checkpoints"),
    ({"pvc": None, "hub": {"repoId": "o/r", "tokenSecretRef": {"name": "hf"}}}, "checkpoints"),
], ids=["output-pvc-root", "adapter-at-the-pvc-root", "no-pvc"])
def test_the_cache_lives_on_the_output_pvc_else_beside_the_checkpoints(tmp_path, output, where):
    env = env_for(tmp_path, tmp_path / "models")
    assert cache_dir(tiny_run(output=output).spec, env) == tmp_path / where / CACHE_DIR_NAME


def test_the_base_is_scored_once_then_read_from_the_cache(tmp_path, caplog):
    cache = BaselineCache(tmp_path / CACHE_DIR_NAME, inputs())
    calls = []
    base = scores({}, {"passed": False}, {"parses": False, "passed": False}, {"bandit": ("B602",)})
    with caplog.at_level(logging.INFO):
        first, source = base_scores(cache, IDS, lambda: calls.append(1) or base)
        again, source_again = base_scores(cache, IDS, lambda: calls.append(1) or base)
    assert (source, source_again, len(calls)) == ("scored", "cache", 1)
    assert [s.outcome for s in again] == [s.outcome for s in base] and again[3].gates == base[3].gates
    events = [json.loads(r.getMessage())["event"] for r in caplog.records if "baseline." in r.getMessage()]
    assert events == ["baseline.scored", "baseline.cached"]
    assert [p.name for p in cache.directory.iterdir()] == [f"{cache.key}.json"]  # no temporary file left


@pytest.mark.parametrize("spoil", [
    lambda text, cache: "{not json",
    lambda text, cache: json.dumps({**json.loads(text), "inputs": {**cache.inputs, "seed": 99}}),
    lambda text, cache: json.dumps({**json.loads(text), "key": "0" * 32}),
    lambda text, cache: json.dumps({**json.loads(text), "outcomes": json.loads(text)["outcomes"][:3]}),
    lambda text, cache: json.dumps({**json.loads(text), "outcomes": [{"task_id": "t/0"}] * 4}),
    lambda text, cache: "[]",
], ids=["corrupt", "other-settings", "other-key", "missing-samples", "malformed-samples", "not-an-object"])
def test_a_corrupt_or_mismatched_entry_is_ignored_and_rewritten(tmp_path, caplog, spoil):
    cache = BaselineCache(tmp_path, inputs())
    cache.write([s.outcome for s in scores({}, {}, {}, {})])
    cache.path.write_text(spoil(cache.path.read_text(), cache))
    fresh = scores({"passed": False}, {}, {}, {})
    with caplog.at_level(logging.WARNING):
        got, source = base_scores(cache, IDS, lambda: fresh)
    assert source == "scored" and got == fresh
    assert "baseline.cache_ignored" in caplog.text
    assert cache.read(IDS) == [s.outcome for s in fresh]


def test_an_unwritable_cache_costs_time_not_the_run(tmp_path, caplog):
    (tmp_path / "file").write_text("")
    cache = BaselineCache(tmp_path / "file" / CACHE_DIR_NAME, inputs())
    with caplog.at_level(logging.WARNING):
        got, source = base_scores(cache, IDS, lambda: scores({}, {}, {}, {}))
    assert source == "scored" and len(got) == 4 and "baseline.cache_unwritable" in caplog.text


def test_comparison_reports_base_tuned_and_delta_for_pass_at_k_and_each_gate():
    tuned = scores({}, {}, {}, {"passed": False})  # task 0: 2/2, task 1: 1/2
    base = scores({}, {"passed": False}, {"parses": False, "passed": False, "in_time": False},
                  {"passed": False, "bandit": ("B602",)})  # task 0: 1/2, task 1: 0/2
    comparison = Comparison(TASKS, [1, 2], tuned, base)
    assert comparison.metrics() == {"pass_at_k": {"pass@1": 0.75, "pass@2": 1.0},
                                    "base_pass_at_k": {"pass@1": 0.25, "pass@2": 0.5},
                                    "pass_at_k_delta": {"pass@1": 0.5, "pass@2": 0.5}}
    assert comparison.measurements() == {IMPROVEMENT: 0.5}
    thresholds = Thresholds(syntax_ok=0, logic_ok=0, security_ok=0, perf_ok=0, min_improvement=0.6)
    gates = comparison.annotate(verdict(tuned, thresholds, comparison.measurements())).to_wire()
    assert gates["syntaxOk"] == {"value": 1.0, "threshold": 0.0, "passed": True, "base": 0.75, "delta": 0.25}
    # The base's syntax error counts against syntaxOk only: the other gates count the three that parse.
    assert gates["logicOk"] == {"value": 0.75, "threshold": 0.0, "passed": True, "base": 0.333333, "delta": 0.416667}
    assert gates["securityOk"] == {"value": 1.0, "threshold": 0.0, "passed": True, "base": 0.666667,
                                   "delta": 0.333333}
    assert gates["perfOk"] == {"value": 1.0, "threshold": 0.0, "passed": True, "base": 1.0, "delta": 0.0}
    assert gates["minImprovement"] == {"value": 0.5, "threshold": 0.6, "passed": False}
    assert gates["passed"] is False


def test_without_tasks_there_is_no_base_and_min_improvement_is_skipped():
    comparison = Comparison([], [1], [])
    assert comparison.metrics() == {"pass_at_k": {}, "base_pass_at_k": None, "pass_at_k_delta": None}
    gates = verdict([], Thresholds(min_improvement=0.0), {"perplexity": 3.0, **comparison.measurements()})
    assert comparison.annotate(gates) == gates and gates.min_improvement is None and gates.passed


def test_the_demo_prints_base_tuned_and_delta_from_the_status():
    spec = importlib.util.spec_from_file_location("demo_under_test", REPO_ROOT / "tools" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    status = {"metrics": {"passAtK": {"pass@1": 0.4}, "basePassAtK": {"pass@1": 0.1}, "passAtKDelta": {"pass@1": 0.3}},
              "gates": {"passed": True, "logicOk": {"value": 0.4, "threshold": 0, "passed": True, "base": 0.1,
                                                    "delta": 0.3},
                        "minImprovement": {"value": 0.3, "threshold": 0, "passed": True}}}
    lines = demo.comparison_table(status).splitlines()
    assert [line.split() for line in lines] == [["base", "tuned", "delta", "gate"],
                                                ["pass@1", "0.100", "0.400", "+0.300"],
                                                ["gate", "logicOk", "0.100", "0.400", "+0.300", "ok"],
                                                ["gate", "minImprovement", "-", "+0.300", "-", "ok"]]
    assert "tasks is unset" in demo.comparison_table({"metrics": {"evalLoss": 1.0}, "gates": {"passed": True}})


def test_a_dataclass_outcome_round_trips_through_the_cache_file(tmp_path):
    cache = BaselineCache(tmp_path, inputs())
    written = [dataclasses.replace(s.outcome, elapsed=1.25, status="timeout") for s in scores({}, {}, {}, {})]
    cache.write(written)
    assert cache.read(IDS) == written
