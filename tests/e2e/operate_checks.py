"""Day-2 checks on the objects a real flow left behind (see test_operating_what_the_flow_left)."""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.request
from pathlib import Path

from e2e_support import REPO_ROOT, get

sys.path.insert(0, str(REPO_ROOT / "tests"))
from install.argocd import health  # noqa: E402

import hardening  # noqa: E402  (tools/ is on sys.path)

CAPTURED = REPO_ROOT / "tests" / "install" / "argocd_captured"
DASHBOARD = REPO_ROOT / "helm" / "codex-operator" / "files" / "dashboard.json"
# Fields the API server adds to every object, whatever the client sent.
SERVER_FIELDS = ("status",)


def assert_spec_unchanged(cluster, namespace: str, kind: str, applied: dict) -> None:
    """Argo CD sync safety: the operator wrote only status, so the spec is what was applied."""
    live = get(cluster, kind, applied["metadata"]["name"], namespace)
    # generation counts spec writes: 1 means nobody changed the spec since it was created.
    assert live["metadata"]["generation"] == 1
    # The apiserver keeps the applied values, rendering integral floats (0.0) as integers (0).
    assert live["spec"] == applied["spec"]
    assert live["metadata"].get("labels", {}) == applied["metadata"].get("labels", {})


def assert_health(cluster, namespace: str, kind: str, name: str, expected: str, capture: str) -> None:
    """The Argo CD Lua health check, on Lua 5.1, judges the live object; with
    CODEX_CAPTURE_ARGOCD=1 the object is saved for tests/install/test_argocd_health.py."""
    live = get(cluster, kind, name, namespace)
    assert health(live)["status"] == expected, (health(live), live.get("status"))
    if os.environ.get("CODEX_CAPTURE_ARGOCD") == "1":
        CAPTURED.mkdir(exist_ok=True)
        keep = {"apiVersion": live["apiVersion"], "kind": live["kind"],
                "metadata": {"name": name, "generation": live["metadata"]["generation"]},
                "status": live["status"]}
        (CAPTURED / f"{capture}.json").write_text(json.dumps({"expected": expected, "object": keep}, indent=2) + "\n")


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count"),
            "gauge": ("",), "untyped": ("",)}


def _sample_names(text: str) -> set[str]:
    """Sample names on the page, plus those its `# TYPE` lines declare (a labelled metric with no
    observation yet has no samples, but the endpoint exports it all the same)."""
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            base = name[: -len("_total")] if kind == "counter" and name.endswith("_total") else name
            names |= {base + suffix for suffix in SUFFIXES.get(kind.strip(), ("",))}
    return names


def _scrape(url: str, headers: dict | None = None) -> set[str]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return _sample_names(response.read().decode())


def assert_dashboard_metrics_exported(cluster, namespace: str, operator, server_url: str, api_key: str) -> None:
    """Every metric the Grafana dashboard queries is exported by the real /metrics endpoints."""
    pod = cluster.get_json("pod", operator.pod_name(), "-n", operator.namespace)
    exported = _scrape(f"http://{pod['status']['podIP']}:9090/metrics")
    exported |= _scrape(f"{server_url}/metrics")
    dashboard = json.loads(DASHBOARD.read_text())
    wanted = {name for panel in dashboard["panels"] for target in panel["targets"]
              for name in re.findall(r"\bcodex_[a-z0-9_]+", target["expr"])}
    assert wanted and not wanted - exported, f"not exported: {sorted(wanted - exported)}"


def assert_hardened(objects: list[dict]) -> None:
    """The generated workloads pass the hardening scan (tools/hardening.py; exclusions justified)."""
    findings = hardening.unexcused(objects)
    assert findings == [], "\n".join(map(str, findings))
