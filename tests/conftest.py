"""Shared pytest wiring: the embedded control plane fixture lives in tools/localcluster."""

from __future__ import annotations

from pathlib import Path

import pytest

# One embedded control plane per session, shared by every folder: the `cluster` fixture.
pytest_plugins = ["localcluster.pytest_plugin"]

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
