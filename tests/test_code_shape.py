"""The production code stays readable in one sitting: no function over 50 lines, no file over 400.

A function that grows past 50 lines is doing two things; a file past 400 is two modules
(STYLE.md, "Size and names"). Tests, tools and benchmarks are not held to it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PRODUCTION = [REPO / "api", REPO / "operator", REPO / "trainer_image"]
MAX_FUNCTION_LINES = 50
MAX_FILE_LINES = 400


def sources() -> list[Path]:
    return sorted(p for root in PRODUCTION for p in root.rglob("*.py"))


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(REPO)))
def test_files_and_functions_are_small(path):
    text = path.read_text()
    assert text.count("\n") <= MAX_FILE_LINES, f"{path.name} has {text.count(chr(10))} lines: split it"
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines in {path.name}: {long}"
