"""The kopf lower bound in pyproject.toml is the lowest release with every kopf feature the operator
touches. An older kopf would silently ignore a setting it lacks (an assignment to a missing
dataclass field of settings raises nothing), so the floor is checked, not trusted.

The table says when each feature first shipped (read from kopf's release tags). A feature the code
starts using that is not in the table fails the test until its release is looked up and added.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
OPERATOR = REPO / "operator" / "codex_operator"

FIRST_RELEASE = {
    "settings.networking.request_timeout": "1.33.0",
    "settings.persistence.diffbase_storage": "0.27",
    "settings.posting.level": "0.27",
    "settings.posting.reporting_component": "1.37.0",
    "settings.scanning.disabled": "1.29.0",
    "settings.watching.chunk_size": "1.45.0",
    "settings.watching.client_timeout": "0.27",
    "settings.watching.label_selectors": "1.45.0",
    "settings.watching.server_timeout": "0.27",
    "kopf.Body": "0.27",
    "kopf.BodyEssence": "0.27",
    "kopf.DiffBaseStorage": "0.27",
    "kopf.Patch": "0.27",
    "kopf.Index": "1.30.0",
    "kopf.LogFormat": "0.28",
    "kopf.Memo": "0.27",
    "kopf.OperatorSettings": "0.27",
    "kopf.append_owner_reference": "0.5",
    "kopf.configure": "0.5",
    "kopf.index": "1.30.0",
    "kopf.on.cleanup": "0.23",
    "kopf.on.event": "0.15",
    "kopf.on.startup": "0.23",
    # kopf.run(memo=...): the config reaches the handlers this way (main.py).
    "kopf.run": "1.30.0",
}


def dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def kopf_features_used() -> set[str]:
    """Every ``kopf.X[.Y]`` and ``settings.group.field`` the operator's code names."""
    used = set()
    for path in OPERATOR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            name = dotted(node) if isinstance(node, ast.Attribute) else None
            if name and re.match(r"^(kopf\.on\.\w+|kopf\.\w+|settings\.\w+\.\w+)$", name):
                used.add(name)
    # kopf.on.startup is an attribute of kopf.on: count the decorator, not the bare module.
    return used - {"kopf.on"}


def pinned_floor() -> Version:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirement = next(Requirement(r) for r in project["optional-dependencies"]["operator"] if r.startswith("kopf"))
    floors = [Version(spec.version) for spec in requirement.specifier if spec.operator == ">="]
    assert len(floors) == 1, f"kopf needs exactly one lower bound, got {requirement}"
    return floors[0]


def test_every_kopf_feature_used_has_its_first_release_listed():
    unknown = kopf_features_used() - FIRST_RELEASE.keys()
    assert not unknown, f"look up the first kopf release of {sorted(unknown)} and add it to FIRST_RELEASE"


def test_the_pinned_floor_is_the_newest_feature_release():
    used = kopf_features_used()
    assert {"settings.watching.label_selectors", "settings.watching.chunk_size"} <= used
    needed = max(Version(FIRST_RELEASE[name]) for name in used)
    assert pinned_floor() == needed, f"pyproject pins kopf>={pinned_floor()}, the code needs kopf>={needed}"
