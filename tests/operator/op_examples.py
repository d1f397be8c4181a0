"""Example objects for the operator's unit tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

# Frozen copies of examples/ (taken when the golden files were made), so edits there do not churn them.
EXAMPLES = Path(__file__).parent / "fixtures"
RUN_UID = "11111111-2222-3333-4444-555555555555"
MODEL_UID = "99999999-8888-7777-6666-555555555555"


def example(filename: str, kind: str) -> dict[str, Any]:
    """The first ``kind`` document of an example, placed in namespace ``team-a``."""
    docs = [d for d in yaml.safe_load_all((EXAMPLES / filename).read_text()) if d and d.get("kind") == kind]
    obj = copy.deepcopy(docs[0])
    obj["metadata"].update(namespace="team-a", uid=RUN_UID if kind == "CodexTrainingRun" else MODEL_UID,
                           generation=1, creationTimestamp="2026-01-01T00:00:00Z")
    return obj
