"""Argo CD health checks, on Lua 5.1 through lupa.

Status objects come from tests/install/argocd_captured/ (captured from real runs on the
embedded control plane by the e2e suite, `CODEX_CAPTURE_ARGOCD=1`) plus the table below
for the states a short e2e run never shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .argocd import health

CAPTURED = Path(__file__).resolve().parent / "argocd_captured"


def _run(status=None, generation=1):
    obj = {"apiVersion": "codex.dev/v1alpha1", "kind": "CodexTrainingRun",
           "metadata": {"name": "r", "generation": generation}}
    if status is not None:
        obj["status"] = status
    return obj


def _model(conditions, observed=1, generation=1):
    return {"apiVersion": "codex.dev/v1alpha1", "kind": "CodexModel",
            "metadata": {"name": "m", "generation": generation},
            "status": {"observedGeneration": observed, "conditions": conditions}}


def _c(kind, status, message=""):
    return {"type": kind, "status": status, "reason": "R", "message": message}


CASES = [
    ("run-new", _run(), "Progressing", "Waiting for the operator"),
    ("run-pending", _run({"phase": "Pending", "message": "Job created"}), "Progressing", "Job created"),
    ("run-training", _run({"phase": "Running", "progress": {"percent": 40}}), "Progressing", "Running (40%)"),
    ("run-evaluating", _run({"phase": "Evaluating"}), "Progressing", "Evaluating"),
    ("run-suspended", _run({"phase": "Pending", "conditions": [_c("Suspended", "True")]}), "Suspended", "Pending"),
    ("run-succeeded", _run({"phase": "Succeeded", "message": "gates passed"}), "Healthy", "gates passed"),
    ("run-gates-failed", _run({"phase": "Failed", "conditions": [
        {"type": "Ready", "status": "False", "reason": "GatesNotMet", "message": "logicOk 0.1 < 0.8"}]}),
     "Degraded", "GatesNotMet: logicOk 0.1 < 0.8"),
    ("model-new", {"kind": "CodexModel", "metadata": {"name": "m"}}, "Progressing", "Waiting for the operator"),
    ("model-stale-generation", _model([_c("Available", "True")], observed=1, generation=2), "Progressing",
     "latest spec"),
    ("model-available", _model([_c("Available", "True", "1/1 ready"), _c("Progressing", "False")]), "Healthy",
     "1/1 ready"),
    ("model-rolling", _model([_c("Available", "True"), _c("Progressing", "True", "rolling to abc")]), "Progressing",
     "rolling to abc"),
    ("model-degraded", _model([_c("Available", "False"), _c("Degraded", "True", "crash looping")]), "Degraded",
     "crash looping"),
    ("model-waiting", _model([_c("Available", "False", "waiting for a passing run")]), "Progressing",
     "waiting for a passing run"),
]


@pytest.mark.parametrize(("obj", "status", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_health(obj, status, message):
    result = health(obj)
    assert result["status"] == status
    assert message in result["message"]


def test_captured_objects_from_real_runs():
    files = sorted(CAPTURED.glob("*.json"))
    assert files, "no captured status objects; run the e2e suite with CODEX_CAPTURE_ARGOCD=1"
    for path in files:
        captured = json.loads(path.read_text())
        assert health(captured["object"])["status"] == captured["expected"], path.name
