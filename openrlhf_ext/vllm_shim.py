"""The vLLM names OpenRLHF imports, for processes that roll out with SGLang or the torch engine instead.

OpenRLHF 0.11.2 imports vLLM at module load: `SamplingParams` (samples_generator), `TokensPrompt` and
`random_uuid` (vllm_engine), `__version__` (ppo_actor), and `StatelessProcessGroup` + `PyNcclCommunicator`
for the trainer's side of the weight-sync group (utils.distributed_util). GPU images pin torch for SGLang,
which conflicts with vLLM's pin, so the SGLang route must not need a working vLLM. `install()` registers a
module named `vllm` holding exactly those names, backed by our code: SamplingParams is a plain record that
the engine actor translates, the weight-sync group is our stateless torch group (NCCL on GPUs, gloo on CPU).
Everything vLLM-specific beyond that (its engine) raises a clear error.

It is installed only for `--rollout.backend sglang|torch`, in the driver and, through Ray's
`worker_process_setup_hook`, in every Ray worker before OpenRLHF is imported there. It never replaces a vLLM
that a process has already imported, and `--rollout.backend vllm` never installs it.
"""

from __future__ import annotations

import os
import sys
import types
import uuid
from dataclasses import dataclass
from typing import Any

import torch

SHIM_VERSION = "0.0.0+latr.shim"
# OpenRLHF names its weight-sync group "openrlhf" when it asks the engines to join (ppo_actor.py) but does not
# pass the name to its own side; our groups key their rendezvous by name, so the trainer side uses the same.
OPENRLHF_GROUP_NAME = "openrlhf"


@dataclass
class SamplingParams:
    """The vLLM SamplingParams fields OpenRLHF sets; unknown fields fail with their name (a TypeError)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    max_tokens: int | None = 16
    min_tokens: int = 0
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    logprobs: int | None = None
    seed: int | None = None


class TokensPrompt(dict):
    """vLLM's TokensPrompt is a TypedDict: {"prompt_token_ids": [...]}."""


def random_uuid() -> str:
    return uuid.uuid4().hex


class StatelessProcessGroup:
    """Only records where the group meets; PyNcclCommunicator opens it (that is where vLLM connects too)."""

    def __init__(self, host: str, port: int, rank: int, world_size: int) -> None:
        self.host, self.port, self.rank, self.world_size = host, port, rank, world_size

    @classmethod
    def create(cls, host: str, port: int, rank: int, world_size: int, **_: Any) -> StatelessProcessGroup:
        return cls(host, port, rank, world_size)


def sync_backend(requested: str, device: Any) -> str:
    """The weight-sync backend, one rule for both sides of the group (the trainer's PyNcclCommunicator below
    and our engine actors): NCCL when it was asked for (`--vllm.sync_backend`, default nccl) and the
    tensors live on a CUDA device; gloo otherwise (asked for, or no GPU: `--trainer.device cpu`)."""
    if requested not in ("nccl", "gloo"):
        raise ValueError(f"--vllm.sync_backend {requested!r}: expected nccl or gloo")
    on_gpu = device is not None and str(device) != "cpu" and torch.cuda.is_available()
    return "nccl" if requested == "nccl" and on_gpu else "gloo"


# What OpenRLHF asks for: PolicyModelActor._init_vllm_sync_group(backend) receives --vllm.sync_backend
# (ppo_actor.py:100-104) and passes it to the engines, but not to stateless_init_process_group (its own side);
# latr-train puts it into every Ray worker's environment under this name (run_ray).
SYNC_BACKEND_ENV = "LATR_SYNC_BACKEND"


class PyNcclCommunicator:
    """The trainer's side of the weight-sync group: `broadcast(tensor, src, stream)` over our stateless group,
    with the backend `sync_backend` picks (the engines apply the same rule)."""

    def __init__(self, group: StatelessProcessGroup, device: Any = None) -> None:
        from latr_sglang.engines.weight_sync import WeightSyncGroup

        self.backend = sync_backend(os.environ.get(SYNC_BACKEND_ENV, "nccl"), device)
        self.group = WeightSyncGroup(
            group.host,
            group.port,
            group.rank,
            group.world_size,
            backend=self.backend,
            group_name=OPENRLHF_GROUP_NAME,
        )

    def broadcast(self, tensor: torch.Tensor, src: int = 0, stream: Any = None) -> None:
        self.group.broadcast(tensor, src)


class _NoVLLMEngine:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(
            "vLLM is not available in this process: it runs with latr-sglang's vLLM stand-in because "
            "--rollout.backend is sglang or torch. Use --rollout.backend vllm (with vLLM installed) for "
            "OpenRLHF's own vLLM engines."
        )

    @classmethod
    def from_engine_args(cls, *args: Any, **kwargs: Any) -> Any:
        return cls()


def _module(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    module.__latr_shim__ = True  # type: ignore[attr-defined]
    return module


def is_installed() -> bool:
    return bool(getattr(sys.modules.get("vllm"), "__latr_shim__", False))


def install() -> bool:
    """Registers the stand-in as `vllm` unless a vLLM is already imported. Returns whether the stand-in is
    (now) what `import vllm` gives."""
    if "vllm" in sys.modules:
        return is_installed()
    pynccl = _module("vllm.distributed.device_communicators.pynccl", PyNcclCommunicator=PyNcclCommunicator)
    communicators = _module("vllm.distributed.device_communicators", pynccl=pynccl)
    dist_utils = _module("vllm.distributed.utils", StatelessProcessGroup=StatelessProcessGroup)
    distributed = _module("vllm.distributed", utils=dist_utils, device_communicators=communicators)
    inputs = _module("vllm.inputs", TokensPrompt=TokensPrompt)
    utils = _module("vllm.utils", random_uuid=random_uuid)
    vllm = _module(
        "vllm",
        __version__=SHIM_VERSION,
        SamplingParams=SamplingParams,
        AsyncEngineArgs=_NoVLLMEngine,
        AsyncLLMEngine=_NoVLLMEngine,
        LLM=_NoVLLMEngine,
        inputs=inputs,
        utils=utils,
        distributed=distributed,
    )
    for module in (vllm, inputs, utils, distributed, dist_utils, communicators, pynccl):
        sys.modules[module.__name__] = module
    return True


def ray_worker_setup() -> None:
    """Ray `worker_process_setup_hook`: the stand-in, CPU flash-attn helpers when flash-attn is missing, and
    our sample-generator extensions, in every worker before OpenRLHF is imported there."""
    install()
    from openrlhf_ext.cpu_compat import install as install_cpu_compat

    install_cpu_compat()
    from openrlhf_ext.ray_patches import apply

    apply()
