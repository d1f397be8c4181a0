"""Changing a run's spec after it started: training fields are refused by the apiserver (CEL),
what a live Job can take is applied, and what it cannot is explained in a condition."""

from __future__ import annotations

import json

import pytest
import yaml
from e2e_support import condition, get, sample_data, status_of, tiny_run, wait

pytestmark = pytest.mark.cluster
# How the operator is installed for this module (see conftest.py).
INSTALL = "kustomize"
NAMESPACE_OBJECTS = sample_data()  # in each test's own namespace (see conftest.py)


def patch(cluster, namespace: str, body: dict, check: bool = True):
    return cluster.kubectl("patch", "cxrun", "held", "-n", namespace, "--type=merge", "-p", json.dumps(body),
                           check=check)


def test_spec_changes_are_applied_or_explained(cluster, namespace, operator):
    run = tiny_run("held")
    run["spec"]["job"]["suspend"] = True
    cluster.apply(run, namespace=namespace)
    wait("the suspended run", lambda: condition(status_of(cluster, "cxrun", "held", namespace), "Ready").get(
        "reason") == "Suspended", 90)

    refused = patch(cluster, namespace, {"spec": {"training": {"learningRate": 0.01}}}, check=False)
    assert refused.returncode != 0 and "spec.training is immutable" in refused.stderr

    patch(cluster, namespace, {"spec": {"evaluation": {"thresholds": {"logicOk": 0.25}}}})

    def rendered_threshold():
        data = get(cluster, "configmap", "held-spec", namespace)["data"]["run.yaml"]
        return yaml.safe_load(data)["spec"]["evaluation"]["thresholds"]["logicOk"] == 0.25
    wait("the spec file to carry the new threshold (read by the next attempt)", rendered_threshold, 60)
    assert condition(status_of(cluster, "cxrun", "held", namespace), "SpecApplied")["status"] == "True"

    patch(cluster, namespace, {"spec": {"resources": {"memory": "3Gi"}}})
    applied = wait("SpecApplied to explain the resources change", lambda: (lambda c: c if c.get("reason") ==
                   "PodTemplateChanged" else None)(condition(status_of(cluster, "cxrun", "held", namespace),
                                                             "SpecApplied")), 60)
    assert applied["status"] == "False" and "not mutated" in applied["message"]
    reasons = [e["reason"] for e in cluster.get_json("events", "-n", namespace, "--field-selector",
                                                     "involvedObject.name=held")["items"]]
    assert "PodTemplateChanged" in reasons

    patch(cluster, namespace, {"spec": {"job": {"suspend": False}}})
    wait("the Job to be unsuspended", lambda: get(cluster, "job", "held-train", namespace)["spec"]["suspend"] is False,
         60)
    wait("the run to leave Suspended", lambda: condition(status_of(cluster, "cxrun", "held", namespace), "Ready").get(
        "reason") != "Suspended", 60)
