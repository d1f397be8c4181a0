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
# The Metrics fields keyed by "pass@k", trimmed together so that they keep the same k values.
PASS_AT_K_MAPS = ("pass_at_k", "base_pass_at_k", "pass_at_k_delta")


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


def verdict_report(gates: Optional[Any], redact: Callable[[str], str], **sections: Optional[Any]
                   ) -> tuple[TrainerReport, int]:
    """The report of a run that reached its verdict, and the exit code: 0 when the gates passed (or there
    were none), 43 when they did not (the adapter is kept, not promoted)."""
    passed = gates is None or gates.passed
    failed = [name for name, gate in (gates.to_wire() if gates else {}).items()
              if isinstance(gate, dict) and not gate["passed"]]
    message = "adapter published" if passed else f"gates not met: {', '.join(failed)}; adapter kept, not promoted"
    report = build_report("Succeeded" if passed else "Failed",
                          contract.REASON_SUCCEEDED if passed else contract.REASON_GATES_NOT_MET, message, redact,
                          gates=gates, **sections)
    return report, contract.EXIT_OK if passed else contract.EXIT_GATES_NOT_MET


def _drop_pass_at_k(report: TrainerReport) -> TrainerReport:
    """The first two pass@k entries, in the adapter's, the base model's and the delta maps alike."""
    metrics = report.metrics
    if metrics is None:
        return report
    keep = sorted(metrics.pass_at_k)[:2]
    trimmed = {attr: {name: values[name] for name in keep if name in values}
               for attr in PASS_AT_K_MAPS if (values := getattr(metrics, attr)) is not None}
    return report.model_copy(update={"metrics": metrics.model_copy(update=trimmed)})


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
