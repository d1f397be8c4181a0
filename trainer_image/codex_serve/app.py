"""The FastAPI application: wiring of engine, auth, limits, metrics and routes.

``create_app(config, loader)`` is all a caller needs; the model loads in the background
once the app starts, so the port answers /healthz (and /readyz 503) while it loads.
"""

from __future__ import annotations

import hmac
import logging
from contextlib import asynccontextmanager
from typing import Callable, Optional

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from .config import ServeConfig
from .engine import Engine, Loader
from .errors import AUTHENTICATION, ApiError, install_error_handlers
from .loading import model_loader
from .metrics import ServeMetrics
from .middleware import BodyLimitMiddleware, MetricsMiddleware
from .protocol import Health
from .routes import STREAM_SCHEMAS, build_router
from .service import RETRY_AFTER_LOADING_S, GenerationService

log = logging.getLogger(__name__)

ROUTES = ("/v1/completions", "/v1/chat/completions", "/infer", "/v1/models", "/healthz", "/readyz", "/metrics")


def _api_key_dependency(api_key: str) -> Callable:
    bearer = HTTPBearer(auto_error=False, description="The API key from the CodexModel's apiKeySecretRef.")
    expected = api_key.encode()

    async def require_api_key(credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
        given = credentials.credentials.encode() if credentials is not None else b""
        # Constant-time, so the comparison leaks nothing about how much of a guess was right.
        if not hmac.compare_digest(given, expected):
            raise ApiError(401, "Authorization: a valid 'Bearer <API key>' header is required",
                           type=AUTHENTICATION, param="Authorization", headers={"WWW-Authenticate": "Bearer"})

    return require_api_key


def create_app(config: ServeConfig, loader: Optional[Loader] = None,
               on_load_failure: Optional[Callable[[str], None]] = None) -> FastAPI:
    """The server app. ``loader`` returns (model, tokenizer); by default it loads what ``config`` names."""
    metrics = ServeMetrics.create()
    engine = Engine(loader or model_loader(config), metrics, max_batch=config.max_concurrency,
                    batch_window_s=config.batch_window_ms / 1000, threads=config.threads,
                    on_load_failure=on_load_failure)
    service = GenerationService(config, engine, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await engine.start()
        yield
        await engine.stop()

    app = FastAPI(title="codex-serve", version="0.1.0", lifespan=lifespan,
                  summary="OpenAI-compatible completions for a base model plus a LoRA adapter.")
    app.state.engine, app.state.service, app.state.metrics = engine, service, metrics
    install_error_handlers(app)
    # Added last runs first: metrics see every answer, the 413 included.
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes, metrics=metrics)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=ROUTES)

    dependencies = [Depends(_api_key_dependency(config.api_key))] if config.api_key else []
    app.include_router(build_router(service, dependencies))

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get("/readyz", response_model=Health, responses={503: {"model": Health}})
    async def readyz():
        if engine.ready:
            return Health(status="ready")
        return JSONResponse(Health(status=engine.state, detail=engine.error).model_dump(), status_code=503,
                            headers={"Retry-After": RETRY_AFTER_LOADING_S})

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}})
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
    _document_stream_schemas(app)
    return app


def _document_stream_schemas(app: FastAPI) -> None:
    """Add the streamed chunk models, which no route returns directly, to the OpenAPI components."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in STREAM_SCHEMAS:
                model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(model_schema.pop("$defs", {}))
                components[model.__name__] = model_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
