"""The node agent's configuration and its table of runnable images."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..netplan import ClusterNetwork

# Image name prefix -> the command its ENTRYPOINT runs, for containers that give no `command`.
ENTRYPOINTS = {
    "codex-operator": ["codex-operator"],
    "codex-trainer": ["codex-train"],
    # Dockerfile.trainer's `serve` target: the same image contents, codex-serve as entrypoint.
    "codex-serve": ["codex-serve"],
}
# The PATH of every container: the agent's own virtualenv first, so codex-* scripts and `python` resolve there.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class AgentConfig:
    state_dir: Path
    nodes: list[dict]
    runnable_image_prefixes: tuple[str, ...]
    skip_image_prefixes: tuple[str, ...]
    network: ClusterNetwork
    apiserver_port: int
    kubelet_port: int = 0
    ca_file: str = ""
    kubelet_cert: str = ""
    kubelet_key: str = ""
    host_env: dict[str, str] = field(default_factory=dict)
    # The real network's CNI plugins, and images of the cluster's own services (CoreDNS) -> their command.
    cni_bin: str = ""
    image_entrypoints: dict[str, list[str]] = field(default_factory=dict)
    # Images with their own Python environment (vllm/vllm-openai) -> its bin directory, first on their
    # containers' PATH (so the image's `python3` is its own); every container's user can reach it.
    image_bin_dirs: dict[str, str] = field(default_factory=dict)
    # Not sys.executable resolved: the venv's bin dir holds the console scripts.
    bin_dir: Path = field(default_factory=lambda: Path(sys.executable).parent)

    @classmethod
    def load(cls, path: Path, state_dir: Path) -> "AgentConfig":
        raw = json.loads(path.read_text())
        return cls(
            state_dir=state_dir,
            nodes=raw["nodes"],
            runnable_image_prefixes=tuple(raw.get("runnable_image_prefixes", ())),
            skip_image_prefixes=tuple(raw.get("skip_image_prefixes", ())),
            network=ClusterNetwork(**raw["network"]),
            apiserver_port=int(raw["apiserver_port"]),
            kubelet_port=int(raw.get("kubelet_port", 0)),
            ca_file=raw.get("ca_file", ""),
            kubelet_cert=raw.get("kubelet_cert", ""),
            kubelet_key=raw.get("kubelet_key", ""),
            host_env=dict(raw.get("host_env", {})),
            cni_bin=raw.get("cni_bin", ""),
            image_entrypoints={k: list(v) for k, v in raw.get("image_entrypoints", {}).items()},
            image_bin_dirs=dict(raw.get("image_bin_dirs", {})),
        )

    @property
    def node_names(self) -> set[str]:
        return {n["name"] for n in self.nodes}

    def node(self, name: str) -> dict:
        return next(n for n in self.nodes if n["name"] == name)

    def container_path(self, image: str) -> str:
        """PATH of a container of ``image``: its own environment's bin dir, else the agent's."""
        prefix = _matches(image, tuple(self.image_bin_dirs))
        return f"{self.image_bin_dirs[prefix] if prefix else self.bin_dir}:{SYSTEM_PATH}"


def _matches(image: str, prefixes: tuple[str, ...]) -> str | None:
    """The prefix that ``image`` (or its last path component, e.g. ghcr.io/x/codex-trainer:1) starts with."""
    base = image.rsplit("/", 1)[-1]
    return next((p for p in prefixes if image.startswith(p) or base.startswith(p)), None)


def image_problem(image: str, config: AgentConfig) -> tuple[str, str] | None:
    """(reason, message) when the agent will not run ``image``; None when it will."""
    skipped = _matches(image, config.skip_image_prefixes)
    if skipped:
        return "ImageSkipped", f"image {image} is skipped by the local node (skip prefix {skipped!r})"
    if not _matches(image, config.runnable_image_prefixes):
        return ("ImageNotRunnable", f"image not runnable by the local node: {image} (runnable prefixes: "
                f"{', '.join(config.runnable_image_prefixes) or 'none'})")
    return None


def entrypoint(image: str, config: AgentConfig) -> list[str]:
    table = {**ENTRYPOINTS, **config.image_entrypoints}
    prefix = _matches(image, tuple(table))
    return list(table[prefix]) if prefix else []
