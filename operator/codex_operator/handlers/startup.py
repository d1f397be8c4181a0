"""The one @kopf.on.startup: settings, posting, the API client, the work queues and /metrics.

The operator registers no kopf change handlers (on.create/update/resume): watch events queue
keys and the work queues reconcile them (workqueue.py). So kopf keeps no state of its own on
the objects: no finalizers, no diff-base or progress annotations, and no patches of its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from typing import Any

import kopf

from .. import metrics, names
from ..config import OperatorConfig
from ..k8s import Kube, load_client_config
from ..memory import trim_periodically
from ..state import OperatorState
from ..sync_models import KIND as MODEL_KIND, reconcile_model
from ..sync_runs import KIND as RUN_KIND, reconcile_run
from ..views import Views
from ..workqueue import WorkQueue
from .resources import DEPLOYMENTS, HPAS, JOBS, PODS, SERVICES

# Workers per queue. Enough run workers that a burst of new runs all reach the run slots
# (state.RUN_SLOTS build and create their Job's path at once), so the API client sends every
# Job's path before any Role or status write; a reconcile waiting there holds only its key and
# the indexed run. Fewer workers made the last Jobs of a 1000-run burst wait for other runs'
# status writes (bench/RESULTS.md). Models are few.
RUN_WORKERS = 1024
MODEL_WORKERS = 4


class QuietEventHandlers(logging.Filter):
    """Drop kopf's per-event "Handler 'on_x_event' succeeded." lines: one per watch event is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Handler 'on_") and message.endswith("_event' succeeded."))


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: Any, **kwargs: Any) -> None:
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
    # kopf hands every index to every handler, by the name of its function (handlers/indexes.py).
    views = Views(**{field.name: kwargs[field.name] for field in dataclasses.fields(Views)})
    state = memo.state = OperatorState(cfg=cfg, kube=Kube(load_client_config()), views=views)
    state.queues = {
        "run": WorkQueue("run", metrics.instrument(RUN_KIND)(functools.partial(reconcile_run, state)), RUN_WORKERS),
        "model": WorkQueue("model", metrics.instrument(MODEL_KIND)(functools.partial(reconcile_model, state)),
                           MODEL_WORKERS),
    }
    for queue in state.queues.values():
        queue.start()
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
        for queue in state.queues.values():
            await queue.stop()
        state.kube.close()
