"""Pure pieces of the node agent, as tables: no cluster needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from localcluster.agent.config import AgentConfig, entrypoint, image_problem
from localcluster.agent.env import ConfigError, expand, field_value, resource_value
from localcluster.agent.launch import NONROOT_UID, identity
from localcluster.netplan import ClusterNetwork
from localcluster.podnet import PodIps

CONFIG = AgentConfig(state_dir=Path("/nonexistent"), nodes=[], runnable_image_prefixes=("codex-operator",
                     "codex-trainer"), skip_image_prefixes=("codex-trainer-gpu",),
                     network=ClusterNetwork("loopback", loopback_block="127.16.0.0/16"), apiserver_port=6443,
                     image_entrypoints={"registry.k8s.io/coredns/coredns": ["/cache/coredns"]})


@pytest.mark.parametrize("text, expected", [
    ("$(A)-$(B)", "1-two"),
    ("$$(A)", "$(A)"),
    ("$(MISSING)", "$(MISSING)"),
    ("$(A", "$(A"),
    ("cost $5", "cost $5"),
    ("trailing $", "trailing $"),
    ("$(A)$(A)", "11"),
], ids=["two-refs", "escaped", "unknown-kept", "unclosed", "lone-dollar", "trailing-dollar", "adjacent"])
def test_expand_follows_kubernetes_rules(text, expected):
    assert expand(text, {"A": "1", "B": "two"}.get) == expected


@pytest.mark.parametrize("image, problem", [
    ("codex-trainer:0.1", None),
    ("ghcr.io/org/codex-operator:latest", None),
    ("codex-trainer-gpu:0.1", "ImageSkipped"),
    ("vllm/vllm-openai:v0.6.3", "ImageNotRunnable"),
    ("busybox", "ImageNotRunnable"),
], ids=["trainer", "registry-path", "skipped", "vllm", "busybox"])
def test_image_problem(image, problem):
    found = image_problem(image, CONFIG)
    assert (found[0] if found else None) == problem


@pytest.mark.parametrize("image, command", [
    ("codex-operator:dev", ["codex-operator"]),
    ("registry.local/codex-trainer:1", ["codex-train"]),
    ("registry.k8s.io/coredns/coredns:v1.15.0", ["/cache/coredns"]),
    ("other:1", []),
], ids=["operator", "trainer", "cluster-service", "unknown"])
def test_entrypoint_table(image, command):
    assert entrypoint(image, CONFIG) == command


@pytest.mark.parametrize("pod_security, container_security, expected", [
    ({}, {}, (0, 0, [])),
    ({"runAsUser": 1000}, {}, (1000, 0, [])),
    ({"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000, "supplementalGroups": [5]}, {}, (1000, 3000, [5, 2000])),
    ({"runAsUser": 1000}, {"runAsUser": 1001}, (1001, 0, [])),
    ({"runAsNonRoot": True}, {}, (NONROOT_UID, NONROOT_UID, [])),
], ids=["root", "pod-user", "groups", "container-wins", "nonroot-default"])
def test_identity(pod_security, container_security, expected):
    assert identity({"securityContext": pod_security}, {"securityContext": container_security}) == expected


def test_identity_refuses_root_with_run_as_non_root():
    with pytest.raises(ConfigError, match="runAsNonRoot and image will run as root"):
        identity({"securityContext": {"runAsNonRoot": True, "runAsUser": 0}}, {})


POD = {"metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "a", "tier": "b"},
                    "annotations": {"note": "hi"}},
       "spec": {"nodeName": "n", "containers": [{"name": "c", "resources": {"limits": {"memory": "1Gi"},
                                                                             "requests": {"cpu": "250m"}}}]},
       "status": {"podIP": "127.16.0.7"}}


@pytest.mark.parametrize("path, value", [
    ("metadata.name", "p"), ("metadata.namespace", "ns"), ("metadata.uid", "u"),
    ("metadata.labels['app']", "a"), ("metadata.annotations['note']", "hi"), ("metadata.labels['none']", ""),
    ("metadata.labels", 'app="a"\ntier="b"'), ("spec.nodeName", "n"), ("status.podIP", "127.16.0.7"),
])
def test_field_value(path, value):
    assert field_value(POD, path) == value


@pytest.mark.parametrize("ref, value", [
    ({"resource": "limits.memory", "divisor": "1Mi"}, "1024"),
    ({"resource": "requests.cpu", "divisor": "1m"}, "250"),
    ({"resource": "requests.cpu"}, "1"),  # rounded up, as the kubelet does
    ({"resource": "limits.cpu"}, "8"),  # unset limit: node allocatable
])
def test_resource_value(ref, value):
    assert resource_value(POD, ref, "c", {"cpu": "8", "memory": "16Gi"}) == value


def test_pod_ips_are_unique_and_reused_last():
    ips = PodIps("127.16.0.0/30")
    first, second = ips.allocate(), ips.allocate()
    assert (first, second) == ("127.16.0.1", "127.16.0.2")
    ips.release(first)
    assert ips.allocate() == first
    with pytest.raises(RuntimeError, match="exhausted"):
        ips.allocate()
