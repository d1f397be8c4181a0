"""Container environment: env, envFrom, valueFrom and $(VAR) expansion, as the kubelet does it."""

from __future__ import annotations

import base64
import math
import re
from typing import Callable

from kubernetes.utils import parse_quantity

ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class ConfigError(Exception):
    """The container cannot be configured yet (missing Secret/ConfigMap/key): CreateContainerConfigError."""


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """Kubernetes $(VAR) expansion: $$ escapes, unknown references stay as written."""
    out = []
    cursor = 0
    while cursor < len(text):
        char = text[cursor]
        if char != "$" or cursor + 1 == len(text):
            out.append(char)
            cursor += 1
            continue
        following = text[cursor + 1]
        if following == "$":
            out.append("$")
            cursor += 2
        elif following == "(":
            close = text.find(")", cursor + 2)
            if close == -1:
                out.append("$(")
                cursor += 2
                continue
            name = text[cursor + 2:close]
            value = lookup(name)
            out.append(value if value is not None else f"$({name})")
            cursor = close + 1
        else:
            out.append("$" + following)
            cursor += 2
    return "".join(out)


def field_value(pod: dict, path: str) -> str:
    """A downward API fieldRef: metadata.name/namespace/uid, labels['k'], annotations['k'], spec/status fields."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    if path in ("metadata.labels", "metadata.annotations"):
        items = sorted((meta.get(path.split(".")[1]) or {}).items())
        return "\n".join(f'{k}="{v}"' for k, v in items)
    simple = {
        "metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"), "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"), "status.hostIP": status.get("hostIP"),
        "status.podIP": status.get("podIP"),
        "status.hostIPs": ",".join(i["ip"] for i in status.get("hostIPs") or []),
        "status.podIPs": ",".join(i["ip"] for i in status.get("podIPs") or []),
    }
    if path not in simple:
        raise ConfigError(f"unsupported fieldRef fieldPath {path!r}")
    return simple[path] or ""


def resource_value(pod: dict, ref: dict, default_container: str | None, allocatable: dict) -> str:
    """A resourceFieldRef: limits/requests of a container, defaulting to node allocatable when unset."""
    name = ref.get("containerName") or default_container
    containers = pod["spec"].get("containers", []) + pod["spec"].get("initContainers", [])
    container = next((c for c in containers if c["name"] == name), None)
    if container is None:
        raise ConfigError(f"resourceFieldRef: no container named {name!r}")
    kind, _, resource = ref["resource"].partition(".")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(resource)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(resource)
    if raw is None:
        raw = allocatable.get(resource, "0")
    divisor = parse_quantity(ref.get("divisor") or "1")
    if divisor == 0:
        raise ConfigError(f"resourceFieldRef {ref['resource']}: divisor must not be 0")
    return str(math.ceil(parse_quantity(raw) / divisor))


def _key_error(kind: str, namespace: str, name: str, key: str) -> ConfigError:
    return ConfigError(f"couldn't find key {key} in {kind} {namespace}/{name}")


class EnvResolver:
    """Resolve one container's environment; reads Secrets/ConfigMaps through ``kube``."""

    def __init__(self, kube, pod: dict, allocatable: dict):
        self.kube = kube
        self.pod = pod
        self.namespace = pod["metadata"]["namespace"]
        self.allocatable = allocatable
        self._cache: dict[tuple[str, str], dict | None] = {}

    def _object(self, kind: str, name: str, optional: bool) -> dict | None:
        key = (kind, name)
        if key not in self._cache:
            read = self.kube.secret if kind == "Secret" else self.kube.configmap
            self._cache[key] = read(self.namespace, name)
        found = self._cache[key]
        if found is None and not optional:
            raise ConfigError(f'{kind.lower()} "{name}" not found')
        return found

    def _data(self, kind: str, obj: dict) -> dict[str, str]:
        if kind == "Secret":
            return {k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("data") or {}).items()}
        return dict(obj.get("data") or {})

    def _key_ref(self, kind: str, ref: dict) -> str | None:
        obj = self._object(kind, ref["name"], bool(ref.get("optional")))
        if obj is None:
            return None
        data = self._data(kind, obj)
        if ref["key"] not in data:
            if ref.get("optional"):
                return None
            raise _key_error(kind, self.namespace, ref["name"], ref["key"])
        return data[ref["key"]]

    def resolve(self, container: dict, base: dict[str, str]) -> dict[str, str]:
        """``base`` (service variables, PATH, HOME, ...) overlaid with envFrom, then env, in spec order."""
        env = dict(base)
        for source in container.get("envFrom") or []:
            kind, ref = ("Secret", source["secretRef"]) if "secretRef" in source else ("ConfigMap",
                                                                                      source.get("configMapRef"))
            if not ref:
                continue
            obj = self._object(kind, ref["name"], bool(ref.get("optional")))
            for key, value in sorted(self._data(kind, obj).items()) if obj else ():
                name = (source.get("prefix") or "") + key
                if ENV_NAME.match(name):
                    env[name] = value
        for var in container.get("env") or []:
            value = self._value(var, container, env)
            if value is not None:
                env[var["name"]] = value
        return env

    def _value(self, var: dict, container: dict, env: dict[str, str]) -> str | None:
        if "valueFrom" not in var:
            return expand(var.get("value") or "", env.get)
        source = var["valueFrom"]
        if "secretKeyRef" in source:
            return self._key_ref("Secret", source["secretKeyRef"])
        if "configMapKeyRef" in source:
            return self._key_ref("ConfigMap", source["configMapKeyRef"])
        if "fieldRef" in source:
            return field_value(self.pod, source["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in source:
            return resource_value(self.pod, source["resourceFieldRef"], container["name"], self.allocatable)
        raise ConfigError(f"env {var['name']}: unsupported valueFrom {sorted(source)}")
