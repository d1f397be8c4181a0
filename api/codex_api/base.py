"""The base every API type derives from, and the one mechanism for cross-field rules.

A :class:`Rule` is written once and used twice: its CEL expression becomes an
``x-kubernetes-validations`` entry in the generated CRD, so the apiserver rejects
the object, and its Python ``check`` runs in the pydantic validator, so the
operator and the trainer reject the same object with the same message.
"""

from __future__ import annotations

import functools
import re
import types
import typing
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic.alias_generators import to_camel, to_snake

API_GROUP = "codex.dev"
API_VERSION = "v1alpha1"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"


@dataclass(frozen=True)
class Rule:
    """A cross-field rule: CEL for the apiserver, ``check`` for Python, one message for both.

    ``field`` names the sub-field the error points at (CEL ``fieldPath``), relative to the
    object the rule sits on; the message names the field from the user's point of view.
    """

    cel: str
    message: str
    check: Callable[[Any], bool]
    field: str | None = None
    # A transition rule compares with the stored object: CEL ``oldSelf``, Python ``check(new, old)``.
    # The pydantic validator skips it; :func:`check_transition` runs it on updates.
    transition: bool = False
    extra: dict[str, Any] = dataclass_field(default_factory=dict)

    def to_crd(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"rule": self.cel, "message": self.message}
        if self.field:
            entry["fieldPath"] = "." + self.field
        entry.update(self.extra)
        return entry


class RuleError(ValueError):
    """A broken :class:`Rule`; ``field`` (its CEL fieldPath) is where the error points, as on the apiserver."""

    def __init__(self, message: str, field: str | None):
        super().__init__(message)
        self.field = field


def _add_rules(schema: dict[str, Any], cls: type) -> None:
    rules: tuple[Rule, ...] = getattr(cls, "__rules__", ())
    if rules:
        schema["x-kubernetes-validations"] = [rule.to_crd() for rule in rules]


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra=_add_rules,
        validate_default=True,
        # As the apiserver's schema does: "100" is not an integer, 1 is not a string.
        strict=True,
    )

    __rules__: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _read_as_the_apiserver_does(cls, data: Any) -> Any:
        """The input as the apiserver reads a submitted object before it validates it, so that the models
        judge what the schema judges (:func:`decoded_fields`)."""
        if not isinstance(data, dict):
            return data
        shapes = decoded_fields(cls)
        out = {}
        for key, value in data.items():
            shape = shapes.get(key)
            if shape is not None:
                if value is None:
                    continue
                value = shape.decode(key, value)
            out[key] = value
        return out

    @model_validator(mode="after")
    def _check_rules(self) -> "ApiModel":
        for rule in type(self).__rules__:
            if not rule.transition and not rule.check(self):
                raise RuleError(rule.message, rule.field)
        return self

    def to_wire(self) -> dict[str, Any]:
        """The object as a user would write it: camelCase, unset optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


INT64 = 2 ** 63
# Past this a float is not read as an integer (kube-openapi's check): 2.0 is one, 2.0**53 is not.
FLOAT_INTEGERS = 2 ** 53


@dataclass(frozen=True)
class FieldShape:
    """How the apiserver reads one field: as a map (whose null values it prunes), as an integer or a
    list of them (where a JSON float with no fractional part below 2**53 passes as an integer,
    unless a CEL rule reads the field: CEL then fails on the float; and an integer past int64 is a
    float, which no integer field takes), or as anything else."""

    kind: str  # "map", "int", "ints" or "other"
    read_by_rule: bool = False

    def decode(self, key: str, value: Any) -> Any:
        if self.kind == "map" and isinstance(value, dict):
            return {k: v for k, v in value.items() if v is not None}
        if self.kind == "int":
            return self._integer(key, value)
        if self.kind == "ints" and isinstance(value, list):
            return [self._integer(key, item) for item in value]
        return value

    def _integer(self, key: str, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and not -INT64 <= value < INT64:
            return float(value)  # past int64 the apiserver reads a JSON number as a float: not an integer
        if not (isinstance(value, float) and value.is_integer() and abs(value) < FLOAT_INTEGERS):
            return value  # an integer already, or refused by the schema as it is refused by the apiserver
        if self.read_by_rule:
            raise ValueError(f"{key} must be an integer, not {value!r}: a validation rule reads it")
        return int(value)


def _shape_of(annotation: Any) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if annotation is int:
        return "int"
    if origin is list and typing.get_args(annotation) == (int,):
        return "ints"
    return "map" if origin is dict else "other"


@functools.cache
def decoded_fields(cls: type["ApiModel"]) -> dict[str, FieldShape]:
    """The fields of ``cls`` by wire name (and Python name), as the apiserver reads them. A field set
    to null is left out, as the apiserver prunes nulls where the schema does not say nullable
    (nothing of ours does); an unknown field is kept, for ``extra="forbid"`` to refuse."""
    read = {name for rule in cls.__rules__ if not rule.transition for name in re.findall(r"self\.(\w+)", rule.cel)}
    shapes = {}
    for name, info in cls.model_fields.items():
        wire = info.alias or name
        shape = FieldShape(_shape_of(info.annotation), wire in read)
        shapes[name] = shapes[wire] = shape
    return shapes


def check_transition(new: ApiModel, old: ApiModel) -> list[str]:
    """Messages of the transition rules on ``type(new)`` that the change from ``old`` breaks."""
    return [rule.message for rule in type(new).__rules__ if rule.transition and not rule.check(new, old)]


def exactly_one(obj: BaseModel, *names: str) -> bool:
    return sum(getattr(obj, name) is not None for name in names) == 1


def at_most_one(obj: BaseModel, *names: str) -> bool:
    return sum(getattr(obj, name) is not None for name in names) <= 1


def cel_exactly_one(*wire_names: str) -> str:
    return " + ".join(f"(has(self.{n}) ? 1 : 0)" for n in wire_names) + " == 1"


def cel_at_most_one(*wire_names: str) -> str:
    return " + ".join(f"(has(self.{n}) ? 1 : 0)" for n in wire_names) + " <= 1"


def exactly_one_rule(*wire_names: str) -> Rule:
    """The rule that exactly one of the fields ``wire_names`` is set, in CEL and in Python alike."""
    attrs = tuple(to_snake(name) for name in wire_names)
    listed = ", ".join(wire_names[:-1]) + " or " + wire_names[-1]
    return Rule(cel=cel_exactly_one(*wire_names), message=f"exactly one of {listed} must be set",
                check=lambda m: exactly_one(m, *attrs))


def at_most_one_rule(*wire_names: str, message: str, field: str | None = None) -> Rule:
    """The rule that at most one of the fields ``wire_names`` is set."""
    attrs = tuple(to_snake(name) for name in wire_names)
    return Rule(cel=cel_at_most_one(*wire_names), message=message, check=lambda m: at_most_one(m, *attrs),
                field=field)


class SpecError(ValueError):
    """A user mistake in a spec; ``str()`` is one line per problem, each naming the field path."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))

    @classmethod
    def from_validation(cls, error: ValidationError, root: str) -> "SpecError":
        return format_validation_error(error, root)


def _loc_to_path(root: str, loc: tuple[Any, ...]) -> str:
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif str(part).startswith(("function-", "literal[")):
            continue
        else:
            path += f".{part}" if path else str(part)
    return path or "(root)"


def format_validation_error(error: ValidationError, root: str = "spec") -> SpecError:
    """Turn a pydantic error into messages that each start with the field path (``spec.lora.r: ...``)."""
    problems = []
    for item in error.errors(include_url=False):
        message = item["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            if message.startswith(prefix):
                message = message[len(prefix):]
        loc = tuple(item["loc"])
        broken = (item.get("ctx") or {}).get("error")
        if isinstance(broken, RuleError) and broken.field:
            loc += tuple(broken.field.split("."))  # the field the rule is about, as CEL's fieldPath names it
        problems.append(f"{_loc_to_path(root, loc)}: {message}")
    return SpecError(problems)
