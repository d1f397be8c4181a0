"""The one helper for gate tests (tests/api and tests/trainer): a completion's outcome, good unless told."""

from __future__ import annotations

from codex_api.gates import SampleOutcome


def outcome(**facts) -> SampleOutcome:
    """A completion that parses, passes, ends in time and has no finding, unless ``facts`` say otherwise."""
    values = {"task_id": "t", "parses": True, "passed": True, "in_time": True, "bandit": (), "status": "passed",
              "elapsed": 0.1, **facts}
    return SampleOutcome(**values)
