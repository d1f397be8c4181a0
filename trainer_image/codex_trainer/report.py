"""The termination message: a TrainerReport (phase, reason, message, metrics, gates, artifact, lineage)
under 4 KiB, which the operator reads back into the run's status."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Optional

from codex_api import contract
from codex_api.contract import TrainerReport

log = logging.getLogger(__name__)
MESSAGE_MAX_CHARS = 400


def build_report(phase: str, reason: str, message: str, redact: Callable[[str], str] = str,
                 **sections: Optional[Any]) -> TrainerReport:
    """A report that fits the limit: the message is shortened first, then pass@k detail, then sections."""
    message = redact(" ".join(message.split()))
    if len(message) > MESSAGE_MAX_CHARS:
        message = message[: MESSAGE_MAX_CHARS - 1] + "…"
    report = TrainerReport(phase=phase, reason=reason, message=message,
                           **{k: v for k, v in sections.items() if v is not None})
    for shrink in (_drop_pass_at_k, _drop("lineage"), _drop("gates"), _drop("metrics")):
        if len(encode(report)) < contract.REPORT_MAX_BYTES:
            break
        report = shrink(report)
    return report


def _drop_pass_at_k(report: TrainerReport) -> TrainerReport:
    if report.metrics is None:
        return report
    keep = dict(sorted(report.metrics.pass_at_k.items())[:2])
    return report.model_copy(update={"metrics": report.metrics.model_copy(update={"pass_at_k": keep})})


def _drop(section: str) -> Callable[[TrainerReport], TrainerReport]:
    return lambda report: report.model_copy(update={section: None})


def encode(report: TrainerReport) -> bytes:
    return json.dumps(report.to_wire(), separators=(",", ":"), sort_keys=True).encode()


def write_report(report: TrainerReport, path: Path) -> None:
    """Write the report; a missing termination-log mount is logged, not fatal (the exit code still says it)."""
    data = encode(report)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as error:
        log.warning(json.dumps({"event": "report.unwritable", "path": str(path), "error": type(error).__name__}))
    log.info(json.dumps({"stage": "report", "event": "report", "bytes": len(data), **report.to_wire()}))
