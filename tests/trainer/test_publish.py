"""publish.py against the fake Hub: what arrives, the commit SHA, retries, refused tokens."""

from __future__ import annotations

import logging

import pytest
from fakehub.server import TOKEN

from codex_api.training_run import HubDestination
from codex_trainer.errors import InvalidSpecError, TransientError
from codex_trainer.publish import push_folder

FILES = {"adapter_config.json": b'{"r": 8}', "adapter_model.safetensors": b"weights", "README.md": b"# card",
         "tokenizer.json": b"{}", "results.json": b"{}"}


@pytest.fixture
def folder(tmp_path):
    for name, data in FILES.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


def hub(**overrides) -> HubDestination:
    return HubDestination.model_validate({"repoId": "codex-tester/adapter", "tokenSecretRef": {"name": "hf"},
                                          **overrides})


def test_push_creates_the_repo_and_returns_the_commit(fake_hub, folder):
    sha = push_folder(folder, hub(), TOKEN, "codex-operator: demo", endpoint=fake_hub.url, base_delay=0)
    repo = fake_hub.repo("codex-tester/adapter")
    assert repo.private is True
    assert repo.branches["main"][-1][0] == sha and len(sha) == 40
    assert fake_hub.files("codex-tester/adapter") == FILES


def test_push_to_a_branch(fake_hub, folder):
    sha = push_folder(folder, hub(branch="candidate", private=False), TOKEN, "m", endpoint=fake_hub.url, base_delay=0)
    assert fake_hub.repo("codex-tester/adapter").branches["candidate"][-1][0] == sha
    assert fake_hub.repo("codex-tester/adapter").private is False


def test_503_is_retried_with_backoff(fake_hub, folder, caplog):
    # create_repo is retried by push_folder; the commit call by huggingface_hub's own backoff.
    fake_hub.fail("/api/repos/create", 503, times=2)
    fake_hub.fail("/commit/main", 503, times=1)
    with caplog.at_level(logging.INFO):
        sha = push_folder(folder, hub(), TOKEN, "m", endpoint=fake_hub.url, base_delay=0)
    posts = [path for method, path in fake_hub.requests if method == "POST"]
    assert sum(1 for p in posts if p == "/api/repos/create") == 3
    assert sum(1 for p in posts if "/commit/" in p) == 2
    assert fake_hub.files("codex-tester/adapter", sha) == FILES
    retries = [r.getMessage() for r in caplog.records if '"event": "retry"' in r.getMessage()]
    assert len(retries) == 2 and '"status": 503' in retries[0] and '"what": "create_repo"' in retries[0]


def test_a_hub_that_stays_down_is_transient(fake_hub, folder):
    fake_hub.fail("/api/repos/create", 503, times=99)
    with pytest.raises(TransientError, match=r"^spec.output.hub.repoId: 'codex-tester/adapter' at revision 'main': "
                                             r"Hub unavailable .*HTTP 503.*gave up after retries"):
        push_folder(folder, hub(), TOKEN, "m", endpoint=fake_hub.url, base_delay=0)
    assert sum(1 for _, path in fake_hub.requests if path == "/api/repos/create") == 5


def test_a_refused_token_is_not_retried_and_not_shown(fake_hub, folder, caplog):
    wrong = "hf_wrongtoken0123456789abcdefghijk"
    with caplog.at_level(logging.DEBUG), pytest.raises(InvalidSpecError) as caught:
        push_folder(folder, hub(), wrong, "m", endpoint=fake_hub.url, base_delay=0)
    assert str(caught.value) == ("spec.output.hub.repoId: 'codex-tester/adapter' at revision 'main': "
                                 "the Hub refused the token (HTTP 401)")
    assert caught.value.__cause__ is None and caught.value.__context__ is not None
    assert wrong not in caplog.text and wrong not in str(caught.value)
    assert sum(1 for _, path in fake_hub.requests if path == "/api/repos/create") == 1
