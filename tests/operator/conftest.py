"""Fixtures for the operator's unit tests: example objects and golden-file comparison.

Regenerate the golden files with ``UPDATE_GOLDEN=1 pytest tests/operator``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from op_examples import example

GOLDEN_DIR = Path(__file__).parent / "golden"


@pytest.fixture
def demo_run() -> dict[str, Any]:
    return example("run.yaml", "CodexTrainingRun")


@pytest.fixture
def demo_model() -> dict[str, Any]:
    return example("model.yaml", "CodexModel")


@pytest.fixture
def golden() -> Callable[[str, Any], None]:
    def check(name: str, obj: Any) -> None:
        path = GOLDEN_DIR / f"{name}.yaml"
        text = yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=120)
        if os.environ.get("UPDATE_GOLDEN") == "1":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        assert path.exists(), f"{path.name} is missing; generate it with UPDATE_GOLDEN=1"
        assert text == path.read_text(), f"{path.name} differs; rerun with UPDATE_GOLDEN=1 if intended"
    return check
