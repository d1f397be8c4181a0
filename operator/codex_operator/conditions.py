"""Standard conditions with the semantics of apimachinery's ``meta.SetStatusCondition``."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

Condition = dict[str, Any]


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> Optional[datetime]:
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def find_condition(conditions: list[Condition] | None, type_: str) -> Optional[Condition]:
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def set_condition(conditions: list[Condition], type_: str, status: str, reason: str, message: str,
                  now: datetime, generation: Optional[int] = None) -> list[Condition]:
    """Return ``conditions`` with ``type_`` set; lastTransitionTime moves only when status flips."""
    previous = find_condition(conditions, type_)
    transition = previous.get("lastTransitionTime") if previous and previous.get("status") == status else None
    updated: Condition = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition or rfc3339(now),
    }
    if generation is not None:
        updated["observedGeneration"] = generation
    kept = [c for c in conditions if c.get("type") != type_]
    return sorted(kept + [updated], key=lambda c: c["type"])
