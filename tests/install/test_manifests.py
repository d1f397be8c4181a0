"""Install manifests: generated files are current, the chart lints clean and renders both
modes, bad values fail with a clear message, and the kustomize overlays build."""

from __future__ import annotations

import json
import re

import pytest
import yaml

import gen_manifests
from codex_api import images
from codex_operator.builders.operator_install import OPERATOR_ENV
from codex_operator.rbac_rules import operator_rules

from .tools import CHART, REPO_ROOT, helm_template, run


def test_generated_manifests_are_current():
    stale = [str(path.relative_to(REPO_ROOT)) for path, text in gen_manifests.files().items()
             if not path.exists() or path.read_text() != text]
    assert not stale, f"run `make manifests`: {stale}"


@pytest.mark.parametrize("values", [None, "values-namespaced.yaml"], ids=["default", "namespaced"])
def test_helm_lint_is_clean(values):
    args = ["lint", "--strict", str(CHART)] + (["-f", str(CHART / values)] if values else [])
    result = run("helm", *args)
    assert "0 chart(s) failed" in result.stdout and "[WARNING]" not in result.stdout


def _docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def test_cluster_mode_renders_a_cluster_role_with_the_operator_rules():
    docs = _docs(helm_template())
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "NetworkPolicy", "PodDisruptionBudget",
                     "Service", "ServiceAccount"]
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    assert role["rules"] == operator_rules(peering=False)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["--log-format=json", "--all-namespaces", "--standalone"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert {k: env.get(k) for k in OPERATOR_ENV} == OPERATOR_ENV  # the allocator settings, as the builder sets them


def _operator_env(docs: list[dict]) -> dict[str, str]:
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_image_defaults_are_the_api_packages():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert f"{values['image']['repository']}:{chart['appVersion']}" == images.OPERATOR_IMAGE
    assert values["trainer"]["image"] == images.TRAINER_IMAGE
    assert values["runtimes"] == {name: {"image": image} for name, image in images.INSTALL_RUNTIME_IMAGES.items()}
    # The chart and the kustomize base configure the operator alike.
    kustomize = _docs((REPO_ROOT / "manifests" / "base" / "operator.yaml").read_text())
    images_env = ("CODEX_TRAINER_IMAGE", "CODEX_RUNTIME_IMAGES")
    assert {k: _operator_env(_docs(helm_template()))[k] for k in images_env} == {
        k: _operator_env(kustomize)[k] for k in images_env}
    assert _operator_env(kustomize)["CODEX_RUNTIME_IMAGES"] == (
        "builtin=ghcr.io/codex-operator/codex-serve:0.1.0,vllm=vllm/vllm-openai:v0.32.0")


def test_any_runtime_can_be_given_an_image():
    env = _operator_env(_docs(helm_template("--set", "runtimes.llama-cpp.image=registry.example/llama:1",
                                            "--set", "runtimes.vllm.image=registry.example/vllm:2")))
    assert env["CODEX_RUNTIME_IMAGES"] == ("builtin=ghcr.io/codex-operator/codex-serve:0.1.0,"
                                           "llama-cpp=registry.example/llama:1,vllm=registry.example/vllm:2")


def test_namespaced_mode_renders_roles_only_in_watched_namespaces():
    docs = _docs(helm_template("-f", str(CHART / "values-namespaced.yaml")))
    assert not [d for d in docs if d["kind"].startswith("Cluster")]
    roles = [d for d in docs if d["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["ml-team-a", "ml-team-b"]
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["--log-format=json", "--namespace=ml-team-a", "--namespace=ml-team-b",
                                 "--standalone"]


def test_replicas_turn_on_peering():
    docs = _docs(helm_template("--set", "replicaCount=2"))
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "--peering=codex-operator" in container["args"]
    assert any(d["kind"] == "ClusterKopfPeering" for d in docs)
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    assert any("clusterkopfpeerings" in r["resources"] for r in role["rules"])


def test_optional_parts_render():
    docs = _docs(helm_template("--set", "metrics.serviceMonitor.enabled=true", "--set", "dashboard.enabled=true"))
    kinds = {d["kind"] for d in docs}
    assert {"ServiceMonitor", "ConfigMap"} <= kinds
    dashboard = next(d for d in docs if d["kind"] == "ConfigMap")
    assert json.loads(dashboard["data"]["codex-operator.json"])["uid"] == "codex-operator"


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "watch.mode=everywhere"], "at '/watch/mode': value must be one of 'cluster', 'namespaces'"),
    (["--set", "watch.mode=namespaces"], "at '/watch/namespaces': minItems: got 0, want 1"),
    (["--set", "replicaCount=0"], "at '/replicaCount': minimum: got 0, want 1"),
    (["--set", "trainer.resources.memory=lots"], "at '/trainer/resources/memory'"),
    (["--set", "image.pullPolicy=Sometimes"], "at '/image/pullPolicy'"),
    (["--set", "typo=1"], "additional properties 'typo' not allowed"),
    (["--set", "runtimes.vllm.image=vllm=1"], "at '/runtimes/vllm/image'"),
    (["--set", "runtimes.Bad_Name.image=x"], "invalid propertyName 'Bad_Name'"),
    (["--set", "serve.image=x"], "additional properties 'image' not allowed"),
], ids=["mode", "namespaces", "replicas", "memory", "pull-policy", "unknown-key", "runtime-image",
        "runtime-name", "old-serve-image"])
def test_bad_values_fail_with_a_clear_message(args, message):
    result = run("helm", "template", "x", str(CHART), *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_chart_crds_are_the_generated_ones():
    for crd in (REPO_ROOT / "crds").glob("*.yaml"):
        assert (CHART / "crds" / crd.name).read_text() == crd.read_text()


@pytest.mark.parametrize("overlay", ["cluster-wide", "namespaced"])
def test_kustomize_overlays_build(overlay):
    docs = _docs(run("kubectl", "kustomize", f"manifests/overlays/{overlay}").stdout)
    kinds = {d["kind"] for d in docs}
    assert {"CustomResourceDefinition", "Deployment", "ServiceAccount", "Service"} <= kinds
    assert ("ClusterRole" in kinds) == (overlay == "cluster-wide")


def test_dashboard_queries_only_codex_metrics():
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(expressions) >= 10
    for expr in expressions:
        assert re.search(r"\bcodex_[a-z0-9_]+", expr), expr
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("phase", "progress", "loss", "duration", "gate", "ready", "request rate", "latency", "tokens"):
        assert topic in titles
