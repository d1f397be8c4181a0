"""Every example validates against the models, and run.yaml embeds the sample data verbatim."""

from __future__ import annotations

import json

import pytest
import yaml

import gen_examples
from codex_api import CodexModel, CodexTrainingRun, parse

KINDS = {"CodexTrainingRun": CodexTrainingRun, "CodexModel": CodexModel}


def _example_documents(repo_root):
    for path in sorted((repo_root / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            yield path.name, doc


def test_every_example_validates(repo_root):
    seen = []
    for name, doc in _example_documents(repo_root):
        if doc["kind"] in KINDS:
            parse(KINDS[doc["kind"]], doc)
            seen.append((name, doc["kind"]))
    kinds = {kind for _, kind in seen}
    assert kinds == set(KINDS)
    assert {"run.yaml", "model.yaml", "run-hub-push.yaml", "run-multinode.yaml", "run-dpo.yaml"} <= {n for n, _ in seen}


def test_run_yaml_is_generated_from_the_data_files(repo_root):
    assert (repo_root / "examples" / "run.yaml").read_text() == gen_examples.render(), "run `make examples`"


@pytest.mark.parametrize("name,fields", [
    ("code_pairs.jsonl", {"prompt", "completion"}),
    ("code_preferences.jsonl", {"prompt", "chosen", "rejected"}),
    ("eval_tasks.jsonl", {"task_id", "prompt", "test", "entry_point"}),
])
def test_sample_data_records_have_their_format(repo_root, name, fields):
    lines = (repo_root / "examples" / "data" / name).read_text().splitlines()
    assert len(lines) >= 8
    for line in lines:
        assert set(json.loads(line)) == fields


def test_eval_tasks_solutions_are_checkable(repo_root):
    """Each task's test accepts a correct reference solution written here, so the gates measure the model."""
    solutions = {
        "add_three": "    return a + b + c\n",
        "double": "    return x * 2\n",
        "is_positive": "    return n > 0\n",
        "string_length": "    return len(s)\n",
        "list_product": "    result = 1\n    for x in items:\n        result *= x\n    return result\n",
        "odds": "    return [x for x in items if x % 2 == 1]\n",
        "max_of_three": "    return max(a, b, c)\n",
        "count_upper": "    return sum(1 for ch in s if ch.isupper())\n",
    }
    for line in (repo_root / "examples" / "data" / "eval_tasks.jsonl").read_text().splitlines():
        task = json.loads(line)
        namespace: dict = {}
        exec(task["prompt"] + solutions[task["entry_point"]] + "\n" + task["test"], namespace)  # noqa: S102
        namespace["check"](namespace[task["entry_point"]])
