"""Fuzzing the models against the apiserver: the two must never disagree about a spec.

hypothesis mutates the examples (and the minimal good objects): values of another type, numbers
past their bounds, unicode and control characters in strings, deleted fields, extra fields, empty
and grown lists. Each mutation goes to the models (``codex_api.parse``) and to the apiserver as a
server-side dry-run create with strict field validation (what ``kubectl apply`` sends). Then:

- refused by both, each naming a field path that exists in the object (or whose parent does, for a
  required field left out); or
- accepted by both, and then the object as the apiserver would store it (defaults filled in, nulls
  dropped) parses too, and every child the operator builds from it (the Job path, the sandbox and
  publish Jobs, the model's Deployment, Service and HPA) is accepted by a server-side dry run.

The run has a fixed seed and stops at whichever comes first: MAX_EXAMPLES mutations or
TIME_BOUND_SECONDS (CODEX_FUZZ_EXAMPLES and CODEX_FUZZ_SECONDS change them). Disagreements are collected and reported together, each with its mutations.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Optional

import kubernetes
import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from kubernetes.client import ApiClient

from codex_api import CodexModel, CodexTrainingRun, SpecError, parse, stages
from codex_api.stages import SandboxReport
from codex_operator.builders.stages import build_publish_job, build_sandbox_job
from codex_operator.config import OperatorConfig
from codex_operator.k8s import resource_path
from codex_operator.promotion import resolve
from codex_operator.runtimes import build_deployment
from codex_operator.builders.serving import ServeSpecError, build_hpa, build_service
from codex_operator.sync_runs import all_children, build_run_children
from good_specs import GOOD_MODEL, GOOD_RUN

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[2]
# CODEX_FUZZ_EXAMPLES, CODEX_FUZZ_SECONDS and CODEX_FUZZ_SEED run it longer, shorter or otherwise.
MAX_EXAMPLES = int(os.environ.get("CODEX_FUZZ_EXAMPLES", "3000"))
TIME_BOUND_SECONDS = float(os.environ.get("CODEX_FUZZ_SECONDS", "150"))
FUZZ_SEED = int(os.environ.get("CODEX_FUZZ_SEED", "20261202"))
# The disagreements shown when the test fails (all are counted).
SHOWN = 12

KINDS = {"CodexTrainingRun": CodexTrainingRun, "CodexModel": CodexModel}
PLURAL = {"CodexTrainingRun": "codextrainingruns", "CodexModel": "codexmodels"}
CFG = OperatorConfig()
OWNER_UID = "0f0f0f0f-1111-2222-3333-444444444444"


def _seeds() -> list[dict[str, Any]]:
    docs = [d for f in sorted((REPO_ROOT / "examples").glob("*.yaml")) if f.name != "kustomization.yaml"
            for d in yaml.safe_load_all(f.read_text()) if d and d.get("kind") in KINDS]
    return [GOOD_RUN, GOOD_MODEL, *docs]


SEEDS = _seeds()


def _values_by_key() -> dict[str, list[Any]]:
    """Every value the seeds give each field name: what a "borrow" mutation sets, so that mutations
    also combine valid values (cross-field rules, and children built from unusual specs)."""
    pool: dict[str, list[Any]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                pool.setdefault(key, []).append(value)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    for obj in SEEDS:
        walk(obj["spec"])
    return pool


BORROWED = _values_by_key()

# Strings a user or an attacker would try, beside hypothesis' own text.
TRICKY_STRINGS = [
    "", " ", "a", "A", "-", ".", "..", "/", "/..", "/a/../..", "/a/./b", "//a", "a/b", "../etc", "C:\\x",
    "x\n", "\nx", "x\r\ny", "x\x00y", "\x7f", "\t", "é", "名前", "\u202e", "\ufeffx", "a" * 64, "a" * 254,
    "b" * 5000, "https://u:p@example.com/x", "https://example.com/x", "http://example.com/x",
    "hf_abcdefghijklmnopqrstuvwxyz012345", "sk-abcdefghijklmnopqrstuvwxyz012345", "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "AKIAABCDEFGHIJKLMNOP", "0", "-1", "1e3", "0Gi", "1Gi", "100m", "-1Gi", "1.5", "true", "null", "${HOME}",
    "$(echo x)", "'", '"', "\\", "org/model", "org/../x", "a:b", "kubernetes.io/x", "a=b", "@", "*",
]
INTEGERS = st.one_of(st.sampled_from([0, 1, -1, 2, 7, 63, 64, 65535, 65536, 2 ** 31, 2 ** 53, 2 ** 63 - 1, 2 ** 63,
                                      -(2 ** 63), 10 ** 20]), st.integers(-(2 ** 70), 2 ** 70))
FLOATS = st.one_of(st.sampled_from([0.0, -0.0, 0.5, 1.0, 1.5, 2.0, 1e-9, 1e30, -1e30]),
                   st.floats(allow_nan=False, allow_infinity=False))
TEXT = st.one_of(st.sampled_from(TRICKY_STRINGS), st.text(max_size=24),
                 st.text(alphabet=st.characters(codec="ascii"), max_size=24))
SCALARS = st.one_of(st.none(), st.booleans(), INTEGERS, FLOATS, TEXT)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(TEXT, inner, max_size=3)), max_leaves=6)

Path_ = tuple[Any, ...]
# Not extra at the root: status among them, which a create ignores (the status subresource).
ROOT_KEYS = ("apiVersion", "kind", "metadata", "spec", "status")


def paths_of(node: Any, prefix: Path_) -> list[Path_]:
    """Every path at or under ``prefix`` in ``node``: dict keys and list indexes."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths_of(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += paths_of(value, prefix + (index,))
    return found


def at(obj: Any, path: Path_) -> Any:
    for part in path:
        obj = obj[part]
    return obj


def set_at(obj: Any, path: Path_, value: Any) -> None:
    at(obj, path[:-1])[path[-1]] = value


@st.composite
def string_edit(draw, value: str) -> str:
    how = draw(st.sampled_from(["replace", "append", "prepend", "insert", "repeat", "case", "cut"]))
    text = draw(TEXT)
    if how == "replace":
        return text
    if how == "append":
        return value + text
    if how == "prepend":
        return text + value
    if how == "case":
        return value.swapcase()
    if how == "cut":
        return value[:draw(st.integers(0, len(value)))]
    if how == "insert":
        where = draw(st.integers(0, len(value)))
        return value[:where] + text + value[where:]
    return value * draw(st.integers(2, 300))


@st.composite
def mutated(draw) -> tuple[dict[str, Any], list[str]]:
    """(a mutated copy of one seed, what was done to it)."""
    obj = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    obj["metadata"] = {**obj.get("metadata", {}), "name": obj["metadata"]["name"]}
    done = [f"{obj['kind']} {obj['metadata']['name']}"]
    for _ in range(draw(st.sampled_from([1, 1, 2, 3]))):
        paths = (paths_of(obj["spec"], ("spec",)) if "spec" in obj else []) + [("metadata", "name"), ()]
        path = draw(st.sampled_from(paths))
        node = at(obj, path)
        ops = ["extra"] if path == () else ["set", "delete"] if path != ("metadata", "name") else ["set"]
        if path and path[-1] in BORROWED:
            ops += ["borrow"] * 3
        if isinstance(node, str):
            ops += ["string", "string"]
        if isinstance(node, bool):
            ops += ["flip"]
        elif isinstance(node, (int, float)):
            ops += ["number", "near", "near"]
        if isinstance(node, list):
            ops += ["list"]
        if isinstance(node, dict):
            ops += ["extra"]
        op = draw(st.sampled_from(ops))
        where = ".".join(map(str, path)) or "(root)"
        if op == "set":
            value = draw(VALUES)
            set_at(obj, path, value)
        elif op == "delete":
            del at(obj, path[:-1])[path[-1]]
            value = "(deleted)"
        elif op == "string":
            value = draw(string_edit(node))
            set_at(obj, path, value)
        elif op == "number":
            value = draw(st.one_of(INTEGERS, FLOATS))
            set_at(obj, path, value)
        elif op == "near":  # a neighbour of the same type: the bounds, off by one
            value = node + draw(st.sampled_from([-2, -1, 1, 2, 100])) * (1 if isinstance(node, int) else 0.25)
            set_at(obj, path, value)
        elif op == "borrow":
            value = copy.deepcopy(draw(st.sampled_from(BORROWED[path[-1]])))
            set_at(obj, path, value)
        elif op == "flip":
            value = not node
            set_at(obj, path, value)
        elif op == "list":
            how = draw(st.sampled_from(["empty", "duplicate", "append"]))
            value = [] if how == "empty" or not node else node + [node[0]] if how == "duplicate" \
                else node + [draw(VALUES)]
            set_at(obj, path, value)
        else:
            key = draw(st.one_of(TEXT, st.sampled_from(["token", "apiKey", "password", "spec", "x"])))
            if path == () and key in ROOT_KEYS:
                key += "-extra"  # the root's own fields are mutated where they are, not replaced
            value = draw(VALUES)
            node[key] = value
            where += f".{key}"
        done.append(f"{op} {where} = {value!r:.120}")
    return obj, done


# --- The two verdicts ------------------------------------------------------------------------------

# A key may hold anything, quotes too: a quoted field ends where the next one or the message does.
FIELD_IN_MESSAGE = re.compile(r'unknown field "(.*?)"(?=, |$)|duplicate field "(.*?)"(?=, |$)|^([\w.\[\]]+): '
                              r'|Go struct field ObjectMeta\.(\w+)', re.DOTALL)
# The apiserver's messages drop some control characters: keys are compared without them.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class Apiserver:
    def __init__(self, kubeconfig: Path, namespace: str):
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        self.client = ApiClient(configuration)
        self.namespace = namespace

    def dry_run(self, obj: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of a server-side dry-run create of ``obj`` in the namespace."""
        path = resource_path(obj["apiVersion"], obj["kind"], self.namespace)
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        _, url, headers, _, _ = self.client.param_serialize(
            method="POST", resource_path=path, query_params=[("dryRun", "All"), ("fieldValidation", "Strict")],
            header_params=headers, auth_settings=["BearerToken"])
        response = self.client.call_api("POST", url, header_params=headers, body=obj, _request_timeout=(5, 30))
        data = response.read()
        return response.status, json.loads(data) if data else {}


def server_fields(body: dict[str, Any]) -> list[str]:
    """The field paths an apiserver refusal names (its causes, else its message)."""
    fields = [cause["field"] for cause in (body.get("details") or {}).get("causes") or [] if cause.get("field")]
    for match in FIELD_IN_MESSAGE.finditer(body.get("message", "")):
        unknown, duplicate, prefix, meta = match.groups()
        fields.extend(f for f in (unknown, duplicate) if f is not None)  # "" is a key too
        fields.extend(f for f in (prefix, meta and f"metadata.{meta}") if f)
    return fields


def exists(obj: Any, field: str) -> bool:
    """Whether ``field`` (``spec.a.b[0]``, ``spec.m[key]``, ``spec.m.key``, keys may hold dots and
    brackets) names a place in ``obj``, or a field left out of one that does (a required value)."""
    return _matches(obj, CONTROL.sub("", field), top=True)


def _matches(node: Any, rest: str, top: bool = False) -> bool:
    if not rest:
        return True
    if isinstance(node, list):
        index = re.match(r"\[(\d+)\]", rest)
        return bool(index) and int(index[1]) < len(node) and _matches(node[int(index[1])], rest[index.end():])
    if not isinstance(node, dict):
        return False
    for opening, closing in (("", ""),) if top else ((".", ""), ("[", "]")):
        if not rest.startswith(opening):
            continue
        body = rest[len(opening):]
        for key in node:
            bare = CONTROL.sub("", key) if isinstance(key, str) else None
            if bare is not None and body.startswith(bare + closing) and \
                    _matches(node[key], body[len(bare) + len(closing):]):
                return True
    # A field left out (named as required, or defaulted), under a place that exists.
    return bool(re.fullmatch(r"(\.?[A-Za-z]\w*)(\.[A-Za-z]\w*)*", rest))


# --- Children ----------------------------------------------------------------------------------------

def placed(child: dict[str, Any], namespace: str) -> dict[str, Any]:
    child = copy.deepcopy(child)
    child["metadata"]["namespace"] = namespace
    return child


def run_children(run: CodexTrainingRun) -> list[dict[str, Any]]:
    built = all_children(build_run_children(run, CFG))
    if stages.is_staged(run.spec):
        samples = run.spec.evaluation.samples_per_task
        built += [build_sandbox_job(run, CFG),
                  build_publish_job(run, CFG, SandboxReport.of(["passed"] * samples).message())]
    return built


def passing_run_for(model: CodexModel) -> dict[str, Any]:
    """A finished run with passing gates that the model's fromTrainingRun picks."""
    source = model.spec.adapter.from_training_run
    name = source.name or "fuzz-run"
    return {"metadata": {"name": name, "labels": dict(source.selector or {}), "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"baseModel": {"hub": "org/base"}, "lora": {"r": 16}},
            "status": {"phase": "Succeeded", "gates": {"passed": True}, "completionTime": "2026-01-01T01:00:00Z",
                       "artifact": {"claimName": "artifacts", "path": f"/{name}/adapter", "revision": "abc123"}}}


def model_children(model: CodexModel) -> list[dict[str, Any]]:
    runs = [passing_run_for(model)] if model.spec.adapter.from_training_run is not None else []
    resolution = resolve(model, runs)
    return [c for c in (build_deployment(model, resolution, CFG), build_service(model), build_hpa(model)) if c]


def children_of(stored: dict[str, Any]) -> list[dict[str, Any]]:
    parsed = parse(KINDS[stored["kind"]], stored)
    built = run_children(parsed) if isinstance(parsed, CodexTrainingRun) else model_children(parsed)
    owner = {"apiVersion": stored["apiVersion"], "kind": stored["kind"], "name": stored["metadata"]["name"],
             "uid": OWNER_UID, "controller": True, "blockOwnerDeletion": True}
    for child in built:
        child["metadata"]["ownerReferences"] = [owner]
    return built


# --- The test ----------------------------------------------------------------------------------------

class Findings:
    def __init__(self) -> None:
        self.cases = 0
        self.accepted = 0
        self.problems: list[str] = []
        self.children_seen: set[str] = set()
        self.deadline = time.monotonic() + TIME_BOUND_SECONDS

    def add(self, done: list[str], what: str) -> None:
        self.problems.append(f"{what}\n    after: " + "\n           ".join(done))


def check(api: Apiserver, findings: Findings, obj: dict[str, Any], done: list[str]) -> None:
    model = KINDS[obj["kind"]]
    try:
        parse(model, obj)
        models_error: Optional[SpecError] = None
    except SpecError as error:
        models_error = error
    status, body = api.dry_run(obj)
    server_ok = status == 201
    if status not in (201, 400, 422):
        findings.add(done, f"the apiserver answered {status}: {body.get('message')}")
        return
    if (models_error is None) != server_ok:
        findings.add(done, f"models {'accept' if models_error is None else 'refuse: ' + str(models_error)[:600]}; "
                           f"apiserver {'accepts' if server_ok else 'refuses: ' + body.get('message', '')[:600]}")
        return
    if models_error is not None:
        named = [p.split(": ", 1)[0].replace("(root)", "") for p in models_error.problems]
        if not any(exists(obj, f) for f in named):
            findings.add(done, f"the models name no field that exists: {models_error}")
        fields = server_fields(body)
        if not any(exists(obj, f) for f in fields):
            findings.add(done, f"the apiserver names no field that exists ({fields}): {body.get('message', '')[:600]}")
        return
    findings.accepted += 1
    try:
        children = children_of(body)
    except ServeSpecError as error:  # valid, but the runtime cannot serve it: InvalidSpec naming the field
        if not exists(obj, str(error).split(": ", 1)[0]):
            findings.add(done, f"the runtime's refusal names no field that exists: {error}")
        return
    except SpecError as error:
        findings.add(done, f"the stored object does not parse: {error}")
        return
    for child in children:
        child = placed(child, api.namespace)
        digest = hashlib.sha256(json.dumps(child, sort_keys=True).encode()).hexdigest()
        if digest in findings.children_seen:
            continue
        child_status, child_body = api.dry_run(child)
        if child_status != 201:
            findings.add(done, f"the apiserver refuses the {child['kind']} {child['metadata']['name']} built from "
                               f"an accepted spec: {child_body.get('message', '')[:400]}")
        else:
            findings.children_seen.add(digest)


@pytest.fixture(scope="module")
def apiserver(cluster):
    crds = sorted((REPO_ROOT / "crds").glob("*.yaml"))
    cluster.kubectl("apply", "--server-side", "--force-conflicts", *[f"--filename={f}" for f in crds])
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/codextrainingruns.codex.dev",
                    "crd/codexmodels.codex.dev")
    with cluster.temporary_namespace("spec-fuzz") as namespace:
        yield Apiserver(cluster.kubeconfig, namespace)


def test_the_models_and_the_apiserver_never_disagree(apiserver):
    findings = Findings()

    @seed(FUZZ_SEED)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(mutated())
    def one(case):
        if time.monotonic() > findings.deadline:
            return
        findings.cases += 1
        obj, done = case
        check(apiserver, findings, obj, done)

    one()
    print(f"\n{findings.cases} mutations, {findings.accepted} accepted by both, "
          f"{len(findings.children_seen)} distinct children dry-run")
    assert findings.cases >= 500, f"only {findings.cases} mutations in {TIME_BOUND_SECONDS}s"
    assert not findings.problems, (f"{len(findings.problems)} of {findings.cases} mutations:\n"
                                   + "\n".join(findings.problems[:SHOWN]))
