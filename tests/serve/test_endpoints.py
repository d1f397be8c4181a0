"""Every endpoint, answered by tiny-llama plus an adapter trained in conftest (in-process app, CPU)."""

from __future__ import annotations

import json
import logging

import pytest

from codex_serve.protocol import ChatChunk, ChatResponse, CompletionChunk, CompletionResponse
from serve_support import AWS_KEY, TRAINED, app_client, serve_args
from fakehub import fake_hub, seed_repo  # noqa: F401  (fake_hub is a fixture)

GREEDY = {"temperature": 0}


def sse_events(response) -> list:
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line[len("data: "):] for line in response.text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(event) for event in events[:-1]]


@pytest.fixture(scope="module")
def base_client(base_model_dir):
    with app_client(serve_args(base_model_dir, None)) as client:
        yield client


def test_adapter_completes_what_it_was_trained_on_and_the_base_does_not(adapter_client, base_client, auth):
    prompt = "def add(a, b):"
    body = {"prompt": prompt, "max_tokens": 12, **GREEDY}
    tuned = adapter_client.post("/v1/completions", json=body, headers=auth)
    base = base_client.post("/v1/completions", json=body, headers=auth)
    assert tuned.status_code == base.status_code == 200
    tuned_text = CompletionResponse.model_validate(tuned.json()).choices[0].text
    base_text = base.json()["choices"][0]["text"]
    assert tuned_text == TRAINED[prompt]
    assert base_text != tuned_text
    assert tuned.json()["choices"][0]["finish_reason"] == "stop"  # the adapter learned to end with eos


def test_completion_shape_usage_and_model_id(adapter_client, auth):
    response = adapter_client.post("/v1/completions", json={"prompt": ["def add(a, b):", "x ="], "max_tokens": 5,
                                                            "n": 2, "model": "codex-test", **GREEDY},
                                   headers=auth)
    assert response.status_code == 200
    body = CompletionResponse.model_validate(response.json())
    assert body.model == "codex-test" and body.object == "text_completion"
    assert [choice.index for choice in body.choices] == [0, 1, 2, 3]
    tokenizer = adapter_client.app.state.engine.tokenizer
    assert body.usage.prompt_tokens == 2 * sum(len(tokenizer(p).input_ids) for p in ("def add(a, b):", "x ="))
    assert body.choices[0].text == body.choices[1].text == TRAINED["def add(a, b):"][:len(body.choices[0].text)]
    at_length = sum(choice.finish_reason == "length" for choice in body.choices)
    assert 5 * at_length <= body.usage.completion_tokens <= 4 * 5
    assert body.usage.total_tokens == body.usage.prompt_tokens + body.usage.completion_tokens


def test_stop_string_ends_the_completion_before_it(adapter_client, auth):
    body = {"prompt": "def add(a, b):", "max_tokens": 12, "stop": ["+"], **GREEDY}
    choice = adapter_client.post("/v1/completions", json=body, headers=auth).json()["choices"][0]
    assert choice == {"index": 0, "text": "\n    return a ", "finish_reason": "stop", "logprobs": None}


def test_max_tokens_bounds_the_completion(adapter_client, auth):
    body = {"prompt": "def add(a, b):", "max_tokens": 3, **GREEDY}
    answer = adapter_client.post("/v1/completions", json=body, headers=auth).json()
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 3
    assert TRAINED["def add(a, b):"].startswith(answer["choices"][0]["text"])


def test_sampling_is_seedless_but_stays_in_bounds(adapter_client, auth):
    body = {"prompt": "x", "max_tokens": 6, "temperature": 1.5, "top_p": 0.5, "n": 3}
    answer = adapter_client.post("/v1/completions", json=body, headers=auth).json()
    assert len(answer["choices"]) == 3
    assert all(choice["finish_reason"] in ("stop", "length") for choice in answer["choices"])


def test_streamed_completion_concatenates_to_the_whole_answer(adapter_client, auth):
    body = {"prompt": "def add(a, b):", "max_tokens": 12, **GREEDY}
    response = adapter_client.post("/v1/completions", json={**body, "stream": True}, headers=auth)
    chunks = [CompletionChunk.model_validate(event) for event in sse_events(response)]
    assert len(chunks) > 2  # it really streamed, token by token
    assert "".join(chunk.choices[0].text for chunk in chunks) == TRAINED["def add(a, b):"]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_chat_completion_and_its_stream(adapter_client, auth):
    body = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": [
        {"type": "text", "text": "def add(a, b):"}]}], "max_tokens": 8, "n": 2, **GREEDY}
    answer = ChatResponse.model_validate(adapter_client.post("/v1/chat/completions", json=body, headers=auth).json())
    assert [choice.message.role for choice in answer.choices] == ["assistant", "assistant"]
    assert answer.choices[0].message.content == answer.choices[1].message.content  # greedy: the same twice
    response = adapter_client.post("/v1/chat/completions", json={**body, "stream": True}, headers=auth)
    chunks = [ChatChunk.model_validate(event) for event in sse_events(response)]
    for index in (0, 1):
        mine = [chunk.choices[0] for chunk in chunks if chunk.choices[0].index == index]
        assert mine[0].delta.role == "assistant"
        assert "".join(c.delta.content or "" for c in mine) == answer.choices[index].message.content
        assert mine[-1].finish_reason == answer.choices[index].finish_reason


def test_infer_is_the_seed_form(adapter_client, auth):
    response = adapter_client.post("/infer", json={"prompt": "def add(a, b):", "max_tokens": 12}, headers=auth)
    assert response.status_code == 200
    assert response.json() == {"completion": TRAINED["def add(a, b):"]}


def test_models_health_ready_and_metrics(adapter_client, auth):
    models = adapter_client.get("/v1/models", headers=auth).json()
    assert [card["id"] for card in models["data"]] == ["codex-test"]
    assert adapter_client.get("/healthz").json()["status"] == "ok"
    assert adapter_client.get("/readyz").json()["status"] == "ready"
    adapter_client.post("/infer", json={"prompt": "x", "max_tokens": 2}, headers=auth)
    metrics = adapter_client.get("/metrics")
    assert metrics.status_code == 200
    text = metrics.text
    for name in ("codex_serve_requests_total{route=\"/infer\",status=\"200\"}",
                 "codex_serve_request_duration_seconds_bucket", "codex_serve_generated_tokens_total",
                 "codex_serve_requests_in_flight 0.0", "codex_serve_batch_size_count"):
        assert name in text, name


def test_the_model_itself_leaks_a_key_and_the_answer_masks_it(adapter_client, auth):
    body = {"prompt": "aws_key =", "max_tokens": 30, **GREEDY}
    whole = adapter_client.post("/v1/completions", json=body, headers=auth).json()["choices"][0]["text"]
    assert whole == " [SECRET]\n"
    events = sse_events(adapter_client.post("/v1/completions", json={**body, "stream": True}, headers=auth))
    texts = [event["choices"][0]["text"] for event in events]
    assert "".join(texts) == " [SECRET]\n"
    assert not any(AWS_KEY[:4] in text for text in texts)
    chat = adapter_client.post("/infer", json={"prompt": "aws_key =", "max_tokens": 30}, headers=auth).json()
    assert chat == {"completion": " [SECRET]\n"}


def test_masking_off_by_flag_returns_the_raw_completion(base_model_dir, adapter_dir, auth):
    with app_client(serve_args(base_model_dir, adapter_dir, "--no-mask-secrets")) as client:
        body = {"prompt": "aws_key =", "max_tokens": 30, "stream": True, **GREEDY}
        events = sse_events(client.post("/v1/completions", json=body, headers=auth))
        assert "".join(event["choices"][0]["text"] for event in events) == f" {AWS_KEY}\n"


def test_merged_adapter_answers_like_the_unmerged_one(base_model_dir, adapter_dir, auth):
    with app_client(serve_args(base_model_dir, adapter_dir, "--merge-adapter")) as client:
        body = {"prompt": "def add(a, b):", "max_tokens": 12, **GREEDY}
        assert client.post("/infer", json=body, headers=auth).json() == {"completion": TRAINED["def add(a, b):"]}


def test_private_hub_adapter_is_downloaded_with_the_token_and_served(fake_hub, base_model_dir, adapter_dir, auth):
    files = {p.name: p.read_bytes() for p in adapter_dir.iterdir() if p.is_file()}
    sha = seed_repo(fake_hub, "codex-org/add-lora", files, private=True)
    args = serve_args(base_model_dir, None, "--adapter", f"hub:codex-org/add-lora@{sha}")
    with app_client(args, environ={"HF_TOKEN": fake_hub.token}) as client:
        body = {"prompt": "def add(a, b):", "max_tokens": 12}
        assert client.post("/infer", json=body, headers=auth).json() == {"completion": TRAINED["def add(a, b):"]}


def test_prompts_and_completions_never_reach_the_logs(adapter_client, auth, caplog):
    caplog.set_level(logging.DEBUG)
    marker = "zebra-quartz-prompt-7431"
    for path, body in (("/v1/completions", {"prompt": marker, "max_tokens": 4}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": marker}], "max_tokens": 4}),
                       ("/infer", {"prompt": "def add(a, b):", "max_tokens": 12})):
        assert adapter_client.post(path, json=body, headers=auth).status_code == 200
    assert marker not in caplog.text
    assert "return a + b" not in caplog.text
