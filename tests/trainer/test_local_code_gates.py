"""`codex-train local` and generated code: said once that it runs unisolated, or skipped with --skip-code-gates."""

from __future__ import annotations

import io
import logging

import pytest

from codex_trainer import cli, recipe
from codex_trainer.local import choose_code_gates, final_table, load_manifest

NOTICE = "WITHOUT ISOLATION"


@pytest.fixture
def example_run(repo_root):
    run, _ = load_manifest(repo_root / "examples" / "run.yaml")
    assert run.spec.evaluation.tasks is not None
    return run


def test_running_the_code_gates_says_so_once(example_run):
    stream = io.StringIO()
    run, skipped = choose_code_gates(example_run, skip=False, stream=stream)
    assert run is example_run and not skipped
    assert stream.getvalue().count(NOTICE) == 1 and "--skip-code-gates" in stream.getvalue()


def test_skipping_drops_the_tasks_and_keeps_the_rest(example_run):
    stream = io.StringIO()
    run, skipped = choose_code_gates(example_run, skip=True, stream=stream)
    assert skipped and run.spec.evaluation.tasks is None and stream.getvalue() == ""
    assert run.spec.evaluation.model_copy(update={"tasks": example_run.spec.evaluation.tasks}) == \
        example_run.spec.evaluation
    without_tasks, skipped_again = choose_code_gates(run, skip=False, stream=stream)
    assert without_tasks is run and not skipped_again and stream.getvalue() == ""  # nothing runs: nothing to say


def test_the_final_table_says_what_was_skipped(tmp_path):
    stream = io.StringIO()
    final_table({"metrics": {"evalLoss": 1.25, "perplexity": 3.49}}, 0, tmp_path, stream=stream,
                code_gates_skipped=True)
    rows = [line.split(None, 1) for line in stream.getvalue().strip().splitlines()]
    assert [row[0] for row in rows] == ["pass@k,", "evalLoss", "perplexity", "adapter", "exit"]
    assert "skipped (--skip-code-gates): no generated code was run" in stream.getvalue()


class FakeRecipe:
    """Records the run local mode hands the recipe; trains nothing."""

    seen = []

    def __init__(self, run, env, **_):
        self.seen.append(run)
        self.results = {"metrics": {"evalLoss": 1.0}}

    def output_dir(self):
        return "adapter"


@pytest.mark.parametrize("flags,tasks,notice", [([], True, 1), (["--skip-code-gates"], False, 0)],
                         ids=["code-gates", "skip-code-gates"])
def test_the_local_command_wires_the_flag(flags, tasks, notice, repo_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(recipe, "Recipe", FakeRecipe)
    monkeypatch.setattr(cli, "execute", lambda _: 0)
    FakeRecipe.seen.clear()
    try:
        code = cli.main(["local", str(repo_root / "examples" / "run.yaml"), "--workdir", str(tmp_path), *flags])
    finally:
        logging.getLogger().handlers.clear()
    out = capsys.readouterr().out
    assert code == 0 and (FakeRecipe.seen[0].spec.evaluation.tasks is not None) is tasks
    assert out.count(NOTICE) == notice and out.count("skipped (--skip-code-gates)") == 1 - notice
