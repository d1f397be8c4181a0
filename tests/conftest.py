"""Shared pytest wiring: the embedded control plane fixture lives in tools/localcluster."""

from __future__ import annotations

from pathlib import Path

import pytest

# The `cluster` fixture (tools/localcluster/pytest_plugin.py) is wired in by tests/cluster/conftest.py.

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
