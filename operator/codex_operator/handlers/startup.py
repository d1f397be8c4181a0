"""The one @kopf.on.startup: settings, persistence, posting, the API client and /metrics."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from .. import metrics, names
from ..config import OperatorConfig
from ..k8s import Kube, load_client_config
from ..memory import trim_periodically
from ..state import OperatorState
from .resources import DEPLOYMENTS, HPAS, JOBS, PODS, SERVICES

# kopf's own state lives in annotations under our prefix: the CRDs' status schemas are
# structural, so anything kopf wrote into status.kopf would be pruned (and rewritten forever).
PREFIX = "codex.dev"


class LeanDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff-base, built from the fields it keeps instead of a deep copy of the whole
    body (managedFields and status included), which dominated the operator's CPU at 1000 runs.
    The essence is identical, so annotations written by plain kopf stay valid."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        metadata = body.get("metadata", {})
        lean = {key: value for key, value in body.items() if key not in ("metadata", "status")}
        lean["metadata"] = {key: metadata[key] for key in ("labels", "annotations", "ownerReferences")
                            if key in metadata}
        if extra_fields:
            lean["status"] = body.get("status", {})
        return super().build(body=kopf.Body(lean), extra_fields=extra_fields)


class QuietEventHandlers(logging.Filter):
    """Drop kopf's per-event "Handler 'on_x_event' succeeded." lines: one per watch event is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Handler 'on_") and message.endswith("_event' succeeded."))


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = LeanDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration")
    # After kopf patches its diff-base onto a run it waits for that version to come back through the
    # watch before detecting changes again. Under load (1000 new runs) the watch lags more than the
    # default 5 s, and kopf would take the stale body for an unhandled creation and call create_run
    # a second time (harmless, since children are found by name, but it doubles the requests).
    settings.persistence.consistency_timeout = 60
    # kopf's "Handler ... succeeded" events would double every write; transitions post their own.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = names.OPERATOR_NAME
    # The CRDs are installed before the operator: no need to watch CRDs or namespaces (or the RBAC for it).
    settings.scanning.disabled = True
    # Watch only what the operator labelled: other Jobs, pods and Deployments never reach it.
    for resource in (JOBS, PODS, DEPLOYMENTS, SERVICES, HPAS):
        settings.watching.label_selectors[resource[0], resource[2]] = names.MANAGED_SELECTOR
    # Paginated listing at start: one 1000-object list response parsed at once is a peak the
    # allocator never gives back.
    settings.watching.chunk_size = 100
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    for handler in logging.getLogger().handlers:
        handler.addFilter(QuietEventHandlers())
    cfg = OperatorConfig.from_env()
    memo.state = OperatorState(cfg=cfg, kube=Kube(load_client_config()))
    try:
        metrics.serve(cfg.metrics_port, cfg.bind_host)
    except OSError as error:  # reconciling matters more than /metrics: carry on without it
        logger.error("cannot serve /metrics on %s:%d: %s", cfg.bind_host, cfg.metrics_port, error)
    memo.trimmer = asyncio.get_running_loop().create_task(trim_periodically())
    logger.info("codex-operator configured: trainer image %s, serve image %s, metrics on %s:%d",
                cfg.trainer_image, cfg.serve_image, cfg.bind_host, cfg.metrics_port)


@kopf.on.cleanup()
async def close_client(memo: kopf.Memo, **_: Any) -> None:
    trimmer = getattr(memo, "trimmer", None)
    if trimmer is not None:
        trimmer.cancel()
    state = getattr(memo, "state", None)
    if state is not None:
        state.kube.close()
