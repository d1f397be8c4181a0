"""Server-side apply of a child whose whole desired state the operator owns.

The apiserver merges what the operator applies (field manager ``codex-operator``, ``force``)
and records which fields it owns (``metadata.managedFields``), so there is no hash of our own:

- a field changed by hand is taken back by the next apply;
- a field the desired object leaves out (a Deployment's ``replicas`` under an HPA) stays with
  whoever set it;
- a field the operator applied before and no longer wants is removed by the apply that leaves it out.

An apply is sent only when it would change something: when the desired object is not contained in
the live one (:func:`contains`), or the operator owns a field the desired object no longer has
(:func:`owned_within`). A stable child costs no write.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Mapping, Optional

from kubernetes.utils.quantity import parse_quantity

from .k8s import FIELD_MANAGER, Kube, NotOwnedError

# Maps whose values are resource quantities: the apiserver stores "1024Mi" as "1Gi".
QUANTITY_MAPS = ("limits", "requests")


def applied_fields(obj: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """The fields (``fieldsV1``) the operator owns through apply, as the live object records them."""
    for entry in (obj.get("metadata") or {}).get("managedFields") or ():
        if entry.get("manager") == FIELD_MANAGER and entry.get("operation") == "Apply" and not entry.get("subresource"):
            return entry.get("fieldsV1") or {}
    return None


def _same_quantity(live: Any, desired: Any) -> bool:
    try:
        return Decimal(parse_quantity(live)) == Decimal(parse_quantity(desired))
    except (ValueError, TypeError, ArithmeticError):
        return False


def contains(live: Any, desired: Any, quantities: bool = False) -> bool:
    """Whether every field of ``desired`` is in ``live`` with the same value: what the apiserver adds
    (defaults, status, other managers' map keys) does not count; lists must match item by item."""
    if isinstance(desired, dict):
        # ``quantities``: this dict is a resource map, whose values compare as quantities.
        return isinstance(live, dict) and all(
            key in live and contains(live[key], value, key in QUANTITY_MAPS if isinstance(value, dict) else quantities)
            for key, value in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(
            contains(item, wanted) for item, wanted in zip(live, desired))
    return live == desired or (quantities and _same_quantity(live, desired))


def _keyed_item(items: Any, key: str) -> Any:
    """The item of ``items`` a ``k:{...}`` field key names (a list-map entry), or None."""
    wanted = json.loads(key)
    if not isinstance(items, list):
        return None
    return next((i for i in items if isinstance(i, dict) and all(i.get(k) == v for k, v in wanted.items())), None)


def owned_within(fields: Mapping[str, Any], desired: Any) -> bool:
    """Whether every field in ``fields`` (a ``fieldsV1`` tree) is still in ``desired``; False means an
    apply would remove something the operator set before."""
    for key, sub in fields.items():
        kind, _, name = key.partition(":")
        if kind == "f":
            child = desired.get(name) if isinstance(desired, dict) else None
            present = isinstance(desired, dict) and name in desired
        elif kind == "k":
            child = _keyed_item(desired, name)
            present = child is not None
        elif kind == "v":
            child, present = None, isinstance(desired, list) and json.loads(name) in desired
        else:  # "." (the item itself) or "i:" (an index, never written by apply)
            continue
        if not present or (sub and not owned_within(sub, child)):
            return False
    return True


def needs_apply(desired: Mapping[str, Any], live: Mapping[str, Any]) -> bool:
    """Whether applying ``desired`` would change ``live`` (the live object with its applied fields)."""
    fields = applied_fields(live)
    return not contains(live, desired) or (fields is not None and not owned_within(fields, desired))


def controlled_by(obj: Mapping[str, Any], owner_uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or ()
    return any(ref.get("uid") == owner_uid and ref.get("controller") for ref in refs)


async def apply_child(kube: Kube, desired: dict[str, Any], live: Optional[dict[str, Any]],
                      owner_uid: str) -> tuple[dict[str, Any], bool]:
    """Make the child ``desired`` describes so; ``live`` is the indexed one (None: not indexed yet).
    Returns (the live child, whether this call created it), as :meth:`Kube.ensure` does.

    A child missing from the index is read first: an object of that name that ``owner_uid`` does not
    control raises :class:`NotOwnedError` instead of being taken over. It is created by apply, not
    POST: fields a POST sets stay co-owned by the POST's own manager, so a later apply that leaves
    one out (an env var, a volume) could not remove it.
    """
    if live is None:
        meta = desired["metadata"]
        live = await kube.get(desired["apiVersion"], desired["kind"], meta["namespace"], meta["name"])
        if live is not None and not controlled_by(live, owner_uid):
            raise NotOwnedError(f"{desired['kind']} {meta['namespace']}/{meta['name']} exists and is not "
                                f"controlled by this object")
    if live is not None and not needs_apply(desired, live):
        return live, False
    return await kube.apply(desired), live is None
