"""What a run sharded with FSDP2 (spec.training.sharding) does differently; the sharding itself is accelerate's.

The Trainer builds accelerate's FSDP plugin from ``arguments.sharding_kwargs`` and accelerate wraps
the model with torch's ``fully_shard``, saves and loads sharded checkpoints with
torch.distributed.checkpoint, and reshards them when the world size changes. Three things are ours:

- **CPU.** accelerate turns its FSDP path on only for accelerators (CUDA, XPU, ...); on CPU it falls
  back to DDP. torch's FSDP2 runs on CPU with gloo, so :class:`FsdpOnCpu` turns accelerate's own
  FSDP2 path on there too. The tests train sharded on CPU; a GPU needs none of this.
- **The published adapter** is gathered whole (:func:`adapter_state_dict`): the LoRA weights only,
  never the frozen base model, which on a 70B model would be 140 GB on rank 0.
- **Generation** needs every rank: each holds a part of every layer, so all of them run the same
  ``generate`` in lockstep (``synced_gpus``) and rank 0 keeps the result (:func:`from_main` shares
  rank 0's decisions, such as whether the base model's scores are cached).
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

T = TypeVar("T")


class FsdpOnCpu:
    """Mixin for a TRL trainer class: accelerate's FSDP2 on a CPU (gloo) process group, as on a GPU."""

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()  # type: ignore[misc]
        from accelerate.state import AcceleratorState, PartialState
        from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

        state = self.accelerator.state  # type: ignore[attr-defined]
        if not self.args.fsdp_plugin_args or state.distributed_type != DistributedType.MULTI_CPU:  # type: ignore
            return
        state.fsdp_plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)  # type: ignore
        # Both shared states: accelerate re-reads PartialState's whenever it makes an AcceleratorState.
        for shared in (AcceleratorState._shared_state, PartialState._shared_state):
            shared["distributed_type"] = DistributedType.FSDP
        self.is_fsdp_enabled = True


def trainer_class(base: type, sharding: str, cuda: bool) -> type:
    """The TRL trainer class to use: ``base``, with :class:`FsdpOnCpu` when sharding on CPU."""
    if sharding != "fsdp" or cuda:
        return base
    return type(f"{base.__name__}WithCpuFsdp", (FsdpOnCpu, base), {})


def is_sharded(model: Any) -> bool:
    """Whether ``model``'s parameters are FSDP2 shards (DTensors)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(parameter, DTensor) for parameter in model.parameters())


def adapter_state_dict(model: Any) -> dict[str, Any]:
    """The trainable (LoRA) parameters gathered whole on rank 0, on the CPU; empty on the other ranks.

    Collective: every rank must call it.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(
        full_state_dict=True, cpu_offload=True, ignore_frozen_params=True))


def from_main(compute: Callable[[], T], collective: bool) -> T:
    """``compute()`` on rank 0, its value handed to every rank when ``collective`` (else computed here)."""
    import torch.distributed as dist

    if not (collective and dist.is_available() and dist.is_initialized()):
        return compute()
    box = [compute() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[return-value]
