"""Auth and limits: every refusal is a 4xx (or 429) JSON error naming the field; nothing is a 5xx."""

from __future__ import annotations

import threading

import pytest

from codex_serve.config import load_config
from codex_serve.loading import model_loader
from serve_support import API_KEY, app_client, serve_args, wait_ready

PROTECTED = [
    ("POST", "/v1/completions", {"prompt": "x", "max_tokens": 1}),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 1}),
    ("POST", "/infer", {"prompt": "x", "max_tokens": 1}),
    ("GET", "/v1/models", None),
]


@pytest.mark.parametrize("method,path,body", PROTECTED, ids=[p for _, p, _ in PROTECTED])
@pytest.mark.parametrize("header", [None, "Bearer wrong-key", f"Basic {API_KEY}", "Bearer "],
                         ids=["missing", "wrong", "not-bearer", "empty"])
def test_protected_endpoints_need_the_api_key(adapter_client, method, path, body, header):
    headers = {"Authorization": header} if header else {}
    response = adapter_client.request(method, path, json=body, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["type"] == "authentication_error"
    assert response.json()["error"]["param"] == "Authorization"


@pytest.mark.parametrize("method,path,body", PROTECTED, ids=[p for _, p, _ in PROTECTED])
def test_the_right_key_is_let_in(adapter_client, auth, method, path, body):
    assert adapter_client.request(method, path, json=body, headers=auth).status_code == 200


def test_health_ready_metrics_and_schema_stay_open(adapter_client):
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert adapter_client.get(path).status_code == 200, path


def test_bad_body_without_a_key_is_401_not_400(adapter_client):
    assert adapter_client.post("/v1/completions", json={"prompt": 5}).status_code == 401


LONG = "word " * 400  # well over the 256 prompt tokens the test servers allow
CHAT = {"messages": [{"role": "user", "content": "hi"}]}
BAD_REQUESTS = [
    ("max_tokens over the cap", "/v1/completions", {"prompt": "x", "max_tokens": 65}, 400, "max_tokens"),
    ("max_completion_tokens over", "/v1/chat/completions", {**CHAT, "max_completion_tokens": 1000}, 400,
     "max_completion_tokens"),
    ("infer max_tokens over", "/infer", {"prompt": "x", "max_tokens": 10**9}, 400, "max_tokens"),
    ("prompt too long", "/v1/completions", {"prompt": LONG}, 400, "prompt"),
    ("one of the prompts too long", "/v1/completions", {"prompt": ["x", LONG]}, 400, "prompt"),
    ("messages too long", "/v1/chat/completions", {"messages": [{"role": "user", "content": LONG}]}, 400,
     "messages"),
    ("more generations than slots", "/v1/completions", {"prompt": ["a", "b", "c"], "n": 2}, 400, "n"),
    ("max_tokens zero", "/v1/completions", {"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ("max_tokens a string", "/v1/completions", {"prompt": "x", "max_tokens": "5"}, 400, "max_tokens"),
    ("temperature too high", "/v1/completions", {"prompt": "x", "temperature": 2.5}, 400, "temperature"),
    ("temperature a bool", "/v1/chat/completions", {**CHAT, "temperature": True}, 400, "temperature"),
    ("top_p zero", "/v1/completions", {"prompt": "x", "top_p": 0}, 400, "top_p"),
    ("n too big", "/v1/completions", {"prompt": "x", "n": 17}, 400, "n"),
    ("five stop strings", "/v1/completions", {"prompt": "x", "stop": list("abcde")}, 400, "stop"),
    ("empty stop string", "/v1/completions", {"prompt": "x", "stop": [""]}, 400, "stop[0]"),
    ("prompt missing", "/v1/completions", {"max_tokens": 1}, 400, "prompt"),
    ("prompt a number", "/v1/completions", {"prompt": 5}, 400, "prompt"),
    ("prompt list empty", "/v1/completions", {"prompt": []}, 400, "prompt"),
    ("no messages", "/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("unknown role", "/v1/chat/completions", {"messages": [{"role": "tool", "content": "x"}]}, 400,
     "messages[0].role"),
    ("bad content part", "/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image"}]}]},
     400, "messages[0].content[0].type"),
    ("body not an object", "/v1/completions", [1, 2], 400, "body"),
    ("another model", "/v1/completions", {"prompt": "x", "model": "gpt-4"}, 404, "model"),
]


@pytest.mark.parametrize("path,body,status,param", [case[1:] for case in BAD_REQUESTS],
                         ids=[case[0] for case in BAD_REQUESTS])
def test_bad_requests_get_a_4xx_naming_the_field(adapter_client, auth, path, body, status, param):
    response = adapter_client.post(path, json=body, headers=auth)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert error["message"].startswith(param)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("content,param", [
    (b'{"prompt": "x", "temperature": NaN}', "temperature"),
    (b'{"prompt": "x", ', "body"),
    (b"", "body"),
], ids=["nan", "truncated-json", "empty"])
def test_malformed_json_is_a_400(adapter_client, auth, content, param):
    response = adapter_client.post("/v1/completions", content=content,
                                   headers={**auth, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_oversized_bodies_get_413_with_or_without_content_length(adapter_client, auth):
    big = b'{"prompt": "' + b"x" * 70_000 + b'"}'
    declared = adapter_client.post("/v1/completions", content=big,
                                   headers={**auth, "Content-Type": "application/json"})
    chunked = adapter_client.post("/v1/completions", content=iter([big[:40_000], big[40_000:]]),
                                  headers={**auth, "Content-Type": "application/json"})
    for response in (declared, chunked):
        assert response.status_code == 413
        assert response.json()["error"]["param"] == "body"
    assert 'codex_serve_rejected_requests_total{reason="body_too_large"}' in adapter_client.get("/metrics").text


def test_unknown_paths_and_methods_are_json_4xx(adapter_client, auth):
    assert adapter_client.get("/v2/nothing", headers=auth).status_code == 404
    response = adapter_client.delete("/v1/completions", headers=auth)
    assert response.status_code == 405 and "POST" in response.headers["allow"]
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_no_api_key_configured_means_open(base_model_dir):
    with app_client(serve_args(base_model_dir, None), api_key=None) as client:
        assert client.post("/infer", json={"prompt": "x", "max_tokens": 1}).status_code == 200


def test_port_answers_while_loading_and_generation_waits_for_readiness(base_model_dir, auth):
    args = serve_args(base_model_dir, None)
    gate = threading.Event()
    load = model_loader(load_config(args, environ={}))

    def gated_load():
        assert gate.wait(timeout=60)
        return load()

    with app_client(args, loader=gated_load, wait=False) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "loading"
        busy = client.post("/infer", json={"prompt": "x"}, headers=auth)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "5"
        gate.set()
        wait_ready(client.get)
        assert client.post("/infer", json={"prompt": "x", "max_tokens": 1}, headers=auth).status_code == 200
