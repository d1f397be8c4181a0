"""Adding a gate is one entry in api/codex_api/gates.py, and it then appears everywhere.

The test does what a contributor would: it appends two throwaway entries to (a copy of) gates.py,
a per-sample gate that counts only the completions that parse and a metric gate with a minimum,
then, in a fresh interpreter that imports that copy, looks for them in the generated CRD, the
trainer's verdict, the operator's status message and the rendered reference. A subprocess,
because the models are built from the registry once, when codex_api is first imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

NEW_ENTRIES = '''
register(SampleGate(
    name="fastOk", description="fastOk: share of the parsing completions whose tests ran in under a second.",
    threshold=Threshold("fastOk", 0.5, "fastOk: parsing completions whose tests ran in under a second."),
    score=lambda outcome: outcome.elapsed < 1.0, counts=lambda outcome: outcome.parses,
))
register(MetricGate(
    name="gain", metric="gain", bound="min",
    description="gain: value is pass@1 of the adapter minus the base model's.",
    threshold=Threshold("minGain", 0.0, "minGain: the least gain over the base model.",
                        bounds={"ge": -1, "le": 1}),
))
'''

PROBE = textwrap.dedent('''
    import json

    import codex_api
    from codex_api import crdgen, reference
    from codex_api.gates import SampleOutcome
    from codex_api.training_run import Thresholds
    from codex_operator.status.run import _gates_message
    from codex_trainer.gates import SampleScore, verdict

    schema = crdgen.training_run_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    thresholds = schema["spec"]["properties"]["evaluation"]["properties"]["thresholds"]["properties"]
    status_gates = schema["status"]["properties"]["gates"]["properties"]

    def outcome(parses, elapsed):
        return SampleOutcome(task_id="t", parses=parses, passed=parses, in_time=parses, bandit=(),
                             status="passed" if parses else "syntax-error", elapsed=elapsed)

    scores = [SampleScore.of(outcome(*facts)) for facts in ((True, 0.2), (True, 3.0), (False, 0.0), (True, 0.4))]
    gates = verdict(scores, Thresholds(), {"perplexity": 4.0, "gain": -0.05}).to_wire()
    print(json.dumps({
        "package": codex_api.__file__,
        "thresholds": {name: thresholds[name] for name in ("fastOk", "minGain")},
        "status": {name: status_gates[name]["description"] for name in ("fastOk", "gain")},
        "verdict": gates,
        "row": scores[2].row(),
        "message": _gates_message(gates),
        "reference": [line for line in reference.render().splitlines()
                      if "fastOk" in line or "Gain" in line or "gain:" in line],
    }))
''')


def test_a_gate_added_to_the_registry_appears_everywhere(repo_root, tmp_path):
    package = tmp_path / "codex_api"
    shutil.copytree(repo_root / "api" / "codex_api", package, ignore=shutil.ignore_patterns("__pycache__"))
    with (package / "gates.py").open("a") as gates_module:
        gates_module.write(NEW_ENTRIES)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)

    assert seen["package"] == str(package / "__init__.py")
    assert seen["thresholds"] == {
        "fastOk": {"description": "fastOk: parsing completions whose tests ran in under a second. Defaults to 0.5.",
                   "type": "number", "minimum": 0, "maximum": 1, "format": "double"},
        "minGain": {"description": "minGain: the least gain over the base model. Defaults to 0.",
                    "type": "number", "minimum": -1, "maximum": 1, "format": "double"},
    }
    assert seen["status"] == {
        "fastOk": "fastOk: share of the parsing completions whose tests ran in under a second.",
        "gain": "gain: value is pass@1 of the adapter minus the base model's.",
    }
    # 2 of the 3 that parse ran in under a second; the one that does not parse is not counted.
    assert seen["verdict"]["fastOk"] == {"value": 0.666667, "threshold": 0.5, "passed": True}
    assert seen["verdict"]["gain"] == {"value": -0.05, "threshold": 0.0, "passed": False}
    assert seen["verdict"]["passed"] is False
    assert seen["row"]["fast_ok"] is None
    assert seen["message"].endswith("; fastOk 0.667/0.5 ok; gain -0.05/0 FAILED")
    assert seen["reference"] == [
        "| `fastOk` | [Gate](#gate) |  | fastOk: share of the parsing completions whose tests ran in under a second. |",
        "| `gain` | [Gate](#gate) |  | gain: value is pass@1 of the adapter minus the base model's. |",
        "| `fastOk` | float |  | fastOk: parsing completions whose tests ran in under a second. Defaults to 0.5. |",
        "| `minGain` | float |  | minGain: the least gain over the base model. Defaults to 0. |",
        "| `fastOk` | `fastOk` | 0.5 | value >= `fastOk` | fastOk: share of the parsing completions whose tests ran "
        "in under a second. |",
        "| `gain` | `minGain` | 0 | value >= `minGain` | gain: value is pass@1 of the adapter minus the base "
        "model's. |",
    ]
