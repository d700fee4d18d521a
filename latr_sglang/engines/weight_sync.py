"""A process group for pushing weights from a trainer to engines, laid out the way SGLang's is.

Outside torch.distributed's default group, so a trainer's own group is untouched. SGLang's
/init_weights_update_group joins with `init_custom_process_group`: a TCP rendezvous at master_address:port,
the store prefixed by the group name, then torch's usual per-group and per-device prefixes. We build the same
key layout by hand (no global registration, so one process can open several groups), which lets a trainer
rank 0 built on this class meet SGLang servers, our own server, and our Ray engine actors alike: gloo on CPU,
NCCL on GPUs.
"""

from __future__ import annotations

import datetime

import torch
import torch.distributed as dist

DEFAULT_GROUP_NAME = "weight_update_group"  # SGLang's default


class WeightSyncGroup:
    def __init__(
        self,
        master_address: str,
        master_port: int,
        rank: int,
        world_size: int,
        backend: str = "gloo",
        group_name: str = DEFAULT_GROUP_NAME,
        timeout_s: float = 300.0,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
        if backend not in ("gloo", "nccl"):
            raise ValueError(f"backend={backend!r}: expected 'gloo' or 'nccl'")
        timeout = datetime.timedelta(seconds=timeout_s)
        self.store = dist.TCPStore(
            master_address, master_port, world_size, is_master=rank == 0, timeout=timeout
        )
        device = "cpu" if backend == "gloo" else "cuda"
        # init_custom_process_group's PrefixStore(group_name), then _new_process_group_helper's two prefixes
        store = dist.PrefixStore(
            f"{device}/", dist.PrefixStore(f"{group_name}/", dist.PrefixStore(group_name, self.store))
        )
        if backend == "gloo":
            self.group = dist.ProcessGroupGloo(store, rank, world_size, timeout)
        else:
            self.group = dist.ProcessGroupNCCL(store, rank, world_size)
        self.rank = rank
        self.world_size = world_size
        self.group_name = group_name

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        self.group.broadcast(tensor, src).wait()
        return tensor
