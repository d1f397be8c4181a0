"""The generation engine: dynamic batching of concurrent requests over ``model.generate``.

Requests queue as rows. A batcher task on the event loop takes the first pending row,
waits a few milliseconds for more to arrive (or until the batch is full), and runs
them as one left-padded ``generate`` call on a dedicated worker thread, so the event loop
keeps serving while the model computes. Rows arriving meanwhile form the next batch.

Each row keeps its own ``max_tokens``, ``temperature``, ``top_p`` and stop strings:
a stopping criterion ends rows one by one (their text streams out as it is decoded) and a
logits processor applies each row's sampling, greedy rows included.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional, Sequence

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from .metrics import ServeMetrics
from .rows import LENGTH, Event, Row, SamplingParams, StopStringText

log = logging.getLogger(__name__)

Loader = Callable[[], tuple[Any, Any]]


class RowSampling(LogitsProcessor):
    """Per-row temperature and nucleus (top-p) sampling; temperature 0 means greedy for that row."""

    def __init__(self, temperature: torch.Tensor, top_p: torch.Tensor):
        self.temperature = temperature
        self.top_p = top_p
        self.greedy = temperature == 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scaled = scores / self.temperature.clamp(min=1e-5)[:, None]
        if bool((self.top_p < 1).any()):
            sorted_logits, sorted_index = torch.sort(scaled, descending=True, dim=-1)
            probs = sorted_logits.softmax(dim=-1)
            # Drop a token once the tokens ranked above it already cover top_p; the best one always stays.
            drop_sorted = (probs.cumsum(dim=-1) - probs) > self.top_p[:, None]
            drop = drop_sorted.scatter(1, sorted_index, drop_sorted)
            scaled = scaled.masked_fill(drop, float("-inf"))
        if bool(self.greedy.any()):
            best = torch.full_like(scores, float("-inf")).scatter(1, scores.argmax(dim=-1, keepdim=True), 0.0)
            scaled = torch.where(self.greedy[:, None], best, scaled)
        return scaled


class RowStopper(StoppingCriteria):
    """Feeds each step's new token to its row and reports which rows have finished."""

    def __init__(self, rows: Sequence[Row], flush: Callable[[], None]):
        self.rows = rows
        self.flush = flush
        self.done = [False] * len(rows)

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        for position, token_id in enumerate(input_ids[:, -1].tolist()):
            if not self.done[position]:
                self.done[position] = self.rows[position].step(token_id)
        self.flush()
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


class Outbox:
    """Events made on the generation thread, handed to the event loop once per decoding step.

    One wake-up of the loop per step, however many rows the batch has.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.pending: list[tuple[asyncio.Queue, Event]] = []

    def sink(self, queue: asyncio.Queue) -> Callable[[Event], None]:
        return lambda event: self.pending.append((queue, event))

    def flush(self) -> None:
        if self.pending:
            batch, self.pending = self.pending, []
            self.loop.call_soon_threadsafe(_deliver, batch)


def _deliver(batch: list[tuple[asyncio.Queue, Event]]) -> None:
    for queue, event in batch:
        queue.put_nowait(event)


class Engine:
    """Owns the model, the tokenizer and the batcher. ``state`` is loading, ready or failed."""

    def __init__(self, loader: Loader, metrics: ServeMetrics, *, max_batch: int, batch_window_s: float,
                 threads: Optional[int] = None, on_load_failure: Optional[Callable[[str], None]] = None):
        self._loader = loader
        self._on_load_failure = on_load_failure
        self.metrics = metrics
        self.max_batch = max_batch
        self.batch_window_s = batch_window_s
        self.state = "loading"
        self.error: Optional[str] = None
        self.model: Any = None
        self.tokenizer: Any = None
        self.eos_ids: frozenset[int] = frozenset()
        self.pad_id = 0
        self.max_positions: Optional[int] = None
        self._pending: "asyncio.Queue[Row]" = asyncio.Queue()
        self._outbox: Optional[Outbox] = None
        # One thread: batches run one after another, each using all of torch's intra-op threads. The
        # thread count is per calling thread under OpenMP, so it is set on the worker itself.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="codex-generate",
                                            initializer=torch.set_num_threads if threads else None,
                                            initargs=(threads,) if threads else ())
        self._tasks: list[asyncio.Task] = []
        # (rows, seconds) of the last batch: how many to expect back, and how long a straggler would wait.
        self._last_batch: tuple[int, float] = (1, 0.0)

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    async def start(self) -> None:
        """Load in the background; the batcher starts once the model is in."""
        self._outbox = Outbox(asyncio.get_running_loop())
        self._tasks.append(asyncio.get_running_loop().create_task(self._load_then_batch()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _load_then_batch(self) -> None:
        started = time.perf_counter()
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._load)
        except Exception as error:  # any load failure: surfaced on /readyz and ends the process
            self.state, self.error = "failed", f"{type(error).__name__}: {error}"
            log.error("model load failed: %s", self.error)
            if self._on_load_failure is not None:
                self._on_load_failure(self.error)
            return
        self.state = "ready"
        log.info("model loaded in %.1fs", time.perf_counter() - started)
        await self._batch_loop()

    def _load(self) -> None:
        model, tokenizer = self._loader()
        model.eval()
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        configured = inner.generation_config.eos_token_id if inner.generation_config is not None else None
        eos = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
        if tokenizer.eos_token_id is not None:
            eos.add(tokenizer.eos_token_id)
        self.eos_ids = frozenset(eos)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos, default=0)
        # A clean generation config: sampling is whatever each request asks for, not the checkpoint's defaults.
        inner.generation_config = GenerationConfig(eos_token_id=sorted(eos) or None, pad_token_id=self.pad_id)
        self.max_positions = getattr(inner.config, "max_position_embeddings", None)
        self.model, self.tokenizer = model, tokenizer
        self._generate([self._warmup_row()])

    def _warmup_row(self) -> Row:
        return Row(0, [self.pad_id], SamplingParams(max_tokens=2, temperature=0.0), sink=lambda event: None,
                   text=StopStringText(self.tokenizer, ()))

    def submit(self, prompts: Sequence[list[int]], params: SamplingParams, n: int = 1,
               stream: bool = True) -> tuple[list[Row], asyncio.Queue]:
        """Queue ``n`` rows per prompt; their events arrive on the returned queue, indexed prompt-major."""
        queue: "asyncio.Queue[Event]" = asyncio.Queue()
        sink = self._outbox.sink(queue)
        rows = [
            Row(index, list(prompt), params, sink, eos_ids=self.eos_ids, stream=stream,
                text=StopStringText(self.tokenizer, params.stop, context=prompt))
            for index, prompt in enumerate(p for p in prompts for _ in range(n))
        ]
        for row in rows:
            self._pending.put_nowait(row)
        return rows, queue

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [row for row in await self._collect_batch() if not row.cancelled]
            if batch:
                started = loop.time()
                await loop.run_in_executor(self._executor, self._generate, batch)
                self._last_batch = (len(batch), loop.time() - started)

    async def _collect_batch(self) -> list[Row]:
        """The first pending row plus those that follow it closely.

        Clients answered together come back a few milliseconds apart, so each arrival extends the
        wait by up to ``batch_window``. Until as many rows as last time are in, the batcher waits
        longer, up to a tenth of the last batch's run time: a straggler left out of a batch would
        otherwise wait for that whole run.
        """
        loop = asyncio.get_running_loop()
        batch = [await self._pending.get()]
        expected, last_seconds = self._last_batch
        started = loop.time()
        patience = max(10 * self.batch_window_s, 0.1 * last_seconds)
        while len(batch) < self.max_batch:
            if not self._pending.empty():
                batch.append(self._pending.get_nowait())
                continue
            elapsed = loop.time() - started
            if len(batch) < expected:
                wait = patience - elapsed
            else:
                wait = min(self.batch_window_s, 10 * self.batch_window_s - elapsed)
            if wait <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._pending.get(), wait))
            except asyncio.TimeoutError:
                break
        return batch

    def _generate(self, rows: list[Row]) -> None:
        """Run one batched generate (worker thread). Every row ends with Finished or Failed."""
        flush = self._outbox.flush if self._outbox is not None else (lambda: None)
        try:
            self.metrics.batch_size.observe(len(rows))
            self._generate_unchecked(rows, flush)
            for row in rows:
                row.finish(LENGTH)  # rows still open hit the batch's max_new_tokens
        except Exception as error:  # a genuine bug or out-of-memory: fail these rows, keep serving
            log.exception("generation failed for a batch of %d", len(rows))
            for row in rows:
                row.fail(f"generation failed: {type(error).__name__}")
        finally:
            flush()

    def _generate_unchecked(self, rows: list[Row], flush: Callable[[], None]) -> None:
        device = self.model.device
        width = max(len(row.prompt_ids) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for position, row in enumerate(rows):
            input_ids[position, width - len(row.prompt_ids):] = torch.tensor(row.prompt_ids)
            attention_mask[position, width - len(row.prompt_ids):] = 1
        sampled = [row for row in rows if not row.params.greedy]
        processors = LogitsProcessorList()
        if sampled:
            processors.append(RowSampling(
                torch.tensor([row.params.temperature for row in rows], device=device),
                torch.tensor([row.params.top_p for row in rows], device=device),
            ))
        config = GenerationConfig(
            max_new_tokens=max(row.params.max_tokens for row in rows),
            # top_k=0 turns off the library's default top-k of 50; greedy decoding must not be given it.
            do_sample=bool(sampled), temperature=1.0, top_k=0 if sampled else None, top_p=1.0,
            eos_token_id=sorted(self.eos_ids) or None, pad_token_id=self.pad_id,
        )
        with torch.inference_mode():
            self.model.generate(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), generation_config=config,
                logits_processor=processors, stopping_criteria=StoppingCriteriaList([RowStopper(rows, flush)]),
            )
