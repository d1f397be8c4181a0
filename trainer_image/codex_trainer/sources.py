"""Read the files behind a DataSource: a mounted ConfigMap key, a PVC file or directory, an https URL,
or a Hub dataset repo. Each file comes back with a name fit for an error message."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Optional

from codex_api import paths
from codex_api.common import DataSource

from .errors import InvalidDataError, InvalidSpecError, TransientError
from .hub_errors import RETRYABLE_STATUS, hub_error

DATA_SUFFIXES = (".jsonl", ".json", ".parquet")
URL_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class SourceFile:
    """One file's bytes and how to name it to a user (``code_pairs.jsonl in configMap codex-sample-data``)."""

    name: str
    data: bytes
    suffix: str = ".jsonl"


def read_source(source: DataSource, field: str, data_root: Path, token: Optional[str] = None) -> list[SourceFile]:
    """The data files of ``source`` (the one field of it that is set picks the reader), in a stable order.

    Raises:
        InvalidSpecError: the ConfigMap key, PVC path, URL or Hub repo does not exist.
        TransientError: the URL or the Hub answered 429/5xx or could not be reached.
    """
    kind = next(name for name in READERS if getattr(source, name) is not None)
    return READERS[kind](source, field, PurePosixPath(data_root), token)


def _read_config_map(source: DataSource, field: str, root: PurePosixPath, token: Optional[str]) -> list[SourceFile]:
    ref = source.config_map
    path = Path(paths.configmap_file(ref, root))
    if not path.is_file():
        raise InvalidSpecError(f"{field}.configMap: key {ref.key!r} not found in ConfigMap {ref.name!r}")
    return [SourceFile(f"{ref.key} in configMap {ref.name}", path.read_bytes(), path.suffix or ".jsonl")]


def _read_pvc(source: DataSource, field: str, root: PurePosixPath, token: Optional[str]) -> list[SourceFile]:
    ref = source.pvc
    return _read_local(Path(paths.pvc_file(ref, root)), f"{field}.pvc", f"claim {ref.claim_name}", ref.path)


def _read_url(source: DataSource, field: str, root: PurePosixPath, token: Optional[str]) -> list[SourceFile]:
    return [_fetch_url(source.url, field)]


def _read_local(path: Path, field: str, where: str, shown: str) -> list[SourceFile]:
    if path.is_file():
        return [SourceFile(f"{shown} on {where}", path.read_bytes(), path.suffix)]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in DATA_SUFFIXES)
        if not files:
            raise InvalidDataError(f"{field}: no {'/'.join(DATA_SUFFIXES)} files in {shown!r} on {where}")
        return [SourceFile(f"{shown.rstrip('/')}/{p.relative_to(path)} on {where}", p.read_bytes(), p.suffix)
                for p in files]
    raise InvalidSpecError(f"{field}: {shown!r} does not exist on {where}")


def _fetch_url(url: str, field: str) -> SourceFile:
    import httpx

    shown = url.split("?", 1)[0]  # query strings may carry signatures; keep them out of messages
    try:
        response = httpx.get(url, follow_redirects=True, timeout=URL_TIMEOUT_SECONDS)
    except httpx.TransportError as error:
        raise TransientError(f"{field}.url: could not fetch {shown} ({type(error).__name__})") from None
    if response.status_code in RETRYABLE_STATUS or response.status_code >= 500:
        raise TransientError(f"{field}.url: {shown} answered HTTP {response.status_code}")
    if response.status_code != 200:
        raise InvalidSpecError(f"{field}.url: {shown} answered HTTP {response.status_code}")
    suffix = PurePosixPath(shown).suffix or ".jsonl"
    return SourceFile(shown, response.content, suffix if suffix in DATA_SUFFIXES else ".jsonl")


def _read_hub(source: DataSource, field: str, root: PurePosixPath, token: Optional[str]) -> list[SourceFile]:
    from huggingface_hub import snapshot_download

    try:
        local = Path(snapshot_download(source.hub, repo_type="dataset", revision=source.hub_revision,
                                       token=token or False, allow_patterns=[f"*{s}" for s in DATA_SUFFIXES]))
    except Exception as error:  # classified in one place
        raise hub_error(error, f"{field}.hub", source.hub, source.hub_revision) from None
    return _read_local(local, f"{field}.hub", f"dataset {source.hub}", "/")


# One reader per field of codex_api.common.DataSource (its snake_case name): a new kind of dataset
# source is a field there and a reader here (the operator mounts only ConfigMaps and PVCs).
READERS: dict[str, Callable[[DataSource, str, PurePosixPath, Optional[str]], list[SourceFile]]] = {
    "config_map": _read_config_map,
    "pvc": _read_pvc,
    "url": _read_url,
    "hub": _read_hub,
}
