"""Prepare the data: parse records with their line numbers, validate them for the format, drop empty
documents, split train/validation deterministically by seed, and hash the bytes read.

The records come out in the columns TRL expects for each format:

========================  ==============================
spec.dataset.format       columns
========================  ==============================
prompt-completion         prompt, completion
chat                      messages
preference                prompt, chosen, rejected
text                      text
========================  ==============================
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from codex_api.common import DataSource
from codex_api.training_run import Dataset as DatasetSpec

from .errors import InvalidDataError
from .sources import SourceFile, read_source

STRING_FIELDS = {
    "prompt-completion": ("prompt", "completion"),
    "preference": ("prompt", "chosen", "rejected"),
    "text": ("text",),
}
# The fields that make a document: when all of them are blank, the record is dropped.
CONTENT_FIELDS = {"prompt-completion": ("completion",), "preference": ("chosen", "rejected"), "text": ("text",)}
CHAT_ROLES = ("system", "user", "assistant", "tool")
TASK_FIELDS = ("task_id", "prompt", "test", "entry_point")


@dataclass
class PreparedData:
    """The split records, ready for TRL, and what the lineage and report need to know about them."""

    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    sha256: str
    records_read: int
    empty_removed: int
    files: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"train": len(self.train), "validation": len(self.validation), "read": self.records_read,
                "empty_removed": self.empty_removed, "sha256": self.sha256, "files": self.files}


def prepare_dataset(spec: DatasetSpec, data_root: Path, token: Optional[str] = None) -> PreparedData:
    """Read, validate, filter and split the training data.

    Raises:
        InvalidDataError: a record is malformed (the message names the file and line), or no
            non-empty record is left.
    """
    files = read_source(spec.source, "spec.dataset.source", data_root, token)
    digest = hashlib.sha256()
    records: list[dict[str, Any]] = []
    empty = read = 0
    for source_file in files:
        digest.update(source_file.data)
        for line, raw in iter_records(source_file):
            if spec.max_records is not None and read >= spec.max_records:
                break
            read += 1
            record = validate_record(raw, spec.format, f"{source_file.name} line {line}")
            if record is None:
                empty += 1
            else:
                records.append(record)
    if not records:
        raise InvalidDataError(
            f"spec.dataset: no non-empty {spec.format} records in {', '.join(f.name for f in files)} "
            f"({read} read, {empty} empty removed)"
        )
    train, validation = split(records, spec.validation_split, spec.seed)
    return PreparedData(train, validation, digest.hexdigest(), read, empty, [f.name for f in files])


def split(records: list[dict[str, Any]], fraction: float, seed: int) -> tuple[list, list]:
    """Shuffle with ``seed`` and hold out ``fraction`` (at least one record when there are two or more)."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    held_out = min(max(round(len(records) * fraction), 1), len(records) - 1) if len(records) > 1 else 0
    validation = sorted(order[:held_out])
    train = sorted(order[held_out:])
    return [records[i] for i in train], [records[i] for i in validation]


def iter_records(source_file: SourceFile, field: str = "spec.dataset") -> Iterator[tuple[int, Any]]:
    """``(line, parsed JSON)`` for each non-blank line (or Parquet row, or element of a JSON array)."""
    if source_file.suffix == ".parquet":
        import pyarrow.parquet as pq

        for row, record in enumerate(pq.read_table(io.BytesIO(source_file.data)).to_pylist(), start=1):
            yield row, record
        return
    try:
        text = source_file.data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidDataError(f"{field}: {source_file.name}: not UTF-8 text (byte {error.start})") from None
    if source_file.suffix == ".json" and text.lstrip().startswith("["):
        try:
            yield from enumerate(json.loads(text), start=1)
        except json.JSONDecodeError as error:
            raise InvalidDataError(f"{field}: {source_file.name} line {error.lineno}: not valid JSON "
                                   f"({error.msg})") from None
        return
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            yield line, json.loads(raw)
        except json.JSONDecodeError as error:
            raise InvalidDataError(f"{field}: {source_file.name} line {line}: not valid JSON "
                                   f"({error.msg} at column {error.colno})") from None


def validate_record(raw: Any, data_format: str, where: str) -> Optional[dict[str, Any]]:
    """The record in TRL's columns, or None when it is an empty document."""
    if not isinstance(raw, dict):
        raise InvalidDataError(f"spec.dataset: {where}: expected a JSON object, got {type(raw).__name__}")
    if data_format == "chat":
        return _validate_chat(raw, where)
    names = STRING_FIELDS[data_format]
    for name in names:
        if name not in raw:
            raise InvalidDataError(f"spec.dataset: {where}: field {name!r} is missing "
                                   f"(format {data_format} needs {', '.join(names)})")
        if not isinstance(raw[name], str):
            raise InvalidDataError(f"spec.dataset: {where}: field {name!r} must be a string, "
                                   f"got {type(raw[name]).__name__}")
    if all(not raw[name].strip() for name in CONTENT_FIELDS[data_format]):
        return None
    return {name: raw[name] for name in names}


def _validate_chat(raw: dict[str, Any], where: str) -> Optional[dict[str, Any]]:
    messages = raw.get("messages")
    if not isinstance(messages, list):
        raise InvalidDataError(f"spec.dataset: {where}: field 'messages' must be a list of {{role, content}}")
    clean = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise InvalidDataError(f"spec.dataset: {where}: messages[{index}] needs a string 'content'")
        if message.get("role") not in CHAT_ROLES:
            raise InvalidDataError(f"spec.dataset: {where}: messages[{index}].role must be one of "
                                   f"{', '.join(CHAT_ROLES)}, got {message.get('role')!r}")
        clean.append({"role": message["role"], "content": message["content"]})
    if not any(m["role"] == "assistant" and m["content"].strip() for m in clean):
        return None
    return {"messages": clean}


@dataclass(frozen=True)
class Task:
    """A HumanEval-format task."""

    task_id: str
    prompt: str
    test: str
    entry_point: str


def load_tasks(source: DataSource, data_root: Path, token: Optional[str] = None) -> tuple[list[Task], str]:
    """The evaluation tasks and the sha256 of their bytes.

    Raises:
        InvalidDataError: a task misses one of task_id, prompt, test, entry_point.
    """
    files = read_source(source, "spec.evaluation.tasks", data_root, token)
    digest = hashlib.sha256()
    tasks = []
    for source_file in files:
        digest.update(source_file.data)
        for line, raw in iter_records(source_file, "spec.evaluation.tasks"):
            where = f"{source_file.name} line {line}"
            if not isinstance(raw, dict):
                raise InvalidDataError(f"spec.evaluation.tasks: {where}: expected a JSON object")
            for name in TASK_FIELDS:
                if not isinstance(raw.get(name), str) or not raw[name].strip():
                    raise InvalidDataError(f"spec.evaluation.tasks: {where}: field {name!r} must be a non-empty "
                                           f"string (HumanEval format: {', '.join(TASK_FIELDS)})")
            tasks.append(Task(*(raw[name] for name in TASK_FIELDS)))
    if not tasks:
        raise InvalidDataError(f"spec.evaluation.tasks: no tasks in {', '.join(f.name for f in files)}")
    return tasks, digest.hexdigest()
