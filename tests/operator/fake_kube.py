"""A recording fake of the operator's API client, and in-memory views, for reconciler unit tests.

:class:`FakeKube` is the real :class:`codex_operator.k8s.Kube` with only its transport replaced:
``create``, ``get``, ``patch``, ``apply`` and ``ensure`` run as in production and end in
:meth:`FakeKube.request`, which answers from an in-memory store as the apiserver would (201,
409 AlreadyExists, 404) and records each call as ``(verb, kind, name)``. A test can plant
objects, make one call fail, and assert the exact calls a reconcile made (and read the body each
one last sent, :attr:`FakeKube.bodies`).

A server-side apply is answered as the apiserver merges one (:func:`merge_apply`): the fields the
manager applied before and now leaves out are removed, the others kept, and what it applied is
recorded in ``metadata.managedFields`` (:func:`fields_v1`), which ``ssa.needs_apply`` reads.
"""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any, Iterable, Optional

from codex_operator import k8s
from codex_operator.config import OperatorConfig
from codex_operator.handlers.indexes import deployment_index, hpa_index, service_index
from codex_operator.k8s import APPLY_PATCH, PLURALS, ApiError
from codex_operator.state import OperatorState
from codex_operator.views import Views

KINDS = {plural: kind for (_, kind), plural in PLURALS.items()}
VERBS = {"POST": "create", "GET": "get", "DELETE": "delete"}
Call = tuple[str, str, str]


def parse_path(path: str) -> tuple[str, Optional[str], Optional[str]]:
    """(kind, name, subresource) of an API path such as /apis/batch/v1/namespaces/ns/jobs/x/status."""
    parts = path.strip("/").split("/")
    index = parts.index("namespaces") + 2 if "namespaces" in parts else (2 if parts[0] == "api" else 3)
    rest = parts[index:]
    return KINDS[rest[0]], (rest[1] if len(rest) > 1 else None), (rest[2] if len(rest) > 2 else None)


def fields_v1(obj: Any) -> dict[str, Any]:
    """The ``fieldsV1`` tree of the fields ``obj`` sets, as the apiserver records an apply: a list of
    named items (containers, env, volumes) as a list-map keyed by name, ownerReferences by uid, any
    other list as one atomic field."""
    if isinstance(obj, dict):
        return {f"f:{key}": fields_v1(value) for key, value in obj.items()}
    if isinstance(obj, list) and obj and all(isinstance(item, dict) for item in obj):
        key = next((k for k in ("uid", "name") if all(k in item for item in obj)), None)
        if key is not None:
            return {"k:" + json.dumps({key: item[key]}, separators=(",", ":")): {".": {}, **fields_v1(item)}
                    for item in obj}
    return {}


def applied_fields_of(obj: dict[str, Any]) -> dict[str, Any]:
    """What an apply of ``obj`` owns: everything it sets but its identity (apiVersion, kind, name, namespace)."""
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    body["metadata"] = {k: v for k, v in obj.get("metadata", {}).items() if k not in ("name", "namespace")}
    return fields_v1(body)


def prune(live: dict[str, Any], owned: dict[str, Any], body: dict[str, Any]) -> None:
    """Remove from ``live`` the fields of ``owned`` (a fieldsV1 tree) that ``body`` no longer sets."""
    for key, sub in owned.items():
        kind, _, name = key.partition(":")
        if kind != "f" or name not in live:
            continue
        if name not in body:
            del live[name]
        elif sub and isinstance(live[name], dict) and isinstance(body[name], dict):
            prune(live[name], sub, body[name])


def deep_merge(live: dict[str, Any], body: dict[str, Any]) -> None:
    """Merge ``body`` into ``live``: maps field by field, lists and scalars replaced."""
    for key, value in body.items():
        if isinstance(value, dict) and isinstance(live.get(key), dict):
            deep_merge(live[key], value)
        else:
            live[key] = copy.deepcopy(value)


def merge_apply(live: Optional[dict[str, Any]], body: dict[str, Any], manager: str) -> dict[str, Any]:
    """``live`` after ``manager`` applied ``body`` (server-side apply, forced): what it applied before and
    leaves out now is removed, what others set (status, defaults) stays, and its managedFields entry
    is replaced by what ``body`` sets."""
    merged = copy.deepcopy(live) if live is not None else {"metadata": {}}
    entries = merged["metadata"].get("managedFields") or []
    previous = next((e for e in entries if e.get("manager") == manager and e.get("operation") == "Apply"), None)
    if previous is not None:
        prune(merged, previous.get("fieldsV1") or {}, body)
    deep_merge(merged, body)
    entry = {"manager": manager, "operation": "Apply", "apiVersion": body.get("apiVersion"),
             "fieldsType": "FieldsV1", "fieldsV1": applied_fields_of(body)}
    merged["metadata"]["managedFields"] = [e for e in entries if e is not previous] + [entry]
    return merged


class FakeKube(k8s.Kube):
    def __init__(self) -> None:  # no client, no threads
        self.store: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[Call] = []
        # The body each call last sent (a GET's is None).
        self.bodies: dict[Call, Any] = {}
        self.failures: dict[Call, ApiError] = {}
        # Container logs by pod name (GET pods/<name>/log).
        self.logs: dict[str, str] = {}
        self.uids = (f"uid-{n}" for n in itertools.count(1))

    def close(self) -> None:
        pass

    def plant(self, *objs: dict[str, Any]) -> None:
        """Objects that already exist on the apiserver (recorded as no call)."""
        for obj in objs:
            obj = copy.deepcopy(obj)
            obj["metadata"].setdefault("uid", next(self.uids))
            self.store[obj["kind"], obj["metadata"]["name"]] = obj

    def has(self, kind: str, name: str) -> bool:
        """Whether the apiserver holds ``kind`` ``name``."""
        return (kind, name) in self.store

    async def request(self, method: str, path: str, body: Any = None, content_type: Optional[str] = None,
                      kind: str = "", priority: int = k8s.NORMAL, query: Any = None, text: bool = False) -> Any:
        kind, name, subresource = parse_path(path)
        if name is None and "name" not in body["metadata"]:  # generateName, as Events use
            body = {**body, "metadata": {**body["metadata"], "name": body["metadata"]["generateName"] + next(self.uids)}}
        name = name or body["metadata"]["name"]
        verb = "apply" if content_type == APPLY_PATCH else VERBS.get(method, "patch")
        call = (verb + (f"/{subresource}" if subresource else ""), kind, name)
        self.calls.append(call)
        self.bodies[call] = copy.deepcopy(body)
        if call in self.failures:
            raise self.failures.pop(call)
        if subresource == "log":
            if name not in self.logs:
                raise ApiError(404, "NotFound", f"pod {name} not found")
            return self.logs[name]
        return self._answer(verb, kind, name, body, subresource, dict(query or ()).get("fieldManager", ""))

    def _answer(self, verb: str, kind: str, name: str, body: Any, subresource: Optional[str],
                manager: str = "") -> Any:
        live = self.store.get((kind, name))
        if verb == "create":
            if live is not None:
                raise ApiError(409, "AlreadyExists", f"{kind} {name} already exists")
            self.plant(body)
            return copy.deepcopy(self.store[kind, name])
        if live is None and verb != "apply":
            raise ApiError(404, "NotFound", f"{kind} {name} not found")
        if verb == "get":
            return copy.deepcopy(live)
        if verb == "delete":
            del self.store[kind, name]
            return None
        if verb == "apply":
            self.plant(merge_apply(live, body, manager))
        else:
            target = live.setdefault(subresource, {}) if subresource else live
            target.update(copy.deepcopy(body.get(subresource, body) if subresource else body))
        return copy.deepcopy(self.store[kind, name])


def index(objs: Iterable[dict[str, Any]], key) -> dict[Any, list[dict[str, Any]]]:
    """``objs`` filed under ``key(obj)``."""
    out: dict[Any, list[dict[str, Any]]] = {}
    for obj in objs:
        out.setdefault(key(obj), []).append(obj)
    return out


def _value(coroutine: Any) -> Any:
    """What an index function returns: they are coroutines that never await (kopf runs them on its loop)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("an index function awaited something")


def filed(indexer, objs: Iterable[dict[str, Any]]) -> dict[Any, list[dict[str, Any]]]:
    """``objs`` filed by one of handlers/indexes.py's own index functions (slim copies, with the
    operator's managedFields entry; an object it does not file is left out)."""
    out: dict[Any, list[dict[str, Any]]] = {}
    for obj in objs:
        for key, value in (_value(indexer(namespace=obj["metadata"]["namespace"], body=obj)) or {}).items():
            out.setdefault(key, []).append(value)
    return out


def views(runs=(), jobs=(), pods=(), models=(), deployments=(), services=(), hpas=()) -> Views:
    """In-memory indexes filed as handlers/indexes.py files them (children under their owner's name; a
    model's children by the real index functions)."""
    def by_name(obj):
        return obj["metadata"]["namespace"], obj["metadata"]["name"]

    def by_owner(obj):
        return obj["metadata"]["namespace"], obj["metadata"]["ownerReferences"][0]["name"]

    return Views(
        run_index=index(runs, by_name),
        run_names={ns: [r["metadata"]["name"] for r in rs]
                   for ns, rs in index(runs, lambda r: r["metadata"]["namespace"]).items()},
        models_by_namespace=index(models, lambda m: m["metadata"]["namespace"]),
        job_index=index(jobs, by_owner),
        pod_index=index(pods, lambda p: (p["metadata"]["namespace"], p["metadata"]["labels"]["codex.dev/training-run"])),
        deployment_index=filed(deployment_index, deployments),
        service_index=filed(service_index, services),
        hpa_index=filed(hpa_index, hpas),
    )


def make_state(kube: FakeKube, view: Views, cfg: Optional[OperatorConfig] = None) -> OperatorState:
    """An operator state talking to ``kube`` and reading ``view``."""
    return OperatorState(cfg=cfg or OperatorConfig(), kube=kube, views=view)
