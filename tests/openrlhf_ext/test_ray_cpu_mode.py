"""openrlhf_ext.cpu_mode's answers to OpenRLHF's CUDA calls, checked one by one in a fresh process (it patches
torch.cuda process-wide, which must not leak into this test session)."""

import subprocess
import sys
import textwrap

CHECK = textwrap.dedent("""
    import sys, torch
    from openrlhf_ext import cpu_mode
    assert cpu_mode.install() is True
    cpu_mode.ray_worker_setup()  # idempotent, and what every Ray worker runs
    torch.cuda.set_device(0); torch.cuda.synchronize()
    assert torch.cuda.current_device() == "cpu" and torch.cuda.current_stream() is None
    assert torch.tensor([1], device=torch.cuda.current_device()).device.type == "cpu"
    from openrlhf.trainer.ppo_utils.replay_buffer import NaiveReplayBuffer
    assert NaiveReplayBuffer(2).target_device == torch.device("cpu")
    from openrlhf.utils.deepspeed import deepspeed as ds
    config = ds.get_train_ds_config(False, adam_offload=False, optim_config={"type": "AdamW", "params": {}})
    assert config["optimizer"]["params"]["torch_adam"] is True  # torch's AdamW: no FusedAdam op to compile
    assert sys.modules["deepspeed.comm.torch"].build_shm_op() is None  # no shared-memory op to compile
    assert ds.init_device_mesh.__module__ == "openrlhf_ext.cpu_mode"
    print("ok")
""")


def test_cpu_mode_answers_each_cuda_call_openrlhf_makes():
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_nothing_is_patched_without_the_flag():
    code = "import torch, openrlhf_ext.cli.train_ppo_ray, openrlhf_ext.vllm_shim as s; s.ray_worker_setup(); "
    code += "import openrlhf_ext.cpu_mode as c; print(torch.cuda.synchronize.__module__, c._installed)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-2:] == ["torch.cuda", "False"]
