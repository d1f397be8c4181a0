"""The Dockerfiles can't be built here (no Docker engine), so check what they name instead:
hadolint is clean, every COPY source and console script exists, and the extras they install
resolve without pulling torch into the operator or kopf into the trainer."""

from __future__ import annotations

import importlib
import re
import shlex
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

DOCKERFILES = ("Dockerfile.operator", "Dockerfile.trainer")


def _instructions(text: str):
    """Yield (INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            yield word.upper(), rest.strip()


def _pyproject(repo_root: Path) -> dict:
    return tomllib.loads((repo_root / "pyproject.toml").read_text())


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_is_clean(repo_root, dockerfile):
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), str(repo_root / dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_copy_sources_exist(repo_root, dockerfile):
    for instruction, args in _instructions((repo_root / dockerfile).read_text()):
        if instruction == "COPY" and "--from=" not in args:
            for source in shlex.split(args)[:-1]:
                assert (repo_root / source).exists(), f"{dockerfile}: COPY {source} does not exist"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_entrypoints_are_console_scripts(repo_root, dockerfile):
    scripts = _pyproject(repo_root)["project"]["scripts"]
    entrypoints = [
        shlex.split(args.strip("[]").replace(",", " "))[0]
        for instruction, args in _instructions((repo_root / dockerfile).read_text())
        if instruction == "ENTRYPOINT"
    ]
    assert entrypoints
    for name in entrypoints:
        assert name in scripts, f"{dockerfile}: ENTRYPOINT {name} is not a console script"
        module, _, function = scripts[name].partition(":")
        assert callable(getattr(importlib.import_module(module), function))


def _installed_extras(text: str) -> list[set[str]]:
    return [set(match.split(",")) for match in re.findall(r'install "\.\[([a-z,]+)\]"', text)]


def _closure(requirements: list[str], extras: set[str]) -> set[str]:
    """Every distribution the requirements pull in, walked through installed metadata."""
    seen: set[str] = set()
    queue = [Requirement(r) for r in requirements]
    while queue:
        requirement = queue.pop()
        if requirement.marker and not any(
            requirement.marker.evaluate({"extra": extra}) for extra in (extras or {""})
        ):
            continue
        name = requirement.name.lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        distribution = metadata.distribution(name)
        assert distribution.version in requirement.specifier or not requirement.specifier, (
            f"{name} {distribution.version} does not satisfy {requirement}"
        )
        for sub in distribution.requires or []:
            parsed = Requirement(sub)
            if parsed.marker is None or parsed.marker.evaluate({"extra": ""}):
                queue.append(parsed)
            elif any(parsed.marker.evaluate({"extra": e}) for e in requirement.extras):
                queue.append(parsed)
    return seen


@pytest.mark.parametrize(
    ("dockerfile", "forbidden"),
    [("Dockerfile.operator", "torch"), ("Dockerfile.trainer", "kopf")],
)
def test_installed_extras_resolve_and_stay_apart(repo_root, dockerfile, forbidden):
    project = _pyproject(repo_root)["project"]
    groups = _installed_extras((repo_root / dockerfile).read_text())
    assert groups, f"{dockerfile} installs no extra"
    for extras in groups:
        requirements = list(project["dependencies"])
        for extra in extras:
            requirements += project["optional-dependencies"][extra]
        closure = _closure(requirements, set())
        assert forbidden not in closure, f"{dockerfile} would install {forbidden}"
