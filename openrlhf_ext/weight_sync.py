"""Weight sync from the trainer (rank 0) to rollout engines, outside torch.distributed's default group.

OpenRLHF's trainer opens a stateless group with its engines (vLLM's StatelessProcessGroup + NCCL) and, for
each parameter, calls the engine's `update_weight(name, dtype, shape)` and broadcasts the tensor from rank 0.
This is the same protocol over a stateless torch group: gloo on CPU (what the tests run), NCCL on GPUs,
without vLLM.
"""

from __future__ import annotations

import datetime

import torch
import torch.distributed as dist


class WeightSyncGroup:
    def __init__(
        self,
        master_address: str,
        master_port: int,
        rank: int,
        world_size: int,
        backend: str = "gloo",
        timeout_s: float = 300.0,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
        timeout = datetime.timedelta(seconds=timeout_s)
        self.store = dist.TCPStore(
            master_address, master_port, world_size, is_master=rank == 0, timeout=timeout
        )
        if backend == "gloo":
            self.group = dist.ProcessGroupGloo(self.store, rank, world_size, timeout)
        elif backend == "nccl":
            self.group = dist.ProcessGroupNCCL(self.store, rank, world_size)
        else:
            raise ValueError(f"backend={backend!r}: expected 'gloo' or 'nccl'")
        self.rank = rank
        self.world_size = world_size

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        self.group.broadcast(tensor, src).wait()
        return tensor


def broadcast_weights(group: WeightSyncGroup, engines: list, named_tensors) -> int:
    """Trainer side: announce each tensor to every engine actor, then broadcast it. Returns the count."""
    import ray

    count = 0
    for name, tensor in named_tensors:
        refs = [
            engine.update_weight.remote(name, dtype=tensor.dtype, shape=tuple(tensor.shape))
            for engine in engines
        ]
        group.broadcast(tensor.detach().contiguous(), src=0)
        ray.get(refs)
        count += 1
    ray.get([engine.reset_prefix_cache.remote() for engine in engines])
    return count
