"""Structured JSON-line logs with secrets redacted.

Every record, ours or a library's, leaves as one JSON object per line on stderr. A message
that is itself a JSON object (``log.info(json.dumps({...}))``, or :func:`event`) is merged into
the line. The :class:`Redactor` filter replaces each known secret (the Hub token) with ``***``
in the formatted line, tracebacks included, so no handler ever writes the token.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Iterable, Optional, TextIO

REDACTED = "***"
log = logging.getLogger("codex_trainer")


class Redactor:
    """Replaces secrets in strings; shared by the log filter, exception messages and the report."""

    def __init__(self, secrets: Iterable[Optional[str]] = ()):
        # Short strings would redact half the log; a Hub token is ~37 characters.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: Redactor):
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        message = record.getMessage()
        parsed = _as_object(message)
        if parsed is not None:
            line.update(parsed)
        else:
            line["message"] = message
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(line, default=str))


def _as_object(message: str) -> Optional[dict[str, Any]]:
    if not message.startswith("{"):
        return None
    try:
        parsed = json.loads(message)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def setup_logging(redact: Redactor, stream: TextIO = sys.stderr, level: int = logging.INFO) -> None:
    """Route every logger (transformers, huggingface_hub, warnings) through one redacting JSON handler."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(redact))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    try:
        import transformers
        from huggingface_hub.utils import disable_progress_bars

        transformers.utils.logging.disable_default_handler()
        transformers.utils.logging.enable_propagation()
        transformers.utils.logging.set_verbosity_warning()
        transformers.utils.logging.disable_progress_bar()
        disable_progress_bars()
        import datasets

        datasets.disable_progress_bars()
    except ImportError:  # the CLI's argument errors need no ML stack
        pass
    for noisy in ("bandit", "httpx", "httpx2", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # bandit's optional SARIF formatter plugin fails to load; it is never used here.
    logging.getLogger("stevedore").setLevel(logging.CRITICAL)


def event(stage: str, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event of a recipe stage: ``{"stage": "train", "event": "step", ...}``."""
    log.log(level, json.dumps({"stage": stage, "event": name, **fields}, default=str))
