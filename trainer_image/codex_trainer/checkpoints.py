"""Checkpoints: what makes one complete, which one to resume from, and stopping cleanly on SIGTERM.

The HF Trainer writes ``checkpoint-<step>/`` (adapter, optimizer, scheduler, RNG, trainer state)
into the checkpoint directory; under FSDP the model and optimizer are torch.distributed.checkpoint
folders (``pytorch_model_fsdp_0/``, ``optimizer_0/``, a shard per rank), which a run of another
world size can load (DCP reshards them). After it returns, :class:`CheckpointCallback` writes
``codex_state.json`` (step, epoch, seed, data hash, config hash) last, which marks the checkpoint
complete, and only then drops the oldest complete ones beyond ``keepLast``, so a crash while
saving never leaves the run without a checkpoint to resume from.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from transformers import TrainerCallback

from .logs import event

STATE_FILE = "codex_state.json"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
# transformers' own JIT-checkpoint sentinel, honoured in case someone enables it.
INCOMPLETE_SENTINEL = "checkpoint-is-incomplete.txt"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "model.safetensors")
# accelerate's names for a sharded (FSDP SHARDED_STATE_DICT) checkpoint: DCP folders, complete once .metadata is.
SHARDED_MODEL, SHARDED_OPTIMIZER, DCP_METADATA = "pytorch_model_fsdp_0", "optimizer_0", ".metadata"


@dataclass(frozen=True)
class ResumeState:
    """What is saved beside the weights so a resumed run can check it continues the same run."""

    step: int
    epoch: float
    seed: int
    data_sha256: str
    config_hash: str
    train_records: int
    world_size: int = 1

    def disagreements(self, current: "ResumeState") -> list[str]:
        """Fields (other than progress) where the checkpoint and the current run differ."""
        return [
            f"{name}: checkpoint {getattr(self, name)!r}, now {getattr(current, name)!r}"
            for name in ("seed", "data_sha256", "config_hash", "train_records", "world_size")
            if getattr(self, name) != getattr(current, name)
        ]


def checkpoint_step(path: Path) -> Optional[int]:
    match = CHECKPOINT_PATTERN.match(path.name)
    return int(match.group(1)) if match else None


def checkpoints_newest_first(checkpoint_dir: Path) -> list[Path]:
    found = [p for p in checkpoint_dir.glob("checkpoint-*") if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step, reverse=True)


def why_incomplete(path: Path) -> Optional[str]:
    """None when ``path`` is a complete, readable checkpoint; otherwise the reason it is not."""
    if (path / INCOMPLETE_SENTINEL).exists():
        return f"{INCOMPLETE_SENTINEL} present"
    try:
        state = json.loads((path / STATE_FILE).read_text())
        trainer_state = json.loads((path / "trainer_state.json").read_text())
    except FileNotFoundError as error:
        return f"{Path(error.filename).name} missing"
    except ValueError:
        return "state file is not valid JSON"
    if state.get("step") != checkpoint_step(path) or trainer_state.get("global_step") != state.get("step"):
        return "step in the state files does not match the directory"
    if (path / SHARDED_MODEL).is_dir():
        missing = [name for name in (SHARDED_MODEL, SHARDED_OPTIMIZER) if not (path / name / DCP_METADATA).is_file()]
        return f"sharded {' and '.join(missing)} incomplete (no {DCP_METADATA})" if missing else None
    weights = next((path / name for name in ADAPTER_WEIGHTS if (path / name).is_file()), None)
    if weights is None:
        return "adapter weights missing"
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as handle:
            for key in handle.keys():
                handle.get_slice(key)
    except Exception as error:  # safetensors raises its own error types for truncated files
        return f"{weights.name} unreadable ({type(error).__name__})"
    if not (path / "optimizer.pt").is_file() or (path / "optimizer.pt").stat().st_size == 0:
        return "optimizer.pt missing"
    return None


def check_sharding(path: Path, sharded: bool) -> None:
    """A checkpoint resumes only under the sharding it was saved with; InvalidSpecError otherwise."""
    if (path / SHARDED_MODEL).is_dir() == sharded:
        return
    from .errors import InvalidSpecError

    kind, now = ("unsharded", "fsdp") if sharded else ("sharded (FSDP)", "none")
    raise InvalidSpecError(f"spec.training.sharding: {path.name} is {kind} and this run trains with sharding {now}; "
                           "keep the sharding the run started with (did spec.resources change what auto chose?)")


def find_resume_checkpoint(checkpoint_dir: Path, remove_incomplete: bool) -> tuple[Optional[Path], Optional[ResumeState]]:
    """The newest complete checkpoint and its saved state; incomplete ones are logged (and removed
    on the main process, so checkpoint rotation never keeps them instead of good ones)."""
    for path in checkpoints_newest_first(checkpoint_dir):
        reason = why_incomplete(path)
        if reason is None:
            state = json.loads((path / STATE_FILE).read_text())
            return path, ResumeState(**{k: state[k] for k in ResumeState.__dataclass_fields__ if k in state})
        event("prepare", "checkpoint.skipped", level=logging.WARNING, checkpoint=path.name, reason=reason)
        if remove_incomplete:
            shutil.rmtree(path, ignore_errors=True)
    return None, None


def agree_across_ranks(checkpoint_dir: Path, path: Optional[Path], state: Optional[ResumeState]):
    """The checkpoint every rank can resume from: the oldest newest-step among ranks, or none.

    All ranks must resume from the same step. With a node-local checkpoint volume only the node
    of rank 0 has checkpoints, so a multi-node run resumes only from a shared (ReadWriteMany) claim.
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return path, state
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    step = torch.tensor([state.step if state is not None else -1], device=device)
    dist.all_reduce(step, op=dist.ReduceOp.MIN)
    agreed = int(step.item())
    if state is not None and agreed == state.step:
        return path, state
    if agreed >= 0:
        candidate = checkpoint_dir / f"checkpoint-{agreed}"
        if why_incomplete(candidate) is None:
            saved = json.loads((candidate / STATE_FILE).read_text())
            return candidate, ResumeState(**{k: saved[k] for k in ResumeState.__dataclass_fields__ if k in saved})
    event("prepare", "resume.no_common_checkpoint", level=logging.WARNING, own_step=state.step if state else None,
          hint="multi-node resume needs a shared (ReadWriteMany) checkpointing.claimName")
    return None, None


class CheckpointCallback(TrainerCallback):
    """Marks each saved checkpoint complete, then keeps only the newest ``keep_last`` complete ones."""

    def __init__(self, checkpoint_dir: Path, keep_last: int, state: ResumeState):
        self.checkpoint_dir = checkpoint_dir
        self.keep_last = keep_last
        self.state = state

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        path = self.checkpoint_dir / f"checkpoint-{state.global_step}"
        saved = {**asdict(self.state), "step": state.global_step, "epoch": state.epoch or 0.0}
        tmp = path / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(saved, indent=2))
        tmp.replace(path / STATE_FILE)
        complete = [p for p in checkpoints_newest_first(self.checkpoint_dir) if (p / STATE_FILE).is_file()]
        for old in complete[self.keep_last:]:
            shutil.rmtree(old, ignore_errors=True)
        event("train", "checkpoint.saved", checkpoint=path.name, step=state.global_step,
              removed=[p.name for p in complete[self.keep_last:]])


class PreemptionGuard:
    """Turns SIGTERM into "save a checkpoint and stop" during training, and into an immediate stop outside it."""

    def __init__(self) -> None:
        self.requested = False
        self.in_training = False
        self._previous: Any = None

    def install(self) -> "PreemptionGuard":
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum, frame) -> None:
        from .errors import Preempted

        self.requested = True
        if not self.in_training:
            raise Preempted("SIGTERM received outside training; the newest checkpoint is kept")


class PreemptionCallback(TrainerCallback):
    """Stops training at the next step boundary once any rank saw SIGTERM, saving a checkpoint there.

    It also forces a save at the last step, so a pod preempted during evaluation resumes with
    training already finished. The flag is all-reduced so every rank stops at the same step.
    """

    def __init__(self, guard: PreemptionGuard):
        self.guard = guard
        self.stopped_at: Optional[int] = None

    def on_step_end(self, args, state, control, **kwargs):
        if _any_rank(self.guard.requested):
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
            event("train", "preempted", step=state.global_step)
        elif state.global_step >= state.max_steps:
            control.should_save = True
        return control


def _any_rank(flag: bool) -> bool:
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
