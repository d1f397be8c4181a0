"""Request and response bodies: the OpenAI completions and chat subset, and the simple /infer form.

Unknown request fields are ignored, as OpenAI clients send more than this server uses.
Limits that depend on the server's configuration (max_tokens, prompt tokens) are checked
in the handlers, which name the field in their 400.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

MAX_STOP = 4
MAX_PROMPTS = 16
MAX_N = 16
MAX_MESSAGES = 256

StopString = Annotated[str, Field(min_length=1, max_length=256)]


class _Request(BaseModel):
    # Strict: JSON true is not a temperature and "5" is not max_tokens.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, strict=True)


class SamplingFields(_Request):
    model: Optional[str] = Field(None, max_length=256, description="Model id; must be the served model's id.")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    n: int = Field(1, ge=1, le=MAX_N, description="Completions per prompt.")
    stop: Union[StopString, Annotated[list[StopString], Field(max_length=MAX_STOP)], None] = Field(
        None, description="Up to 4 strings that end a completion; they are not included in it."
    )
    stream: bool = Field(False, description="Send the completion as server-sent events.")

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class CompletionRequest(SamplingFields):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"prompt": "def add(a, b):", "max_tokens": 16, "temperature": 0},
        {"prompt": ["# reverse a string\n", "# sum a list\n"], "max_tokens": 8, "n": 2, "stop": ["\n\n"]},
    ]})

    prompt: Union[str, Annotated[list[str], Field(min_length=1, max_length=MAX_PROMPTS)]] = Field(
        description="A prompt, or a list of prompts."
    )
    max_tokens: Optional[int] = Field(None, ge=1, description="Tokens to generate at most. Defaults to 16.")

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart]]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class ChatRequest(SamplingFields):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"messages": [{"role": "user", "content": "Write a Python function that adds two numbers."}],
         "max_tokens": 32, "temperature": 0.2, "top_p": 0.9, "stream": True},
    ]})

    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: Optional[int] = Field(None, ge=1, description="Tokens to generate at most. Defaults to the cap.")
    max_completion_tokens: Optional[int] = Field(None, ge=1, description="Newer name of max_tokens; wins if set.")


class InferRequest(_Request):
    model_config = ConfigDict(json_schema_extra={"examples": [{"prompt": "def add(a, b):", "max_tokens": 16}]})

    prompt: str = Field(description="The prompt; the completion is greedy.")
    max_tokens: Optional[int] = Field(None, ge=1, description="Tokens to generate at most. Defaults to the cap.")


class InferResponse(BaseModel):
    completion: str


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


FinishReason = Literal["stop", "length"]


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Optional[FinishReason]
    logprobs: None = None


class TextCompletion(BaseModel):
    """What a /v1/completions answer and each of its stream events have in common."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str


class CompletionResponse(TextCompletion):
    choices: list[CompletionChoice]
    usage: Optional[Usage] = None


class CompletionChunkChoice(CompletionChoice):
    finish_reason: Optional[FinishReason] = None


class CompletionChunk(TextCompletion):
    """One server-sent event of a streamed /v1/completions answer."""

    choices: list[CompletionChunkChoice]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Optional[FinishReason]


class ChatResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Optional[Literal["assistant"]] = None
    content: Optional[str] = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    finish_reason: Optional[FinishReason] = None


class ChatChunk(BaseModel):
    """One server-sent event of a streamed /v1/chat/completions answer."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "codex-operator"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: str
    detail: Optional[str] = None


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
