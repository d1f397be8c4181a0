"""A core/v1 Event about a run or a model (one per phase or reason transition)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

from .. import names
from ..conditions import rfc3339

# The apiserver refuses longer messages; the middle of a long one goes (its end often says why).
MAX_MESSAGE = 1024
CUT = "..."


def shorten(message: str, limit: int = MAX_MESSAGE) -> str:
    if len(message) <= limit:
        return message
    head = (limit - len(CUT)) // 2
    return message[:head] + CUT + message[-(limit - len(CUT) - head):]


def build_event(obj: Mapping[str, Any], type_: str, reason: str, message: str, now: datetime,
                instance: str) -> dict[str, Any]:
    """The Event ``kubectl describe`` shows for ``obj``; ``instance`` is the operator's pod name."""
    meta = obj["metadata"]
    stamp = rfc3339(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta["uid"]},
        "type": type_,
        "reason": reason,
        "message": shorten(message),
        "source": {"component": names.OPERATOR_NAME},
        "reportingComponent": names.OPERATOR_NAME,
        "reportingInstance": instance,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
