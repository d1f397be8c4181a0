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
from typing import Any, Optional

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

class NoDiffBase(kopf.DiffBaseStorage):
    """No diff-base: kopf computes one for change handlers (on.create/update), deep-copying every
    event's body to do so, and the operator registers none (watch events only queue keys)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> Optional[kopf.BodyEssence]:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


# kopf's per-object logger: one "Handler 'on_x_event' succeeded." line per watch event is noise;
# what the reconcilers do is logged by codex_operator's own loggers.
KOPF_OBJECTS_LOGGER = "kopf.objects"


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
    settings.persistence.diffbase_storage = NoDiffBase()
    logging.getLogger(KOPF_OBJECTS_LOGGER).setLevel(logging.WARNING)
    # codex-operator's main puts the config in the memo; `kopf run -m codex_operator.handlers` runs on defaults.
    cfg: OperatorConfig = getattr(memo, "config", None) or OperatorConfig()
    # kopf hands every index to every handler, by the name of its function (handlers/indexes.py).
    views = Views(**{field.name: kwargs[field.name] for field in dataclasses.fields(Views)})
    limits = cfg.limits
    state = memo.state = OperatorState(cfg=cfg, kube=Kube(load_client_config(), limits.api_threads), views=views)
    state.queues = {
        "run": WorkQueue("run", metrics.instrument(RUN_KIND)(functools.partial(reconcile_run, state)),
                         limits.run_workers),
        "model": WorkQueue("model", metrics.instrument(MODEL_KIND)(functools.partial(reconcile_model, state)),
                           limits.model_workers),
    }
    for queue in state.queues.values():
        queue.start()
    try:
        metrics.serve(cfg.metrics_port, cfg.bind_host)
    except OSError as error:  # reconciling matters more than /metrics: carry on without it
        logger.error("cannot serve /metrics on %s:%d: %s", cfg.bind_host, cfg.metrics_port, error)
    memo.trimmer = asyncio.get_running_loop().create_task(trim_periodically())
    logger.info("codex-operator configured: trainer image %s, runtime images %s, metrics on %s:%d",
                cfg.trainer_image, dict(cfg.runtime_images) or "(defaults)", cfg.bind_host, cfg.metrics_port)


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
