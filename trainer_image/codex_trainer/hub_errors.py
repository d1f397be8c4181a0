"""Turn huggingface_hub and network exceptions into the trainer's error words.

A missing repo, revision or a rejected token will not fix itself (invalid spec); a 429, a 5xx
or a dropped connection might (transient). The message names the spec field, never the token.
"""

from __future__ import annotations

from huggingface_hub import constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .errors import InvalidSpecError, TrainerError, TransientError

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def status_of(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _transport_errors() -> tuple[type[BaseException], ...]:
    # huggingface_hub 2.x talks through httpx2; older releases through httpx or requests.
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(__import__(module).TransportError)
        except (ImportError, AttributeError):
            pass
    try:
        import requests

        errors += [requests.ConnectionError, requests.Timeout]
    except ImportError:
        pass
    return tuple(errors)


def is_retryable(error: BaseException) -> bool:
    """True for 408/429/5xx answers and for connection-level failures."""
    if isinstance(error, HfHubHTTPError):
        status = status_of(error)
        return status is None or status in RETRYABLE_STATUS or status >= 500
    return isinstance(error, _transport_errors())


def hub_error(error: BaseException, field: str, repo_id: str, revision: str | None = None) -> TrainerError:
    """The trainer error for ``error`` raised while talking to the Hub about ``repo_id``."""
    where = f"{field}: {repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    if isinstance(error, GatedRepoError):
        return InvalidSpecError(f"{where} is gated; accept its terms and set tokenSecretRef to a token with access")
    if isinstance(error, RevisionNotFoundError):
        return InvalidSpecError(f"{where}: revision not found")
    if isinstance(error, RepositoryNotFoundError):
        return InvalidSpecError(f"{where}: repository not found, or private and the token cannot read it")
    if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled)) and constants.HF_HUB_OFFLINE:
        return InvalidSpecError(f"{where} is not in the local Hub cache and HF_HUB_OFFLINE is set")
    status = status_of(error)
    if status in (401, 403):
        return InvalidSpecError(f"{where}: the Hub refused the token (HTTP {status})")
    if is_retryable(error) or isinstance(error, LocalEntryNotFoundError):
        return TransientError(f"{where}: Hub unavailable ({type(error).__name__}, HTTP {status or '-'}); will retry")
    return InvalidSpecError(f"{where}: {type(error).__name__} (HTTP {status or '-'})")
