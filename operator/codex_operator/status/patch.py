"""The minimal merge patch between the stored status and a computed one."""

from __future__ import annotations

from typing import Any, Iterable, Mapping


def status_patch(stored: Mapping[str, Any] | None, computed: Mapping[str, Any],
                 owned: Iterable[str]) -> dict[str, Any]:
    """Fields of ``owned`` whose computed value differs; None (JSON null) deletes a field.

    Fields the operator does not own (status.progress, written by the trainer) are never
    touched, and an empty result means nothing to write.
    """
    stored = stored or {}
    patch: dict[str, Any] = {}
    for field in owned:
        new = computed.get(field)
        if stored.get(field) != new:
            patch[field] = new
    return patch
