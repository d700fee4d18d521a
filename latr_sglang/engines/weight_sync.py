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
import math
from collections.abc import Iterable
from typing import Any

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


# ---- buckets: several tensors per update call ------------------------------------------------------------
# SGLang 0.5.23's /update_weights_from_distributed takes several names per call and, with
# load_format="flattened_bucket", receives them as ONE uint8 broadcast laid out as its FlattenedTensorBucket
# (each tensor's bytes, concatenated in `names` order). Without load_format: one broadcast per name.
FLATTENED_BUCKET = "flattened_bucket"
SYNC_MODES = ("flattened", "multi", "per_tensor")


def plan_buckets(
    named_tensors: list[tuple[str, torch.Tensor]], bucket_bytes: int
) -> list[list[tuple[str, torch.Tensor]]]:
    """Consecutive groups of at most `bucket_bytes` (a larger tensor gets a bucket of its own); one dtype per
    bucket, so that every tensor starts at an offset its dtype can be viewed at."""
    if bucket_bytes < 1:
        raise ValueError(f"bucket_bytes={bucket_bytes}: must be >= 1")
    buckets: list[list[tuple[str, torch.Tensor]]] = []
    size = 0
    for name, tensor in named_tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if not buckets or size + nbytes > bucket_bytes or buckets[-1][0][1].dtype != tensor.dtype:
            buckets.append([])
            size = 0
        buckets[-1].append((name, tensor))
        size += nbytes
    return buckets


def flatten_bucket(bucket: list[tuple[str, torch.Tensor]]) -> torch.Tensor:
    """The bucket's tensors as one uint8 tensor, SGLang's FlattenedTensorBucket layout."""
    return torch.cat([t.detach().contiguous().reshape(-1).view(torch.uint8) for _, t in bucket])


def unflatten_bucket(
    flat: torch.Tensor, names: list[str], dtypes: list[Any], shapes: list[list[int]]
) -> list[tuple[str, torch.Tensor]]:
    """Views into `flat` (uint8), one per announced tensor, in order (the receiving side)."""
    if bucket_nbytes(dtypes, shapes) != flat.numel():
        raise ValueError(
            f"the bucket holds {flat.numel()} bytes, the names announce {bucket_nbytes(dtypes, shapes)}"
        )
    out, offset = [], 0
    for name, dtype, shape in zip(names, dtypes, shapes, strict=True):
        dtype = dtype if isinstance(dtype, torch.dtype) else getattr(torch, str(dtype).removeprefix("torch."))
        nbytes = math.prod(shape) * dtype.itemsize
        if offset % dtype.itemsize:
            raise ValueError(f"{name}: byte offset {offset} is not aligned to {dtype}")
        out.append((name, flat[offset : offset + nbytes].view(dtype).reshape(shape)))
        offset += nbytes
    return out


def bucket_nbytes(dtypes: list[Any], shapes: list[list[int]]) -> int:
    total = 0
    for dtype, shape in zip(dtypes, shapes, strict=True):
        dtype = dtype if isinstance(dtype, torch.dtype) else getattr(torch, str(dtype).removeprefix("torch."))
        total += math.prod(shape) * dtype.itemsize
    return total


def receive_flattened_bucket(
    group: WeightSyncGroup, names: list[str], dtypes: list[Any], shapes: list[list[int]], device: str = "cpu"
) -> list[tuple[str, torch.Tensor]]:
    """A server's side of load_format="flattened_bucket": one broadcast into a uint8 buffer, then views."""
    flat = torch.empty(bucket_nbytes(dtypes, shapes), dtype=torch.uint8, device=device)
    group.broadcast(flat, 0)
    return unflatten_bucket(flat, names, dtypes, shapes)


async def push_weights(
    group: WeightSyncGroup,
    engine: Any,
    named_tensors: Iterable[tuple[str, torch.Tensor]],
    *,
    mode: str = "multi",
    bucket_mb: float = 256.0,
    group_name: str = DEFAULT_GROUP_NAME,
    flush_cache: bool = True,
) -> int:
    """The trainer's side of a weight sync to an engine with SGLang's distributed API (SGLangHTTPEngine).

    mode: "flattened" (one call and one broadcast per bucket; SGLang's flattened_bucket), "multi" (one call
    per bucket, one broadcast per tensor: any SGLang-API server), "per_tensor" (one call per tensor: the
    fallback). Each call is in flight while its broadcast runs (the server receives inside the call).
    Returns the number of calls. Default "multi": on gloo (CPU) one 256 MB flattened broadcast measured far
    slower than per-tensor broadcasts (BENCHMARKS.md); "flattened" is SGLang's choice for NCCL.
    """
    import asyncio

    if mode not in SYNC_MODES:
        raise ValueError(f"mode={mode!r}: expected one of {SYNC_MODES}")
    items = list(named_tensors)
    if mode == "per_tensor":
        buckets = [[item] for item in items]
    else:
        buckets = plan_buckets(items, int(bucket_mb * 2**20))
    for i, bucket in enumerate(buckets):
        names = [n for n, _ in bucket]
        dtypes = [t.dtype for _, t in bucket]
        shapes = [list(t.shape) for _, t in bucket]

        def send(bucket: list[tuple[str, torch.Tensor]] = bucket) -> None:
            if mode == "flattened":
                group.broadcast(flatten_bucket(bucket), 0)
            else:
                for _, tensor in bucket:
                    group.broadcast(tensor.detach().contiguous(), 0)

        await asyncio.gather(
            engine.update_weights_from_distributed(
                names,
                dtypes,
                shapes,
                group_name,
                flush_cache=flush_cache and i == len(buckets) - 1,
                load_format=FLATTENED_BUCKET if mode == "flattened" else None,
            ),
            asyncio.to_thread(send),
        )
    return len(buckets)
