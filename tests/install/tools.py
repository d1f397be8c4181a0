"""The helm and kubectl binaries built by tools/localcluster (cached per machine)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from localcluster import build

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "helm" / "codex-operator"


def binary(name: str) -> str:
    build.build()
    return str(build.binary(name))


def run(name: str, *args: str, check: bool = True, input: str | None = None,
        kubeconfig: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)} if kubeconfig else None
    result = subprocess.run([binary(name), *args], capture_output=True, text=True, input=input, cwd=REPO_ROOT,
                            env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"{name} {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def helm_template(*args: str) -> str:
    return run("helm", "template", "codex-operator", str(CHART), "--namespace", "codex-system", *args).stdout
