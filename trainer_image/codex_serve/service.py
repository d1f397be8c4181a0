"""What every generation endpoint shares: checks, admission, and reading a request's rows back.

The handlers in ``routes`` only translate between the OpenAI shapes and these calls.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import AsyncIterator, Optional, Sequence

from jinja2 import TemplateError

from .config import ServeConfig
from .engine import Engine
from .errors import RATE_LIMIT, SERVER_ERROR, UNAVAILABLE, ApiError
from .masking import StreamMasker
from .metrics import ServeMetrics
from .protocol import ChatMessage
from .rows import Delta, Event, Failed, Finished, Row, SamplingParams

RETRY_AFTER_BUSY_S = "1"
INLINE_TOKENIZE_CHARS = 8192
RETRY_AFTER_LOADING_S = "5"


@dataclass
class Choice:
    """What a client sees of one row: text (masked unless disabled) and how it ended."""

    index: int
    text: str = ""
    finish_reason: Optional[str] = None
    completion_tokens: int = 0


@dataclass
class Lease:
    """Slots held by an admitted request; released exactly once."""

    service: "GenerationService"
    slots: int
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.service.in_use -= self.slots
            self.service.metrics.in_flight.dec()


class GenerationService:
    def __init__(self, config: ServeConfig, engine: Engine, metrics: ServeMetrics):
        self.config, self.engine, self.metrics = config, engine, metrics
        self.in_use = 0  # generation slots held; only touched on the event loop

    # ---- checks, each a 4xx naming its field ----

    def check_model(self, requested: Optional[str]) -> None:
        if requested is not None and requested != self.config.model_name:
            raise ApiError(404, f"model: '{requested}' is not served here; this server serves "
                           f"'{self.config.model_name}'", param="model", code="model_not_found")

    def require_ready(self) -> None:
        if not self.engine.ready:
            detail = "the model failed to load" if self.engine.state == "failed" else "the model is still loading"
            raise ApiError(503, detail, type=UNAVAILABLE, headers={"Retry-After": RETRY_AFTER_LOADING_S})

    def chat_prompt(self, messages: Sequence[ChatMessage]) -> str:
        tokenizer = self.engine.tokenizer
        conversation = [{"role": message.role, "content": message.text()} for message in messages]
        if not getattr(tokenizer, "chat_template", None):
            # No template shipped with the checkpoint: a plain transcript the base model can continue.
            return "".join(f"{turn['role']}: {turn['content']}\n" for turn in conversation) + "assistant: "
        try:
            return tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        except TemplateError as error:
            raise ApiError(400, f"messages: the model's chat template refused them: {error}", param="messages")

    async def encode(self, texts: Sequence[str], param: str, *, special_tokens: bool = True) -> list[list[int]]:
        def tokenize() -> list[list[int]]:
            return self.engine.tokenizer(list(texts), add_special_tokens=special_tokens)["input_ids"]

        # Short prompts tokenise in microseconds, inline; long ones on a thread, keeping the event loop free.
        long = sum(len(text) for text in texts) > INLINE_TOKENIZE_CHARS
        encoded = await asyncio.to_thread(tokenize) if long else tokenize()
        bos = self.engine.tokenizer.bos_token_id
        for position, ids in enumerate(encoded):
            if not ids:
                if bos is None:
                    raise ApiError(400, f"{param}: must not be empty", param=param)
                ids.append(bos)
            if len(ids) > self.config.max_prompt_tokens:
                raise ApiError(400, f"{param}: {len(ids)} tokens exceed the limit of "
                               f"{self.config.max_prompt_tokens} prompt tokens", param=param)
        return encoded

    def max_tokens(self, requested: Optional[int], default: int, param: str, prompts: Sequence[list[int]]) -> int:
        cap = self.config.max_new_tokens
        if requested is not None and requested > cap:
            raise ApiError(400, f"{param}: {requested} exceeds this server's limit of {cap}", param=param)
        value = min(requested or default, cap)
        limit = self.engine.max_positions
        longest = max(len(ids) for ids in prompts)
        if limit is not None and longest + value > limit:
            raise ApiError(400, f"{param}: prompt ({longest} tokens) plus {value} new tokens exceed the model's "
                           f"context of {limit}", param=param)
        return value

    # ---- admission and results ----

    def admit(self, slots: int, param: str) -> Lease:
        limit = self.config.max_concurrency
        if slots > limit:
            raise ApiError(400, f"{param}: asks for {slots} generations; this server runs at most {limit} at once",
                           param=param)
        if self.in_use + slots > limit:
            self.metrics.rejected.labels("concurrency").inc()
            raise ApiError(429, f"too many concurrent generations (limit {limit}); retry shortly", type=RATE_LIMIT,
                           headers={"Retry-After": RETRY_AFTER_BUSY_S})
        self.in_use += slots
        self.metrics.in_flight.inc()
        return Lease(self, slots)

    def start(self, prompts: list[list[int]], params: SamplingParams, n: int,
              stream: bool) -> tuple[list[Row], asyncio.Queue]:
        self.metrics.prompt_tokens.inc(sum(len(ids) for ids in prompts) * n)
        return self.engine.submit(prompts, params, n, stream)

    async def events(self, rows: list[Row], queue: "asyncio.Queue[Event]") -> AsyncIterator[tuple[Choice, str]]:
        """Yield (choice, newly released text) per event; a finished choice has its finish_reason set.

        Leaving early (client gone) cancels the rows still generating.
        """
        choices = [Choice(row.index) for row in rows]
        maskers = [StreamMasker(self.config.mask_secrets) for _ in rows]
        open_rows = len(rows)
        try:
            while open_rows:
                event = await queue.get()
                choice, masker = choices[event.index], maskers[event.index]
                if isinstance(event, Delta):
                    text = masker.feed(event.text)
                    if text:
                        choice.text += text
                        yield choice, text
                elif isinstance(event, Finished):
                    open_rows -= 1
                    self.metrics.generated_tokens.inc(event.completion_tokens)
                    text = masker.flush()
                    choice.text += text
                    choice.finish_reason, choice.completion_tokens = event.reason, event.completion_tokens
                    yield choice, text
                elif isinstance(event, Failed):
                    raise ApiError(500, event.message, type=SERVER_ERROR)
        finally:
            for row in rows:
                row.cancelled = True  # no effect on finished rows

    async def collect(self, rows: list[Row], queue: "asyncio.Queue[Event]") -> list[Choice]:
        choices: dict[int, Choice] = {}
        async for choice, _ in self.events(rows, queue):
            choices[choice.index] = choice
        return [choices[index] for index in sorted(choices)]
