"""Hardening scan of the manifests we ship and generate.

The issue asks for kube-linter (`go install golang.stackrox.io/kube-linter/...`), but the
Go module proxy reachable here refuses that module host ("Go module fetches are limited
to the module-host allowlist", HTTP 403), so kube-linter cannot be built on these
machines. `make lint-k8s` runs it when it is on PATH. Here the same manifests are
scanned with checkov's Kubernetes checks (PyPI), installed into its own virtualenv under
the per-user cache so its pins never touch the project's environment.

Exclusions live in tools/hardening-exclusions.yaml, one line of justification each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import yaml

CHECKOV_VERSION = "3.3.30"
EXCLUSIONS_FILE = Path(__file__).resolve().parent / "hardening-exclusions.yaml"


def _cache_root() -> Path:
    explicit = os.environ.get("CODEX_CACHE_DIR")
    base = Path(explicit) if explicit else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "codex-operator"
    return base / "tools" / f"checkov-{CHECKOV_VERSION}"


def checkov() -> Path:
    """The checkov executable, installed on first use."""
    venv = _cache_root()
    exe = venv / "bin" / "checkov"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", f"checkov=={CHECKOV_VERSION}"], check=True)
    return exe


@dataclass(frozen=True)
class Finding:
    check_id: str
    name: str
    resource: str

    def __str__(self) -> str:
        return f"{self.check_id} {self.resource}: {self.name}"


def exclusions() -> dict[str, str]:
    return {entry["check"]: entry["why"] for entry in yaml.safe_load(EXCLUSIONS_FILE.read_text())}


def scan(manifests: Iterable[dict]) -> list[Finding]:
    """Failed checks for these objects, before exclusions."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifests.yaml"
        path.write_text("---\n".join(yaml.safe_dump(m, sort_keys=False) for m in manifests))
        result = subprocess.run(
            [str(checkov()), "-f", str(path), "--framework", "kubernetes", "--output", "json", "--quiet",
             "--skip-download", "--compact"],
            capture_output=True, text=True, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
        )
    if result.returncode not in (0, 1) or not result.stdout.strip():
        raise RuntimeError(f"checkov failed ({result.returncode}): {result.stderr[-2000:]}")
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    return sorted(
        {Finding(c["check_id"], c["check_name"], c["resource"])
         for r in reports for c in r.get("results", {}).get("failed_checks", [])},
        key=str,
    )


def unexcused(manifests: Iterable[dict]) -> list[Finding]:
    allowed = exclusions()
    return [f for f in scan(manifests) if f.check_id not in allowed]
