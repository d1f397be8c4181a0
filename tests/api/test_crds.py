"""The committed CRDs are what the models generate, and they are structural and self-documenting."""

from __future__ import annotations

import pytest
import yaml

from codex_api import crdgen


@pytest.mark.parametrize("filename", sorted(crdgen.CRD_FILES))
def test_committed_crd_matches_models(repo_root, filename):
    committed = (repo_root / "crds" / filename).read_text()
    assert committed == crdgen.render(crdgen.CRD_FILES[filename]), "run `make crds`"


def _walk(node, path="openAPIV3Schema"):
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("builder", [crdgen.training_run_crd, crdgen.model_crd], ids=["run", "model"])
def test_schema_is_structural_and_described(builder):
    crd = builder()
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    text = yaml.safe_dump(schema)
    assert "$ref" not in text and "anyOf" not in text and "allOf" not in text
    for path, node in _walk(schema):
        assert "type" in node, f"{path} has no type"
        if path.count(".") >= 2 and not path.endswith(("]", "}")) and ".metadata" not in path:
            assert node.get("description"), f"{path} has no description"
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["categories"] == ["codex"]
    assert [c["name"] for c in version["additionalPrinterColumns"]][-1] == "Age"


def test_defaults_are_stated_in_descriptions():
    """Every field with a default says so, because the CRD itself carries no defaults (see crdgen)."""
    from pydantic import BaseModel

    from codex_api import CodexModel, CodexTrainingRun

    def check(model: type[BaseModel], seen: set):
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            has_default = not field.is_required() and field.get_default(call_default_factory=True) not in (None, [], {})
            if has_default and name not in ("api_version", "kind", "metadata") and not isinstance(
                field.get_default(call_default_factory=True), BaseModel
            ):
                assert "Default" in field.description, f"{model.__name__}.{name}: description must state the default"
            for arg in _nested_models(field.annotation):
                check(arg, seen)

    for kind in (CodexTrainingRun, CodexModel):
        check(kind, set())


def _nested_models(annotation):
    from typing import get_args

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in get_args(annotation):
        yield from _nested_models(arg)


def test_cel_rules_name_fields():
    crd = crdgen.training_run_crd()
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = {r["message"]: r for r in spec["x-kubernetes-validations"]}
    assert rules["spec.training is immutable once the run has started; create a new run instead"]["rule"].endswith(
        "self.training == oldSelf.training)"
    )
    source = spec["properties"]["dataset"]["properties"]["source"]
    assert source["x-kubernetes-validations"][0]["message"] == "exactly one of hub, pvc, url or configMap must be set"
    conditions = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_transition_rules_are_exactly_the_immutable_fields():
    """The CEL rules come from IMMUTABLE_FIELDS, which the Job builder and the trainer read too."""
    from codex_api.training_run import IMMUTABLE_FIELDS

    spec = crdgen.training_run_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    transition = [rule["fieldPath"] for rule in spec["x-kubernetes-validations"] if "oldSelf" in rule["rule"]]
    assert transition == [f".{name}" for name in IMMUTABLE_FIELDS]
    assert set(IMMUTABLE_FIELDS) <= set(spec["properties"])


def test_api_reference_is_current(repo_root):
    from codex_api import reference

    assert (repo_root / "docs" / "api-reference.md").read_text() == reference.render(), "run `make reference`"


def _unbounded_strings(schema, path):
    """Every string under ``schema`` without a bound and a character class (an enum is both)."""
    found = []
    if schema.get("type") == "string" and "enum" not in schema and not (
            "maxLength" in schema and ("pattern" in schema or "format" in schema)):
        found.append(path)
    for name, sub in (schema.get("properties") or {}).items():
        found += _unbounded_strings(sub, f"{path}.{name}")
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(schema.get(key), dict):
            found += _unbounded_strings(schema[key], path + suffix)
    return found


@pytest.mark.parametrize("builder", [crdgen.training_run_crd, crdgen.model_crd], ids=["run", "model"])
def test_every_spec_string_has_a_bound_and_a_character_class(builder):
    """No NUL, CR or LF stored and rendered into a child, and no field stopped only by the request size limit."""
    spec = builder()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert _unbounded_strings(spec, "spec") == []
