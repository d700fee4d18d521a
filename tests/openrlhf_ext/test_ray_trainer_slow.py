"""OpenRLHF's own Ray trainer driven by `latr-train` on CPU, as far as it goes without a GPU.

It cannot finish here: OpenRLHF's DeepSpeed strategy calls torch.cuda.set_device in every training actor
(openrlhf/utils/deepspeed/deepspeed.py, setup_distributed), and its placement groups ask for GPUs. With Ray
given logical GPUs, everything before that runs for real: flag parsing and OpenRLHF's validation, our engine
factory in place of create_vllm_engines, the vLLM stand-in in every worker through the setup hook (the
PPOTrainer actor imports OpenRLHF's vLLM modules), the PolicyModelActor start. The test pins that frontier:
if it fails because the run got further (or stopped earlier, on an import), this is the place to look.
"""

import json
import subprocess
import sys
import textwrap

import pytest

import latr_sglang.tasks.reward_func as reward_module


@pytest.mark.slow
def test_openrlhf_ray_trainer_runs_until_deepspeed_needs_cuda(tmp_path, tiny_model_dir):
    data = tmp_path / "prompts.jsonl"
    label = '{"numbers": [1, 2], "target": 3}'
    rows = [{"prompt": f"Using the numbers [1, 2], make {i}.", "label": label} for i in range(8)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    argv = [
        "--actor.model_name_or_path", str(tiny_model_dir), "--reward.remote_url", reward_module.__file__,
        "--rollout.backend", "torch", "--vllm.num_engines", "1",
        "--actor.num_gpus_per_node", "1", "--ref.num_gpus_per_node", "1",
        "--rollout.batch_size", "2", "--rollout.n_samples_per_prompt", "2", "--rollout.micro_batch_size", "2",
        "--train.batch_size", "4", "--train.micro_batch_size", "2", "--rollout.max_new_tokens", "8",
        "--data.max_len", "128", "--algo.advantage.estimator", "group_norm", "--algo.kl.init_coef", "0",
        "--data.prompt_dataset", str(data), "--data.input_key", "prompt", "--data.label_key", "label",
        "--ds.attn_implementation", "sdpa", "--ds.zero_stage", "0",
        "--ckpt.output_dir", str(tmp_path / "out"),
        "--latr.lookahead_steps", "4,8", "--latr.chunk_size", "4",
    ]  # fmt: skip
    script = textwrap.dedent(f"""
        import sys, ray
        ray.init(num_cpus=4, num_gpus=2, include_dashboard=False,
                 runtime_env={{"worker_process_setup_hook": "openrlhf_ext.vllm_shim.ray_worker_setup"}})
        from openrlhf_ext.cli.train_ppo_ray import main
        sys.exit(main({argv!r}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "No module named 'vllm'" not in log and "ModuleNotFoundError" not in log
    assert "PolicyModelActor.init_model_from_pretrained" in log  # the training actor started
    assert "torch.cuda.set_device(local_rank)" in log  # and stopped at DeepSpeed's CUDA setup
