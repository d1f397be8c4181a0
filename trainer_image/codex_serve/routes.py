"""The generation endpoints: /v1/completions, /v1/chat/completions, /infer and /v1/models."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, AsyncIterator, Callable, Optional

from fastapi import APIRouter
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from .errors import SERVER_ERROR, ApiError, error_body
from .protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunk,
    ChatRequest,
    ChatResponse,
    CompletionChoice,
    CompletionChunk,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    InferRequest,
    InferResponse,
    ModelCard,
    ModelList,
    Usage,
)
from .rows import SamplingParams
from .service import Choice, GenerationService, Lease

# OpenAI's default for /v1/completions; chat and /infer default to the server's cap.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16

_ERRORS: dict[Any, dict[str, Any]] = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 429, 503)}
_ERRORS["4XX"] = {"model": ErrorResponse}
# Schemas the event-stream documentation refers to; app.py adds them to the OpenAPI components.
STREAM_SCHEMAS = (CompletionChunk, ChatChunk, ErrorResponse)

# Turns one piece of a choice's text into the stream's payloads (none, one or several).
StreamChunker = Callable[[Choice, str], list[dict]]


def _responses(chunk_model: type) -> dict[Any, dict[str, Any]]:
    """The error answers, plus the 200's event stream: each event's data is a JSON chunk, then ``[DONE]``."""
    json_data = {"type": "string", "contentMediaType": "application/json", "contentSchema": {"anyOf": [
        {"$ref": f"#/components/schemas/{chunk_model.__name__}"}, {"$ref": "#/components/schemas/ErrorResponse"},
    ]}}
    event = {"type": "object", "required": ["data"], "properties": {
        "data": {"anyOf": [{"const": "[DONE]"}, json_data]},
        "event": {"type": "string"}, "id": {"type": "string"}, "retry": {"type": "integer", "minimum": 0},
    }}
    return {**_ERRORS, 200: {"content": {"text/event-stream": {"itemSchema": event}}}}


class LeasedStream(StreamingResponse):
    """An SSE response that gives its generation slots back however it ends (done, error, disconnect)."""

    def __init__(self, content: AsyncIterator[str], lease: Lease):
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.lease = lease

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.lease.release()


def _sse(payload: Any) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _usage(prompts: list[list[int]], n: int, choices: list[Choice]) -> Usage:
    prompt_tokens = sum(len(ids) for ids in prompts) * n
    completion_tokens = sum(choice.completion_tokens for choice in choices)
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 total_tokens=prompt_tokens + completion_tokens)


def _params(body: Any, max_tokens: int) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                          stop=body.stop_strings())


async def _run(service: GenerationService, prompts: list[list[int]], params: SamplingParams, n: int,
               stream_chunk: Optional[StreamChunker], slots_param: str):
    """Admit, generate, and either collect the choices or return a streaming response."""
    lease = service.admit(len(prompts) * n, slots_param)
    if stream_chunk is None:
        try:
            return await service.collect(*service.start(prompts, params, n, stream=False))
        finally:
            lease.release()
    try:
        rows, queue = service.start(prompts, params, n, stream=True)
    except BaseException:
        lease.release()
        raise

    async def body() -> AsyncIterator[str]:
        try:
            async for choice, text in service.events(rows, queue):
                for payload in stream_chunk(choice, text):
                    yield _sse(payload)
            yield "data: [DONE]\n\n"
        except ApiError as error:
            yield _sse(error_body(error.message, SERVER_ERROR))

    return LeasedStream(body(), lease)


def _completion_chunker(completion_id: str, created: int, model_name: str) -> StreamChunker:
    """Stream chunks of /v1/completions: one per piece of text, and the last with its finish_reason."""
    def chunk(choice: Choice, text: str) -> list[dict]:
        if not text and choice.finish_reason is None:
            return []
        return [{"id": completion_id, "object": "text_completion", "created": created, "model": model_name,
                 "choices": [{"index": choice.index, "text": text, "finish_reason": choice.finish_reason,
                              "logprobs": None}]}]
    return chunk


def _chat_chunker(completion_id: str, created: int, model_name: str) -> StreamChunker:
    """Stream chunks of /v1/chat/completions: the role first, then content deltas, then the finish."""
    opened: set[int] = set()

    def chunk(choice: Choice, text: str) -> list[dict]:
        deltas: list[tuple[dict, Optional[str]]] = []
        if choice.index not in opened:  # the first chunk of each choice carries the role
            opened.add(choice.index)
            deltas.append(({"role": "assistant", "content": ""}, None))
        if text:
            deltas.append(({"content": text}, None))
        if choice.finish_reason is not None:
            deltas.append(({}, choice.finish_reason))
        return [{"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model_name,
                 "choices": [{"index": choice.index, "delta": delta, "finish_reason": reason}]}
                for delta, reason in deltas]
    return chunk


async def _generate(service: GenerationService, prompts: list, params: SamplingParams, body: Any, id_prefix: str,
                    chunker: Callable[[str, int, str], StreamChunker], respond: Callable[..., Any]) -> Any:
    """Generate ``body.n`` choices for ``prompts``: a stream of the chunker's payloads, or the response
    ``respond(choices, id=..., created=..., model=..., usage=...)`` builds."""
    completion_id, created, model_name = f"{id_prefix}-{uuid.uuid4().hex}", int(time.time()), service.config.model_name
    chunk = chunker(completion_id, created, model_name) if body.stream else None
    result = await _run(service, prompts, params, body.n, chunk, "n")
    if body.stream:
        return result
    return respond(result, id=completion_id, created=created, model=model_name, usage=_usage(prompts, body.n, result))


def _add_completions(router: APIRouter, service: GenerationService) -> None:
    @router.post("/v1/completions", response_model=CompletionResponse, responses=_responses(CompletionChunk))
    async def create_completion(body: CompletionRequest):
        service.check_model(body.model)
        service.require_ready()
        prompts = await service.encode(body.prompts(), "prompt")
        params = _params(body, service.max_tokens(body.max_tokens, COMPLETIONS_DEFAULT_MAX_TOKENS, "max_tokens",
                                                  prompts))
        return await _generate(service, prompts, params, body, "cmpl", _completion_chunker, lambda choices, **fields:
                               CompletionResponse(**fields, choices=[CompletionChoice(
                                   index=c.index, text=c.text, finish_reason=c.finish_reason) for c in choices]))


def _add_chat(router: APIRouter, service: GenerationService) -> None:
    @router.post("/v1/chat/completions", response_model=ChatResponse, responses=_responses(ChatChunk))
    async def create_chat_completion(body: ChatRequest):
        service.check_model(body.model)
        service.require_ready()
        prompts = await service.encode([service.chat_prompt(body.messages)], "messages", special_tokens=False)
        requested, param = ((body.max_completion_tokens, "max_completion_tokens") if body.max_completion_tokens
                            else (body.max_tokens, "max_tokens"))
        params = _params(body, service.max_tokens(requested, service.config.max_new_tokens, param, prompts))
        return await _generate(service, prompts, params, body, "chatcmpl", _chat_chunker, lambda choices, **fields:
                               ChatResponse(**fields, choices=[ChatChoice(
                                   index=c.index, message=AssistantMessage(content=c.text),
                                   finish_reason=c.finish_reason) for c in choices]))


def _add_infer(router: APIRouter, service: GenerationService) -> None:
    @router.post("/infer", response_model=InferResponse, responses=_ERRORS)
    async def infer(body: InferRequest) -> InferResponse:
        service.require_ready()
        prompts = await service.encode([body.prompt], "prompt")
        params = SamplingParams(max_tokens=service.max_tokens(body.max_tokens, service.config.max_new_tokens,
                                                              "max_tokens", prompts), temperature=0.0)
        choices = await _run(service, prompts, params, 1, None, "prompt")
        return InferResponse(completion=choices[0].text)


def build_router(service: GenerationService, dependencies: list) -> APIRouter:
    router = APIRouter(dependencies=dependencies)
    model_name = service.config.model_name
    started = int(time.time())

    @router.get("/v1/models", response_model=ModelList, responses={401: {"model": ErrorResponse}})
    async def list_models() -> ModelList:
        return ModelList(data=[ModelCard(id=model_name, created=started)])

    _add_completions(router, service)
    _add_chat(router, service)
    _add_infer(router, service)
    return router
