"""A recording fake of the operator's API client, and in-memory views, for reconciler unit tests.

:class:`FakeKube` is the real :class:`codex_operator.k8s.Kube` with only its transport replaced:
``create``, ``get``, ``patch``, ``apply`` and ``ensure`` run as in production and end in
:meth:`FakeKube.request`, which answers from an in-memory store as the apiserver would (201,
409 AlreadyExists, 404) and records each call as ``(verb, kind, name)``. A test can plant
objects, make one call fail, and assert the exact calls a reconcile made.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, Iterable, Optional

from codex_operator import k8s
from codex_operator.config import OperatorConfig
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


class FakeKube(k8s.Kube):
    def __init__(self) -> None:  # no client, no threads
        self.store: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[Call] = []
        self.failures: dict[Call, ApiError] = {}
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
        return (kind, name) in self.store

    async def request(self, method: str, path: str, body: Any = None, content_type: Optional[str] = None,
                      kind: str = "", priority: int = k8s.NORMAL, query: Any = None) -> Any:
        kind, name, subresource = parse_path(path)
        if name is None and "name" not in body["metadata"]:  # generateName, as Events use
            body = {**body, "metadata": {**body["metadata"], "name": body["metadata"]["generateName"] + next(self.uids)}}
        name = name or body["metadata"]["name"]
        verb = "apply" if content_type == APPLY_PATCH else VERBS.get(method, "patch")
        call = (verb + (f"/{subresource}" if subresource else ""), kind, name)
        self.calls.append(call)
        if call in self.failures:
            raise self.failures.pop(call)
        return self._answer(verb, kind, name, body, subresource)

    def _answer(self, verb: str, kind: str, name: str, body: Any, subresource: Optional[str]) -> Any:
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
            live = live or {"metadata": {}}
            self.plant({**live, **body, "metadata": {**live["metadata"], **body["metadata"]}})
        else:
            target = live.setdefault(subresource, {}) if subresource else live
            target.update(copy.deepcopy(body.get(subresource, body) if subresource else body))
        return copy.deepcopy(self.store[kind, name])


def index(objs: Iterable[dict[str, Any]], key) -> dict[Any, list[dict[str, Any]]]:
    out: dict[Any, list[dict[str, Any]]] = {}
    for obj in objs:
        out.setdefault(key(obj), []).append(obj)
    return out


def views(runs=(), jobs=(), pods=(), models=(), deployments=(), services=(), hpas=()) -> Views:
    """In-memory indexes filed as handlers/indexes.py files them (children under their owner's name)."""
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
        deployment_index=index(deployments, by_owner),
        service_index=index(services, by_owner),
        hpa_index=index(hpas, by_owner),
    )


def make_state(kube: FakeKube, view: Views, cfg: Optional[OperatorConfig] = None) -> OperatorState:
    return OperatorState(cfg=cfg or OperatorConfig(), kube=kube, views=view)
