"""The trainer's error words: each maps to one exit code and report reason from codex_api.contract.

A user mistake (spec or data) is an :class:`InvalidSpecError` / :class:`InvalidDataError` and is
not retried; anything the network or the node may fix next time is a :class:`TransientError`.
Messages start with the field path or the file:line they are about, and never carry a token.
"""

from __future__ import annotations

from codex_api import contract


class TrainerError(Exception):
    """Base of the errors the trainer turns into an exit code and a one-line report message."""

    exit_code = contract.EXIT_TRANSIENT
    reason = contract.REASON_TRANSIENT


class InvalidSpecError(TrainerError, ValueError):
    """The spec asks for something that cannot work (missing model, 4-bit without a GPU, ...)."""

    exit_code = contract.EXIT_INVALID
    reason = contract.REASON_INVALID_SPEC


class InvalidDataError(TrainerError, ValueError):
    """A dataset file is malformed or empty; the message names the file and line."""

    exit_code = contract.EXIT_INVALID
    reason = contract.REASON_INVALID_DATA


class TransientError(TrainerError):
    """Network, Hub 429/5xx and similar failures a retried pod may get past."""

    exit_code = contract.EXIT_TRANSIENT
    reason = contract.REASON_TRANSIENT


class Preempted(TrainerError):
    """SIGTERM arrived; a checkpoint was saved and a retried pod resumes from it."""

    exit_code = contract.EXIT_PREEMPTED
    reason = contract.REASON_PREEMPTED


class HandoffError(InvalidDataError):
    """What one stage of a staged run hands the next (codex_api.stages) is missing, unreadable or not what
    that stage wrote: a retry reads the same, so it is not retried."""
