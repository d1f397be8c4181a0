"""data.py and sources.py: formats, line-numbered errors, empty documents, deterministic split, hashing."""

from __future__ import annotations

import hashlib
import json

import pytest

from codex_api.common import ConfigMapKeyRef, DataSource, PvcPath
from codex_api.training_run import Dataset
from codex_trainer.data import load_tasks, prepare_dataset, split
from codex_trainer.errors import InvalidDataError, InvalidSpecError


def _configmap(tmp_path, key: str, lines: list) -> DataSource:
    path = tmp_path / "configmap" / "data" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return DataSource(config_map=ConfigMapKeyRef(name="data", key=key))


@pytest.mark.parametrize("data_format,record,expected", [
    ("prompt-completion", {"prompt": "p", "completion": "c", "extra": 1}, {"prompt": "p", "completion": "c"}),
    ("chat", {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
     {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}),
    ("preference", {"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "a", "rejected": "b"}),
    ("text", {"text": "def f(): pass"}, {"text": "def f(): pass"}),
], ids=["prompt-completion", "chat", "preference", "text"])
def test_each_format_yields_trl_columns(tmp_path, data_format, record, expected):
    source = _configmap(tmp_path, "d.jsonl", [record, record])
    data = prepare_dataset(Dataset(source=source, format=data_format), tmp_path)
    assert data.train + data.validation == [expected, expected]


@pytest.mark.parametrize("data_format,bad_line,message", [
    ("prompt-completion", '{"prompt": "p", "completion": ', "line 3: not valid JSON (Expecting value at column 31)"),
    ("prompt-completion", {"prompt": "p"}, "line 3: field 'completion' is missing (format prompt-completion needs "
                                           "prompt, completion)"),
    ("prompt-completion", {"prompt": "p", "completion": 7}, "line 3: field 'completion' must be a string, got int"),
    ("prompt-completion", [1, 2], "line 3: expected a JSON object, got list"),
    ("chat", {"messages": [{"role": "robot", "content": "x"}]}, "line 3: messages[0].role must be one of system, "
                                                                "user, assistant, tool, got 'robot'"),
    ("preference", {"prompt": "p", "chosen": "a"}, "line 3: field 'rejected' is missing"),
], ids=["bad-json", "missing-field", "wrong-type", "not-object", "bad-role", "preference-missing"])
def test_malformed_record_names_file_and_line(tmp_path, data_format, bad_line, message):
    good = {"prompt-completion": {"prompt": "p", "completion": "c"}, "preference": {"prompt": "p", "chosen": "a",
            "rejected": "b"}, "chat": {"messages": [{"role": "assistant", "content": "x"}]}}[data_format]
    source = _configmap(tmp_path, "pairs.jsonl", [good, "", bad_line])
    with pytest.raises(InvalidDataError) as caught:
        prepare_dataset(Dataset(source=source, format=data_format), tmp_path)
    assert str(caught.value).startswith("spec.dataset: pairs.jsonl in configMap data ")
    assert message in str(caught.value)


def test_empty_documents_are_removed(tmp_path):
    records = [{"prompt": "a", "completion": "x"}, {"prompt": "b", "completion": "  \n"},
               {"prompt": "c", "completion": "y"}, {"prompt": "d", "completion": ""}]
    data = prepare_dataset(Dataset(source=_configmap(tmp_path, "d.jsonl", records)), tmp_path)
    assert (data.records_read, data.empty_removed, len(data.train) + len(data.validation)) == (4, 2, 2)


def test_nothing_left_is_a_clear_error(tmp_path):
    source = _configmap(tmp_path, "d.jsonl", [{"text": ""}, {"text": "   "}])
    with pytest.raises(InvalidDataError, match=r"^spec.dataset: no non-empty text records in d.jsonl in configMap "
                                               r"data \(2 read, 2 empty removed\)$"):
        prepare_dataset(Dataset(source=source, format="text"), tmp_path)


def test_split_is_deterministic_by_seed_and_hash_covers_the_bytes(tmp_path):
    records = [{"prompt": str(i), "completion": "c"} for i in range(40)]
    source = _configmap(tmp_path, "d.jsonl", records)
    first = prepare_dataset(Dataset(source=source, validation_split=0.25, seed=1), tmp_path)
    again = prepare_dataset(Dataset(source=source, validation_split=0.25, seed=1), tmp_path)
    other = prepare_dataset(Dataset(source=source, validation_split=0.25, seed=2), tmp_path)
    assert first.validation == again.validation and len(first.validation) == 10
    assert first.validation != other.validation
    assert sorted(r["prompt"] for r in first.train + first.validation) == sorted(str(i) for i in range(40))
    raw = (tmp_path / "configmap" / "data" / "d.jsonl").read_bytes()
    assert first.sha256 == hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize("count,fraction,expected", [(1, 0.1, (1, 0)), (2, 0.1, (1, 1)), (10, 0.1, (9, 1)),
                                                     (48, 0.1, (43, 5))], ids=["one", "two", "ten", "sample"])
def test_split_sizes(count, fraction, expected):
    train, validation = split([{"i": i} for i in range(count)], fraction, 1337)
    assert (len(train), len(validation)) == expected


def test_max_records_caps_reading(tmp_path):
    source = _configmap(tmp_path, "d.jsonl", [{"text": str(i)} for i in range(10)] + ["not json"])
    data = prepare_dataset(Dataset(source=source, format="text", max_records=5), tmp_path)
    assert data.records_read == 5


def test_pvc_directory_and_missing_sources(tmp_path):
    directory = tmp_path / "pvc" / "claim" / "set"
    directory.mkdir(parents=True)
    (directory / "b.jsonl").write_text(json.dumps({"text": "b"}) + "\n")
    (directory / "a.jsonl").write_text(json.dumps({"text": "a"}) + "\n")
    (directory / "notes.md").write_text("ignored")
    data = prepare_dataset(Dataset(source=DataSource(pvc=PvcPath(claim_name="claim", path="/set")), format="text",
                                   validation_split=0.4), tmp_path)
    assert data.files == ["/set/a.jsonl on claim claim", "/set/b.jsonl on claim claim"]
    with pytest.raises(InvalidSpecError, match=r"^spec.dataset.source.pvc: '/nope' does not exist on claim claim$"):
        prepare_dataset(Dataset(source=DataSource(pvc=PvcPath(claim_name="claim", path="/nope"))), tmp_path)
    with pytest.raises(InvalidSpecError, match=r"^spec.dataset.source.configMap: key 'k' not found in ConfigMap 'x'$"):
        prepare_dataset(Dataset(source=DataSource(config_map=ConfigMapKeyRef(name="x", key="k"))), tmp_path)


def test_hub_dataset_through_the_fake_hub(tmp_path, fake_hub):
    from fakehub import seed_repo

    lines = b"".join(json.dumps({"prompt": str(i), "completion": "c"}).encode() + b"\n" for i in range(4))
    seed_repo(fake_hub, "org/pairs", {"data/train.jsonl": lines, "README.md": b"# data"}, repo_type="dataset")
    data = prepare_dataset(Dataset(source=DataSource(hub="org/pairs")), tmp_path)
    assert len(data.train) + len(data.validation) == 4
    assert data.sha256 == hashlib.sha256(lines).hexdigest()


def test_tasks_are_validated(tmp_path, repo_root):
    tasks_file = repo_root / "examples" / "data" / "eval_tasks.jsonl"
    (tmp_path / "configmap" / "d").mkdir(parents=True)
    (tmp_path / "configmap" / "d" / "tasks.jsonl").write_bytes(tasks_file.read_bytes())
    tasks, digest = load_tasks(DataSource(config_map=ConfigMapKeyRef(name="d", key="tasks.jsonl")), tmp_path)
    assert [t.entry_point for t in tasks][:2] == ["add_three", "double"]
    source = _configmap(tmp_path, "t.jsonl", [{"task_id": "x", "prompt": "def f():\n", "test": "", "entry_point": "f"}])
    with pytest.raises(InvalidDataError, match=r"^spec.evaluation.tasks: t.jsonl in configMap data line 1: field "
                                               r"'test' must be a non-empty string"):
        load_tasks(source, tmp_path)


def test_url_source_and_its_errors(fake_hub):
    from fakehub import seed_repo

    from codex_trainer.errors import TransientError
    from codex_trainer.sources import _fetch_url

    seed_repo(fake_hub, "org/files", {"pairs.jsonl": b'{"text": "a"}\n'})
    url = f"{fake_hub.url}/org/files/resolve/main/pairs.jsonl"
    fetched = _fetch_url(url + "?signature=secret", "spec.dataset.source")
    assert (fetched.name, fetched.data, fetched.suffix) == (url, b'{"text": "a"}\n', ".jsonl")
    with pytest.raises(InvalidSpecError, match=r"^spec.dataset.source.url: .*/missing.jsonl answered HTTP 404$"):
        _fetch_url(f"{fake_hub.url}/org/files/resolve/main/missing.jsonl", "spec.dataset.source")
    fake_hub.fail("pairs.jsonl", 503)
    with pytest.raises(TransientError, match=r"answered HTTP 503$"):
        _fetch_url(url + "?signature=secret", "spec.dataset.source")


def test_every_dataset_source_field_has_a_reader():
    from codex_api.common import DataSource
    from codex_trainer.sources import READERS

    options = {"hub_revision"}  # qualifies hub; not a source of its own
    assert set(READERS) == set(DataSource.model_fields) - options
