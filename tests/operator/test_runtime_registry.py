"""The runtime registry: every catalogue entry (codex_api.runtimes) has its builder, reaches the CRD, and
adding one is one catalogue entry plus one module, proved on a copy of the packages with a throwaway
runtime added exactly that way."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from codex_api import CodexModel, SpecError, crdgen, parse, runtimes
from op_examples import example

from codex_operator.config import OperatorConfig
from codex_operator.promotion import resolve
from codex_operator.runtimes import REGISTRY
from codex_operator.sync_models import build_model_children

REPO_ROOT = Path(__file__).resolve().parents[2]
CFG = OperatorConfig(trainer_image="registry.example/codex-trainer:1.0")


def runtime_schema(crd: dict) -> dict:
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec["properties"]["runtime"]


def test_every_catalogue_runtime_has_a_builder_and_is_in_the_crd():
    assert list(REGISTRY) == list(runtimes.NAMES) == ["builtin", "vllm"]
    schema = runtime_schema(crdgen.model_crd())
    assert schema["enum"] == ["builtin", "vllm"]
    assert schema["description"] == ("runtime is builtin (codex-serve, CPU or GPU) or vllm (GPU). "
                                     "Defaults to builtin.")
    rules = crdgen.model_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "x-kubernetes-validations"]
    # Both load an embedded base (vLLM through an init container that copies it from the trainer image).
    assert [r["message"] for r in rules if r.get("fieldPath") == ".runtime"] == []


@pytest.mark.parametrize(("runtime", "image"), [("builtin", "registry.example/codex-trainer:1.0"),
                                                ("vllm", "vllm/vllm-openai:v0.32.0")], ids=["builtin", "vllm"])
def test_each_runtime_builds_its_deployment_with_its_default_image(runtime, image):
    body = example("model-hub-vllm.yaml", "CodexModel")
    body["spec"]["runtime"] = runtime
    model = parse(CodexModel, body)
    deployment = build_model_children(model, resolve(model, []), CFG)["Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == image
    overridden = OperatorConfig(runtime_images={runtime: "registry.example/mine:2"})
    deployment = build_model_children(model, resolve(model, []), overridden)["Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/mine:2"


# The whole of adding a runtime: its catalogue entry and its module.
ENTRY = ('    Runtime(name="echo-server", description="a test double", default_image="registry.example/echo:1", '
         'loads_embedded=False),\n')
MODULE = '''"""A throwaway runtime: the builtin Deployment with another command."""
from ..builders.deployment import build_deployment as build_serving_deployment


def build_deployment(model, resolution, cfg):
    deployment = build_serving_deployment(model, resolution.base_model, resolution.served_adapter, cfg)
    deployment["spec"]["template"]["spec"]["containers"][0]["command"] = ["echo-server"]
    return deployment
'''
# Runs on the copy: what the CRD, validation and the operator's registry make of the new runtime.
PROBE = '''
import json
from codex_api import CodexModel, SpecError, crdgen, parse
from codex_operator.config import OperatorConfig
from codex_operator.promotion import resolve
from codex_operator.runtimes import REGISTRY
from codex_operator.sync_models import build_model_children

spec = crdgen.model_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
body = {"metadata": {"name": "echo", "namespace": "team-a"}, "spec": {
    "runtime": "echo-server", "baseModel": {"hub": "org/base"}, "adapter": {"hub": {"repoId": "org/adapter"}}}}
model = parse(CodexModel, body)
container = build_model_children(model, resolve(model, []), OperatorConfig())["Deployment"]["spec"]["template"][
    "spec"]["containers"][0]
body["spec"]["baseModel"] = {"embedded": "tiny-llama"}
try:
    parse(CodexModel, body)
    refused = None
except SpecError as error:
    refused = str(error)
print(json.dumps({"enum": spec["properties"]["runtime"]["enum"],
                  "description": spec["properties"]["runtime"]["description"],
                  "rules": [r["rule"] for r in spec["x-kubernetes-validations"] if r.get("fieldPath") == ".runtime"],
                  "refused": refused, "registry": sorted(REGISTRY),
                  "image": container["image"], "command": container["command"]}))
'''


def add_throwaway_runtime(root: Path) -> None:
    """Copy the API and operator packages under ``root`` and add a runtime the documented way."""
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO_ROOT / "api" / "codex_api", root / "api" / "codex_api", ignore=ignore)
    shutil.copytree(REPO_ROOT / "operator" / "codex_operator", root / "operator" / "codex_operator", ignore=ignore)
    catalogue = root / "api" / "codex_api" / "runtimes.py"
    end_of_entries = ")\nBY_NAME"
    text = catalogue.read_text()
    assert text.count(end_of_entries) == 1, "the end of the catalogue's RUNTIMES moved; update this test"
    catalogue.write_text(text.replace(end_of_entries, ENTRY + end_of_entries))
    (root / "operator" / "codex_operator" / "runtimes" / "echo_server.py").write_text(MODULE)


def test_a_throwaway_runtime_is_one_entry_and_one_module(tmp_path):
    add_throwaway_runtime(tmp_path)
    env = {"PYTHONPATH": f"{tmp_path / 'api'}:{tmp_path / 'operator'}", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["enum"] == ["builtin", "vllm", "echo-server"]
    assert seen["description"] == ("runtime is builtin (codex-serve, CPU or GPU), vllm (GPU) or echo-server (a test "
                                   "double). Defaults to builtin.")
    assert seen["rules"] == [
        "!has(self.runtime) || self.runtime != 'echo-server' || !has(self.baseModel) || !has(self.baseModel.embedded)"]
    assert seen["refused"] == "spec.runtime: the echo-server runtime cannot load an embedded model; use hub or pvc"
    assert seen["registry"] == ["builtin", "echo-server", "vllm"]
    assert (seen["image"], seen["command"]) == ("registry.example/echo:1", ["echo-server"])


def test_a_catalogue_entry_without_its_module_fails_at_import_naming_the_file(tmp_path):
    add_throwaway_runtime(tmp_path)
    (tmp_path / "operator" / "codex_operator" / "runtimes" / "echo_server.py").unlink()
    env = {"PYTHONPATH": f"{tmp_path / 'api'}:{tmp_path / 'operator'}", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", "import codex_operator.runtimes"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode != 0
    assert "add operator/codex_operator/runtimes/echo_server.py" in result.stderr


def test_an_unknown_runtime_is_refused_naming_the_field():
    body = example("model.yaml", "CodexModel")
    body["spec"]["runtime"] = "echo-server"
    with pytest.raises(SpecError, match="^spec.runtime: Input should be 'builtin' or 'vllm'"):
        parse(CodexModel, body)
