"""One generated sequence ("row" of a batch): its sampling settings, its text, and how it ends.

Runs on the generation thread. Each new token is decoded into a text delta that is
released only once it can no longer be part of a stop string; the deltas and the
final reason go to the request's queue on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

# Finish reasons as the OpenAI API spells them; "cancelled" never reaches a client.
STOP = "stop"
LENGTH = "length"
CANCELLED = "cancelled"


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class Delta:
    index: int
    text: str


@dataclass(frozen=True)
class Finished:
    index: int
    reason: str
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    index: int
    message: str


Event = Union[Delta, Finished, Failed]


# Prompt tokens kept as context when decoding the first generated ones (a sentencepiece decoder
# drops the leading space of a sequence's first token; with context it is not first).
CONTEXT_TOKENS = 6


class StopStringText:
    """Incremental detokenisation with stop strings held back until they can be ruled out.

    Each step decodes only a short window (the previous token or two plus the new ones), as
    vLLM's detokenizer does, so the cost per token does not grow with the completion.
    """

    def __init__(self, tokenizer: Any, stop: Sequence[str], context: Sequence[int] = ()):
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.token_ids: list[int] = list(context[-CONTEXT_TOKENS:])
        # token_ids[prefix:read] is already text; token_ids[read:] is not yet.
        self.prefix = 0
        self.read = len(self.token_ids)
        self.text = ""
        self.released = 0
        self.stopped = False

    def add(self, token_id: int) -> str:
        """Append one token; return the text that became safe to release."""
        self.token_ids.append(token_id)
        if not self._decode_new(final=False):
            return ""  # a multi-byte character is still incomplete
        cut = self._first_stop()
        if cut is not None:
            self.stopped = True
            return self._release(cut)
        return self._release(len(self.text) - self._partial_stop_suffix())

    def _decode_new(self, final: bool) -> bool:
        decode = self.tokenizer.decode
        before = decode(self.token_ids[self.prefix:self.read], skip_special_tokens=True)
        after = decode(self.token_ids[self.prefix:], skip_special_tokens=True)
        if len(after) <= len(before) or (after.endswith("\ufffd") and not final):
            return False
        self.text += after[len(before):]
        self.prefix, self.read = self.read, len(self.token_ids)
        return True

    def finish(self) -> str:
        """The text still held back, once the sequence ended without a stop string."""
        if self.stopped:
            return ""
        if self.read < len(self.token_ids):
            self._decode_new(final=True)  # an unfinished character decodes as U+FFFD
        cut = self._first_stop()
        return self._release(len(self.text) if cut is None else cut)

    def _release(self, end: int) -> str:
        if end <= self.released:
            return ""
        out, self.released = self.text[self.released:end], end
        return out

    def _first_stop(self) -> Optional[int]:
        hits = [i for i in (self.text.find(s, self.released) for s in self.stop) if i >= 0]
        return min(hits) if hits else None

    def _partial_stop_suffix(self) -> int:
        """Length of the longest text suffix that is a proper prefix of some stop string."""
        longest = 0
        for stop in self.stop:
            for size in range(min(len(stop) - 1, len(self.text) - self.released), longest, -1):
                if self.text.endswith(stop[:size]):
                    longest = size
                    break
        return longest


@dataclass
class Row:
    """A sequence in flight. ``step`` is called on the generation thread with each new token."""

    index: int
    prompt_ids: list[int]
    params: SamplingParams
    # Delivers events to the request; must be safe to call from the generation thread.
    sink: Callable[[Event], None]
    eos_ids: frozenset[int] = frozenset()
    text: Optional[StopStringText] = None
    # A streamed row sends each delta as it comes; otherwise the text goes out once, at the end,
    # sparing the event loop a wake-up per token.
    stream: bool = True
    cancelled: bool = False
    finished: bool = False
    generated: int = field(default=0)
    held: list[str] = field(default_factory=list)

    def emit(self, event: Event) -> None:
        self.sink(event)

    def send(self, text: str, final: bool = False) -> None:
        if not self.stream and not final:
            self.held.append(text)
            return
        text = "".join(self.held) + text
        self.held.clear()
        if text:
            self.emit(Delta(self.index, text))

    def step(self, token_id: int) -> bool:
        """Take one generated token; True once the row has finished."""
        if self.cancelled:
            return self.finish(CANCELLED)
        if token_id in self.eos_ids:
            return self.finish(STOP)
        self.generated += 1
        delta = self.text.add(token_id)
        if delta:
            self.send(delta)
        if self.text.stopped:
            return self.finish(STOP)
        if self.generated >= self.params.max_tokens:
            return self.finish(LENGTH)
        return False

    def finish(self, reason: str) -> bool:
        if self.finished:
            return True
        self.finished = True
        if reason != CANCELLED:
            self.send(self.text.finish(), final=True)
        self.emit(Finished(self.index, reason, self.generated))
        return True

    def fail(self, message: str) -> None:
        if not self.finished:
            self.finished = True
            self.emit(Failed(self.index, message))
