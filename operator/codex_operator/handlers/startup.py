"""The one @kopf.on.startup: settings, persistence, posting, the API client and /metrics."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from .. import metrics, names
from ..config import OperatorConfig
from ..k8s import Kube, load_client_config
from ..state import OperatorState
from .resources import DEPLOYMENTS, HPAS, JOBS, PODS, SERVICES

# kopf's own state lives in annotations under our prefix: the CRDs' status schemas are
# structural, so anything kopf wrote into status.kopf would be pruned (and rewritten forever).
PREFIX = "codex.dev"


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration")
    # kopf's "Handler ... succeeded" events would double every write; transitions post their own.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = names.OPERATOR_NAME
    # The CRDs are installed before the operator: no need to watch CRDs or namespaces (or the RBAC for it).
    settings.scanning.disabled = True
    # Watch only what the operator labelled: other Jobs, pods and Deployments never reach it.
    for resource in (JOBS, PODS, DEPLOYMENTS, SERVICES, HPAS):
        settings.watching.label_selectors[resource[0], resource[2]] = names.MANAGED_SELECTOR
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    cfg = OperatorConfig.from_env()
    memo.state = OperatorState(cfg=cfg, kube=Kube(load_client_config()))
    metrics.serve(cfg.metrics_port, cfg.bind_host)
    logger.info("codex-operator configured: trainer image %s, serve image %s, metrics on %s:%d",
                cfg.trainer_image, cfg.serve_image, cfg.bind_host, cfg.metrics_port)


@kopf.on.cleanup()
async def close_client(memo: kopf.Memo, **_: Any) -> None:
    state = getattr(memo, "state", None)
    if state is not None:
        state.kube.close()
