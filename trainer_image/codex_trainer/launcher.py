"""Multi-GPU and multi-node launch: build the torchrun command from the environment the operator sets.

The Job builder sets, per pod:

==================  ============================================================
NNODES              spec.resources.nodes
NPROC_PER_NODE      spec.resources.gpusPerNode (at least 1)
NODE_RANK           the Indexed Job's completion index (multi-node only; 0 if unset)
MASTER_ADDR         pod 0's DNS name behind the headless Service (multi-node only)
MASTER_PORT         the rendezvous port (multi-node only; 29500 if unset)
==================  ============================================================

When the world is larger than one process, or the run is sharded, ``codex-train run`` starts itself again under
``torch.distributed.run`` (torchrun) as a child, forwards SIGTERM to it, and exits with the code
its local rank 0 recorded, so the exit-code contract survives torchrun (which would report 1).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from .errors import InvalidSpecError

DEFAULT_MASTER_PORT = 29500
# Set by torchrun in every worker: its presence means "already launched".
TORCHRUN_MARKERS = ("LOCAL_RANK", "TORCHELASTIC_RUN_ID")
# The workers write their exit code here, one file per local rank; internal to this module and cli.
ENV_RESULT_DIR = "CODEX_RESULT_DIR"


@dataclass(frozen=True)
class Topology:
    nnodes: int = 1
    nproc_per_node: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_MASTER_PORT

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


def topology_from_env(env: Mapping[str, str]) -> Topology:
    """The launch topology the operator described; a malformed value is an error naming the variable."""

    def integer(name: str, default: int, minimum: int) -> int:
        raw = env.get(name, "")
        try:
            value = int(raw) if raw.strip() else default
        except ValueError:
            raise InvalidSpecError(f"env {name}: expected an integer, got {raw!r}") from None
        if value < minimum:
            raise InvalidSpecError(f"env {name}: must be at least {minimum}, got {value}")
        return value

    topology = Topology(
        nnodes=integer("NNODES", 1, 1),
        nproc_per_node=integer("NPROC_PER_NODE", 1, 1),
        node_rank=integer("NODE_RANK", 0, 0),
        master_addr=env.get("MASTER_ADDR") or "127.0.0.1",
        master_port=integer("MASTER_PORT", DEFAULT_MASTER_PORT, 1),
    )
    if topology.node_rank >= topology.nnodes:
        raise InvalidSpecError(f"env NODE_RANK: {topology.node_rank} is not below NNODES={topology.nnodes}")
    if topology.nnodes > 1 and not env.get("MASTER_ADDR"):
        raise InvalidSpecError("env MASTER_ADDR: required when NNODES > 1 (pod 0's address)")
    return topology


def needs_torchrun(topology: Topology, env: Mapping[str, str], sharded: bool = False) -> bool:
    """More than one process, or a sharded run (FSDP needs a process group, even of one with CPU offload),
    not yet under torchrun."""
    return (topology.world_size > 1 or sharded) and not launched(env)


def launched(env: Mapping[str, str]) -> bool:
    """Whether this process is a torchrun worker."""
    return any(name in env for name in TORCHRUN_MARKERS)


def wants_sharding(training) -> bool:
    """Whether spec.training may resolve to FSDP on one process: asked for, or CPU offload (which is FSDP's)."""
    return training.sharding == "fsdp" or training.cpu_offload


def torchrun_argv(topology: Topology, program_args: Sequence[str], python: str = sys.executable) -> list[str]:
    """``python -m torch.distributed.run ... -m codex_trainer.cli <program_args>``."""
    argv = [python, "-m", "torch.distributed.run", f"--nproc-per-node={topology.nproc_per_node}",
            "--max-restarts=0"]
    if topology.nnodes == 1:
        argv.append("--standalone")
    else:
        argv += [
            f"--nnodes={topology.nnodes}",
            f"--node-rank={topology.node_rank}",
            f"--master-addr={topology.master_addr}",
            f"--master-port={topology.master_port}",
        ]
    return argv + ["-m", "codex_trainer.cli", *program_args]


def result_file(result_dir: Path, local_rank: int) -> Path:
    return result_dir / f"exit-code-rank{local_rank}"


def node_exit_code(result_dir: Path, torchrun_code: int, transient_code: int) -> int:
    """The code local rank 0 recorded; else 0 if torchrun succeeded, else the retryable transient code."""
    try:
        return int(result_file(result_dir, 0).read_text().strip())
    except (OSError, ValueError):
        return 0 if torchrun_code == 0 else transient_code
