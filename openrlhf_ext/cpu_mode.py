"""`--trainer.device cpu` for OpenRLHF's Ray trainer: the CUDA calls OpenRLHF 0.11.2 makes unconditionally,
answered on a CPU-only machine. A debugging and CI mode: the distributed logic runs for real (Ray actors,
DeepSpeed on its CPU accelerator over gloo, the reference model, the experience maker, the weight broadcast to
our engine actors, checkpoints), only the device is the CPU.

Installed only when `--trainer.device cpu` is given: in the driver (`run_ray`) and, through Ray's
`worker_process_setup_hook` (`ray_worker_setup` below), in every Ray worker before OpenRLHF runs there. Each
patch names the OpenRLHF line it answers (paths under site-packages/openrlhf). Nothing here touches CUDA
behaviour on a machine that has CUDA: `install()` refuses to run where `torch.cuda.is_available()`.

What it does not stand in for, and a GPU run still has to prove: NCCL (DeepSpeed's collectives and the
weight-sync group run over gloo here), CUDA kernels (flash-attn, fused Adam; DeepSpeed runs torch's AdamW
here), CUDA IPC weight sync (`--train.colocate_all`), SGLang's runtime (the torch engine rolls out here).
"""

from __future__ import annotations

import os
from typing import Any

import torch

# Environment for every Ray worker in CPU mode. DS_ACCELERATOR pins DeepSpeed's CPU accelerator (it would
# auto-detect it, but a stray CUDA-built torch must not flip it). DS_BUILD_OPS=0 is the install-time switch;
# the two ops DeepSpeed would still JIT-compile on first use are avoided below (shm comm, FusedAdam).
WORKER_ENV = {"DS_ACCELERATOR": "cpu", "DS_BUILD_OPS": "0"}

_installed = False


# One function per patched name: torch._dynamo maps torch functions to tracing rules by identity and refuses
# one object under two names with different rules.
def _set_device(*_: Any, **__: Any) -> None:
    return None


def _synchronize(*_: Any, **__: Any) -> None:
    return None


def _current_stream(*_: Any, **__: Any) -> None:
    return None


def _cpu_device(*_: Any, **__: Any) -> str:
    return "cpu"


def _no_shm_op(*_: Any, **__: Any) -> None:
    return None


def install() -> bool:
    """Applies every CPU answer in this process; returns False (and changes nothing) where CUDA exists."""
    global _installed
    if _installed:
        return True
    if torch.cuda.is_available():
        return False
    for key, value in WORKER_ENV.items():
        os.environ.setdefault(key, value)
    # the OpenRLHF modules patched below import flash-attn and vLLM names at load: their stand-ins first
    from openrlhf_ext import cpu_compat, vllm_shim

    vllm_shim.install()
    cpu_compat.install()

    # utils/deepspeed/deepspeed.py:97  torch.cuda.set_device(local_rank)  (setup_distributed)
    torch.cuda.set_device = _set_device
    # utils/distributed_util.py:10  torch.cuda.synchronize()  (torch_dist_barrier_and_cuda_sync, used by
    # ppo_actor.py:106/466/490/683 and deepspeed.py:597/757); also launcher.py:65, ppo_actor.py:605,
    # deepspeed_utils.py:189/211
    torch.cuda.synchronize = _synchronize
    # trainer/ray/ppo_actor.py:148/171/627, launcher.py:136/190, replay_buffer.py:104/129/159/165,
    # deepspeed.py:614/633/634: torch.cuda.current_device() used as a device -> "cpu". (ppo_actor.py:148
    # passes it to stateless_init_process_group, where our PyNcclCommunicator then picks gloo.)
    torch.cuda.current_device = _cpu_device
    # trainer/ray/ppo_actor.py:436  broadcast(param.data, src=0, stream=torch.cuda.current_stream()):
    # our PyNcclCommunicator ignores the stream
    torch.cuda.current_stream = _current_stream
    _patch_openrlhf()
    _patch_deepspeed()
    _installed = True
    return True


def _patch_openrlhf() -> None:
    from openrlhf.trainer.ppo_utils import replay_buffer
    from openrlhf.utils.deepspeed import deepspeed as ds_strategy

    # utils/deepspeed/deepspeed.py:105  init_device_mesh("cuda", (dp, sp, tp)): a CPU mesh over the gloo group
    original_mesh = ds_strategy.init_device_mesh

    def init_device_mesh(device_type: str, *args: Any, **kwargs: Any):
        return original_mesh("cpu" if device_type == "cuda" else device_type, *args, **kwargs)

    ds_strategy.init_device_mesh = init_device_mesh

    # trainer/ppo_utils/replay_buffer.py:40  self.target_device = torch.device(f"cuda:{current_device()}")
    buffer_cls = replay_buffer.NaiveReplayBuffer
    original_init = buffer_cls.__init__

    def buffer_init(self, *args: Any, **kwargs: Any) -> None:
        current = torch.cuda.current_device
        torch.cuda.current_device = lambda: 0  # the f-string needs a number; the device is replaced below
        try:
            original_init(self, *args, **kwargs)
        finally:
            torch.cuda.current_device = current
        self.target_device = torch.device("cpu")

    buffer_cls.__init__ = buffer_init

    # utils/deepspeed/deepspeed_utils.py:71-73  the optimizer config lets DeepSpeed pick FusedAdam, whose CPU
    # builder JIT-compiles a C++ op on first use (minutes on 2 cores): ask it for torch's AdamW instead
    # ("torch_adam", deepspeed/runtime/engine.py:2172). Same update rule, no compiled op.
    original_config = ds_strategy.get_train_ds_config

    def get_train_ds_config(*args: Any, **kwargs: Any) -> dict:
        config = original_config(*args, **kwargs)
        optimizer = config.get("optimizer")
        if optimizer and str(optimizer.get("type", "")).lower() in ("adam", "adamw"):
            optimizer.setdefault("params", {})["torch_adam"] = True
        return config

    ds_strategy.get_train_ds_config = get_train_ds_config


def _patch_deepspeed() -> None:
    import importlib

    # by name: `import deepspeed.comm.torch as m` would give the torch package (deepspeed.comm's attribute)
    ds_torch_comm = importlib.import_module("deepspeed.comm.torch")

    # deepspeed/comm/torch.py:191  TorchBackend builds the CPU shared-memory all-reduce op (a C++ JIT
    # compile on first init_distributed, ~45 s to minutes). It only speeds up CPU all-reduce; gloo does it.
    ds_torch_comm.build_shm_op = _no_shm_op


def ray_init_resources(args: Any, num_engines: int) -> dict[str, int]:
    """Logical resources for `ray.init` on a machine without GPUs: OpenRLHF's placement groups ask for
    {"GPU": 1, "CPU": 1} per training rank (cli/train_ppo_ray.py:48, launcher.py:104/157, ppo_actor.py:493),
    so Ray is told of as many GPUs as the training ranks need (colocated roles share them), and of enough
    logical CPUs for those bundles, the engine actors and the trainer actor. Nothing runs on a GPU."""
    actor = args.actor.num_nodes * args.actor.num_gpus_per_node
    colocated_ref = args.train.colocate_actor_ref or args.train.colocate_all
    ref = (
        args.ref.num_nodes * args.ref.num_gpus_per_node
        if args.algo.kl.init_coef > 0 and not colocated_ref
        else 0
    )
    critic = reward = 0
    if args.critic.model_name_or_path:  # more than colocation needs is harmless: these GPUs are logical
        critic = args.critic.num_nodes * args.critic.num_gpus_per_node
    if not args.reward.remote_url:
        reward = args.reward.num_nodes * args.reward.num_gpus_per_node
    gpus = actor + ref + critic + reward
    return {"num_gpus": gpus, "num_cpus": gpus + num_engines + 4}


def ray_worker_setup() -> None:
    """Ray `worker_process_setup_hook` in CPU mode: the vLLM stand-in and our extensions, then cpu_mode."""
    from openrlhf_ext.vllm_shim import ray_worker_setup as base_setup

    base_setup()
    install()
