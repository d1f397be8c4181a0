"""The node agent runs pods the way a kubelet would: volumes, env, probes, restarts, termination."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from localcluster.procs import pids_with

pytestmark = pytest.mark.cluster

TRAINER = "codex-trainer:test"

# Runs inside the pod: reports what it sees at the spec'd paths as JSON in its termination message.
INSPECT = r"""
import json, os, stat
def read(path):
    return open(path).read()
def mode(path):
    return oct(stat.S_IMODE(os.stat(path).st_mode))
def write(path):
    try:
        open(path, 'w').write('persisted')
        return 'ok'
    except OSError as err:
        return err.strerror
names = ['GREETING', 'MODE', 'TOKEN', 'NS', 'IP_IN_CIDR', 'NODE', 'APP', 'NOTE', 'MEM_MI', 'CPU_M', 'CFG_mode',
         'API_KEY', 'CUDA_VISIBLE_DEVICES', 'KUBERNETES_SERVICE_HOST', 'UID_SET']
report = {
    'env': {name: os.environ.get(name) for name in names},
    'files': {
        'model': read('/etc/codex/settings/conf/model.yaml'),
        'model_mode': mode('/etc/codex/settings/conf/model.yaml'),
        'token': read('/etc/codex/creds/token'),
        'labels': read('/etc/podinfo/labels'),
        'app_mode': read('/etc/app-mode'),
        'sa_namespace': read('/var/run/secrets/kubernetes.io/serviceaccount/namespace') == os.environ['NS'],
        'ca': read('/var/run/secrets/kubernetes.io/serviceaccount/ca.crt').startswith('-----BEGIN CERTIFICATE-----'),
    },
    'writes': {'creds': write('/etc/codex/creds/new'), 'data': write('/data/out.txt'),
               'scratch': write('/scratch/tmp.txt')},
    'cwd': os.getcwd(), 'groups': 2000 in os.getgroups(),
}
open('/dev/termination-log', 'w').write(json.dumps(report, sort_keys=True))
"""


def _wait_status(cluster, namespace: str, name: str, predicate, what: str, timeout: float = 60):
    return cluster.wait_for(f"pod {name}: {what}", lambda: (
        lambda pod: pod if predicate(pod) else None)(cluster.get_json(f"pod/{name}", "-n", namespace)), timeout)


def _report_of(cluster, namespace: str, pod: dict) -> dict:
    """Run ``pod`` to its end; the JSON report its container wrote as termination message (exit 0 asserted)."""
    name = pod["metadata"]["name"]
    cluster.apply(pod, namespace=namespace)
    done = _wait_status(cluster, namespace, name, lambda p: p["status"].get("phase") in ("Succeeded", "Failed"),
                        "finish")
    terminated = _container(done)["state"]["terminated"]
    assert terminated["exitCode"] == 0, terminated
    return json.loads(terminated["message"])


def _container(pod: dict) -> dict:
    return (pod["status"].get("containerStatuses") or [{}])[0]


def test_volumes_and_env_appear_at_the_specd_paths(cluster, cluster_namespace):
    ns = cluster_namespace
    settings = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
                "data": {"mode": "train", "model.yaml": "r: 8\n"}}
    creds = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
             "stringData": {"token": "s3cret", "API_KEY": "k-123"}}
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Mi"}}}}
    field = lambda path: {"valueFrom": {"fieldRef": {"fieldPath": path}}}  # noqa: E731
    resources = {"cpu": "1500m", "memory": "256Mi", "nvidia.com/gpu": "1"}
    container = {
        "name": "main", "image": TRAINER, "workingDir": "/scratch",
        "command": ["python", "-c", INSPECT], "resources": {"limits": resources, "requests": resources},
        "env": [
            {"name": "POD_NAME", **field("metadata.name")},
            {"name": "GREETING", "value": "hello $(POD_NAME) $$(kept)"},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "NS", **field("metadata.namespace")}, {"name": "IP", **field("status.podIP")},
            {"name": "NODE", **field("spec.nodeName")}, {"name": "APP", **field("metadata.labels['app']")},
            {"name": "NOTE", **field("metadata.annotations['codex.dev/note']")},
            {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "CPU_M", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
            {"name": "IP_IN_CIDR", "value": "$(IP)"},
        ],
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}, {"secretRef": {"name": "creds"}}],
        "volumeMounts": [
            {"name": "settings", "mountPath": "/etc/codex/settings"},
            {"name": "creds", "mountPath": "/etc/codex/creds", "readOnly": True},
            {"name": "data", "mountPath": "/data"},
            {"name": "scratch", "mountPath": "/scratch"},
            {"name": "podinfo", "mountPath": "/etc/podinfo"},
            {"name": "all-settings", "mountPath": "/etc/app-mode", "subPath": "mode"},
        ],
    }
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "inspect", "labels": {"app": "inspector"}, "annotations": {"codex.dev/note": "hi"}},
        "spec": {"restartPolicy": "Never", "securityContext": {"fsGroup": 2000}, "containers": [container],
                 "volumes": [
                     {"name": "settings", "configMap": {"name": "settings", "defaultMode": 0o400,
                                                        "items": [{"key": "model.yaml", "path": "conf/model.yaml"}]}},
                     {"name": "creds", "secret": {"secretName": "creds"}},
                     {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                     {"name": "scratch", "emptyDir": {}},
                     {"name": "podinfo", "downwardAPI": {"items": [
                         {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                     {"name": "all-settings", "configMap": {"name": "settings"}},
                 ]},
    }
    cluster.apply(settings, creds, claim, pod, namespace=ns)
    done = _wait_status(cluster, ns, "inspect", lambda p: p["status"].get("phase") in ("Succeeded", "Failed"),
                        "finish", timeout=90)
    terminated = _container(done)["state"]["terminated"]
    assert terminated["exitCode"] == 0, cluster.pod_logs(ns, "inspect")
    report = json.loads(terminated["message"])
    ip = done["status"]["podIP"]
    assert report == {
        "env": {"GREETING": "hello inspect $(kept)", "MODE": "train", "TOKEN": "s3cret", "NS": ns, "IP_IN_CIDR": ip,
                "NODE": done["spec"]["nodeName"], "APP": "inspector", "NOTE": "hi", "MEM_MI": "256", "CPU_M": "1500",
                "CFG_mode": "train", "API_KEY": "k-123", "CUDA_VISIBLE_DEVICES": "0",
                "KUBERNETES_SERVICE_HOST": cluster.network.apiserver_service_ip if cluster.network.real
                else "127.0.0.1", "UID_SET": None},
        "files": {"model": "r: 8\n", "model_mode": "0o440", "token": "s3cret", "labels": 'app="inspector"',
                  "app_mode": "train", "sa_namespace": True, "ca": True},
        "writes": {"creds": "Read-only file system", "data": "ok", "scratch": "ok"},
        "cwd": "/scratch", "groups": True,
    }
    # The claim was really provisioned and bound, and the write landed in the PV's host directory.
    pvc = cluster.get_json("pvc/data", "-n", ns)
    assert pvc["status"]["phase"] == "Bound"
    host_path = Path(cluster.get_json(f"pv/{pvc['spec']['volumeName']}")["spec"]["hostPath"]["path"])
    assert (host_path / "out.txt").read_text() == "persisted"


def test_liveness_failure_restarts_the_container(cluster, cluster_namespace):
    ns = cluster_namespace
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "unhealthy"}, "spec": {
        "terminationGracePeriodSeconds": 1,
        "containers": [{
            "name": "main", "image": TRAINER, "command": ["python", "-c", "import time; print('up', flush=True); time.sleep(600)"],
            # Nothing listens on 9: the probe fails, and the kubelet's answer is a restart.
            "livenessProbe": {"tcpSocket": {"port": 9}, "periodSeconds": 1, "failureThreshold": 2},
        }]}}
    cluster.apply(pod, namespace=ns)
    restarted = _wait_status(cluster, ns, "unhealthy", lambda p: _container(p).get("restartCount", 0) >= 1,
                             "restarted by its liveness probe", timeout=60)
    last = _container(restarted)["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (143, "Error")  # SIGTERM
    events = cluster.get_json("events", "-n", ns, "--field-selector", "involvedObject.name=unhealthy")["items"]
    reasons = {e["reason"]: e["message"] for e in events}
    assert reasons["Unhealthy"].startswith("Liveness probe failed:")
    assert reasons["Killing"] == "Container main failed liveness probe, will be restarted"
    assert cluster.pod_logs(ns, "unhealthy", previous=True) == "up\n"


def _scratch_pod(name: str, script: str, spec: dict, **container) -> dict:
    """A Pod whose ``main`` container runs ``script`` with an emptyDir at /scratch; ``spec`` and
    ``container`` add to the pod's and the container's fields."""
    main = {"name": "main", "image": TRAINER, "command": ["python", "-c", script],
            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}], **container}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {**spec, "containers": [main], "volumes": [{"name": "scratch", "emptyDir": {}}]}}


def test_readiness_follows_an_exec_probe(cluster, cluster_namespace):
    ns = cluster_namespace
    script = ("import os, time; open('/scratch/ready', 'w').close(); time.sleep(5); "
              "os.remove('/scratch/ready'); time.sleep(600)")
    pod = _scratch_pod("flaky", script, {"terminationGracePeriodSeconds": 1},
                       readinessProbe={"exec": {"command": ["test", "-f", "/scratch/ready"]}, "periodSeconds": 1})
    cluster.apply(pod, namespace=ns)
    ready = lambda p: any(c["type"] == "Ready" and c["status"] == "True"  # noqa: E731
                          for c in p["status"].get("conditions") or [])
    _wait_status(cluster, ns, "flaky", ready, "Ready", timeout=60)
    unready = _wait_status(cluster, ns, "flaky", lambda p: not ready(p), "not Ready again", timeout=30)
    assert unready["status"]["phase"] == "Running" and _container(unready)["restartCount"] == 0


def test_on_failure_restarts_until_success(cluster, cluster_namespace):
    ns = cluster_namespace
    script = ("import os, sys\nif not os.path.exists('/scratch/tried'):\n"
              "    open('/scratch/tried', 'w').close(); print('first try fails'); sys.exit(1)\nprint('second try')")
    pod = _scratch_pod("retry", script, {"restartPolicy": "OnFailure"})
    cluster.apply(pod, namespace=ns)
    done = _wait_status(cluster, ns, "retry", lambda p: p["status"].get("phase") == "Succeeded", "Succeeded")
    status = _container(done)
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert status["state"]["terminated"]["exitCode"] == 0
    assert cluster.pod_logs(ns, "retry") == "second try\n"
    assert cluster.pod_logs(ns, "retry", previous=True) == "first try fails\n"


@pytest.mark.parametrize("handles_sigterm", [True, False], ids=["exits-on-sigterm", "ignores-sigterm"])
def test_deletion_sends_sigterm_then_sigkill(cluster, cluster_namespace, handles_sigterm):
    ns = cluster_namespace
    marker = f"marker-{ns}"
    handler = ("lambda *_: (print('got SIGTERM', flush=True), sys.exit(0))" if handles_sigterm
               else "signal.SIG_IGN")
    script = (f"import signal, sys, time  # {marker}\nsignal.signal(signal.SIGTERM, {handler})\n"
              "print('serving', flush=True)\ntime.sleep(600)")
    grace = 30 if handles_sigterm else 3
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "graceful"}, "spec": {
        "terminationGracePeriodSeconds": grace,
        "containers": [{"name": "main", "image": TRAINER, "command": ["python", "-c", script]}]}}
    cluster.apply(pod, namespace=ns)
    cluster.wait_for("the pod to start serving", lambda: "serving" in _logs(cluster, ns, "graceful"), timeout=60)
    assert pids_with(marker)

    started = time.monotonic()
    cluster.kubectl("delete", "pod", "graceful", "-n", ns, "--timeout=30s")
    took = time.monotonic() - started
    assert not pids_with(marker)
    if handles_sigterm:
        assert took < 10, took  # well inside the 30 s grace period: the process left on SIGTERM
        assert cluster.pod_logs(ns, "graceful") == "serving\ngot SIGTERM\n"
    else:
        assert 3 <= took < 15, took  # SIGKILL after the 3 s grace period


def test_pre_stop_hooks_run_before_sigterm(cluster, cluster_namespace):
    """kubelet's order on deletion: each container's preStop hook, then SIGTERM. An exec hook leaves
    a file the process looks for on SIGTERM; a failing hook is reported and stops nothing."""
    ns = cluster_namespace
    script = ("import os, signal, sys, time\n"
              "signal.signal(signal.SIGTERM, lambda *_: (print('SIGTERM after hook:', os.path.exists('/work/hooked'),"
              " flush=True), sys.exit(0)))\nprint('serving', flush=True)\ntime.sleep(600)")
    hooks = {"exec": {"exec": {"command": ["python", "-c", "open('/work/hooked', 'w').write('x')"]}},
             "failing": {"exec": {"command": ["python", "-c", "raise SystemExit(3)"]}},
             "sleep": {"sleep": {"seconds": 1}}}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hooked"}, "spec": {
        "terminationGracePeriodSeconds": 20, "volumes": [{"name": "work", "emptyDir": {}}],
        "containers": [{"name": name, "image": TRAINER, "command": ["python", "-c", script],
                        "volumeMounts": [{"name": "work", "mountPath": "/work"}], "lifecycle": {"preStop": hook}}
                       for name, hook in hooks.items()]}}
    cluster.apply(pod, namespace=ns)
    for name in hooks:
        cluster.wait_for(f"{name} serving", lambda n=name: "serving" in _logs_of(cluster, ns, "hooked", n), timeout=60)
    cluster.kubectl("delete", "pod", "hooked", "-n", ns, "--timeout=30s")
    assert cluster.pod_logs(ns, "hooked", "exec") == "serving\nSIGTERM after hook: True\n"
    assert cluster.pod_logs(ns, "hooked", "sleep").startswith("serving\nSIGTERM after hook:")
    failed = [e for e in cluster.get_json("events", "-n", ns)["items"] if e["reason"] == "FailedPreStopHook"]
    assert [e["involvedObject"].get("fieldPath") for e in failed] == ["spec.containers{failing}"], failed


def _logs_of(cluster, namespace: str, pod: str, container: str) -> str:
    try:
        return cluster.pod_logs(namespace, pod, container)
    except LookupError:
        return ""


def _logs(cluster, namespace: str, pod: str) -> str:
    try:
        return cluster.pod_logs(namespace, pod)
    except LookupError:
        return ""


def test_unrunnable_image_stays_pending_with_a_reason(cluster, cluster_namespace):
    # vLLM runs here only at the release of the cached vLLM environment; an older tag is another image.
    ns = cluster_namespace
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "vllm"}, "spec": {
        "containers": [{"name": "server", "image": "vllm/vllm-openai:v0.6.3", "args": ["--model", "x"]}]}}
    cluster.apply(pod, namespace=ns)
    waiting = _wait_status(cluster, ns, "vllm", lambda p: _container(p).get("state", {}).get("waiting"),
                           "a waiting reason")
    assert waiting["status"]["phase"] == "Pending"
    assert _container(waiting)["state"]["waiting"]["reason"] == "ImageNotRunnable"
    assert "image not runnable by the local node: vllm/vllm-openai:v0.6.3" in \
        _container(waiting)["state"]["waiting"]["message"]
    events = cluster.get_json("events", "-n", ns, "--field-selector", "involvedObject.name=vllm")["items"]
    assert any(e["reason"] == "ImageNotRunnable" and e["type"] == "Warning" for e in events), events


def test_missing_secret_is_a_config_error_until_it_exists(cluster, cluster_namespace):
    ns = cluster_namespace
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "needs-secret"}, "spec": {
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": TRAINER,
                        "command": ["python", "-c", "import os; print(os.environ['TOKEN'])"],
                        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "later", "key": "token"}}}]}]}}
    cluster.apply(pod, namespace=ns)
    waiting = _wait_status(cluster, ns, "needs-secret", lambda p: _container(p).get("state", {}).get(
        "waiting", {}).get("reason") == "CreateContainerConfigError", "CreateContainerConfigError")
    assert _container(waiting)["state"]["waiting"]["message"] == 'secret "later" not found'
    assert waiting["status"]["phase"] == "Pending"

    cluster.kubectl("create", "secret", "generic", "later", "--from-literal=token=finally", "-n", ns)
    done = _wait_status(cluster, ns, "needs-secret", lambda p: p["status"].get("phase") == "Succeeded",
                        "Succeeded once the Secret exists", timeout=60)
    assert _container(done)["state"]["terminated"]["exitCode"] == 0
    assert cluster.pod_logs(ns, "needs-secret") == "finally\n"


def test_init_containers_run_in_order_and_the_sidecar_ends_with_the_pod(cluster, cluster_namespace):
    ns = cluster_namespace
    step = lambda name, script, **extra: {"name": name, "image": TRAINER, "command": ["python", "-c", script],  # noqa
                                          "volumeMounts": [{"name": "work", "mountPath": "/work"}], **extra}
    sidecar_script = ("import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
                      "open('/work/sidecar', 'w').write('up')\ntime.sleep(600)")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ordered"}, "spec": {
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
        "initContainers": [
            step("first", "open('/work/steps', 'a').write('first,')"),
            step("second", "open('/work/steps', 'a').write('second,')"),
            # Started (and so letting `main` run) once its startup probe sees the file.
            step("sidecar", sidecar_script, restartPolicy="Always",
                 startupProbe={"exec": {"command": ["test", "-f", "/work/sidecar"]}, "periodSeconds": 1}),
        ],
        "containers": [step("main", "import os; open('/dev/termination-log', 'w').write("
                                    "open('/work/steps').read() + open('/work/sidecar').read())")],
        "volumes": [{"name": "work", "emptyDir": {}}]}}
    cluster.apply(pod, namespace=ns)
    done = _wait_status(cluster, ns, "ordered", lambda p: p["status"].get("phase") in ("Succeeded", "Failed"),
                        "finish", timeout=60)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert _container(done)["state"]["terminated"]["message"] == "first,second,up"
    init = {s["name"]: s["state"]["terminated"] for s in done["status"]["initContainerStatuses"]}
    assert [init[n]["reason"] for n in ("first", "second", "sidecar")] == ["Completed"] * 3


def test_empty_dir_over_tmp_keeps_python_and_home(cluster, cluster_namespace):
    """A common hardened pod: non-root, /tmp an emptyDir. The agent's workdir may live in /tmp too."""
    ns = cluster_namespace
    script = ("import json, os; open('/tmp/scratch', 'w').write('x'); "
              "open('/dev/termination-log', 'w').write(json.dumps({'tmp': sorted(os.listdir('/tmp')), "
              "'home_writable': os.access(os.environ['HOME'], os.W_OK), 'uid': os.getuid()}))")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hardened"}, "spec": {
        "restartPolicy": "Never", "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
        "containers": [{"name": "main", "image": TRAINER, "command": ["python", "-c", script],
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}],
        "volumes": [{"name": "tmp", "emptyDir": {}}]}}
    report = _report_of(cluster, ns, pod)
    assert report["home_writable"] and report["uid"] == 1000
    assert "scratch" in report["tmp"]


def test_read_only_root_filesystem_leaves_only_the_volumes_and_home_writable(cluster, cluster_namespace):
    """readOnlyRootFilesystem: the host's files the container sees (a PV's directory among them, which
    is world-writable) are read-only to it, as under a container runtime; its volumes are not."""
    ns = cluster_namespace
    target = Path("/var/tmp") / f"codex-escape-{ns}"  # world-writable on the host, as a PV's directory is
    target.mkdir(exist_ok=True)
    target.chmod(0o777)
    script = ("import json, os\n"
              "def write(path):\n"
              "    try:\n"
              "        open(path, 'w').write('x'); os.remove(path); return 'ok'\n"
              "    except OSError as err:\n"
              "        return err.strerror\n"
              f"targets = {{'scratch': '/scratch/x', 'home': os.path.join(os.environ['HOME'], 'x'),"
              f" 'state': {str(target / 'escape.txt')!r}, 'var_tmp': '/var/tmp/escape.txt',"
              " 'dev_shm': '/dev/shm/escape.txt', 'root': '/escape.txt'}\n"
              "open('/dev/termination-log', 'w').write(json.dumps({k: write(v) for k, v in targets.items()}))\n")
    security = {"runAsNonRoot": True, "runAsUser": 65532, "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "read-only-root"}, "spec": {
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": TRAINER, "command": ["python", "-c", script],
                        "securityContext": security, "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}],
        "volumes": [{"name": "scratch", "emptyDir": {}}]}}
    report = _report_of(cluster, ns, pod)
    assert report == {"scratch": "ok", "home": "ok", "state": "Read-only file system",
                      "var_tmp": "Read-only file system", "dev_shm": "Read-only file system",
                      "root": "Read-only file system"}
    assert not (target / "escape.txt").exists()
    target.rmdir()
