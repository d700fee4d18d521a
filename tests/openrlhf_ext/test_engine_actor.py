"""The rollout engine actor in real Ray, and the weight-sync protocol over gloo (NCCL's stand-in on CPU)."""

import socket
import types

import pytest
import ray
import torch

import latr_sglang.tasks.reward_func as reward_module
from openrlhf_ext.engine_actor import LATRRolloutActor
from openrlhf_ext.weight_sync import WeightSyncGroup, broadcast_weights


def vllm_sampling_fields(**overrides):
    """The attributes of vLLM's SamplingParams that the actor reads (vLLM is not installed on CPU here);
    a SimpleNamespace so that Ray can ship it to the actor process."""
    fields = {
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": -1,
        "max_tokens": 16,
        "min_p": 0.0,
        "stop_token_ids": None,
        "logprobs": 1,
    }
    return types.SimpleNamespace(**{**fields, **overrides})


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_actor_serves_openrlhf_group_requests_and_takes_weights(ray_cluster, tiny_model_dir):
    Actor = ray.remote(LATRRolloutActor)
    latr = {"tau_abs": 0.05, "tau_rel": 0.9, "lookahead_steps": [4, 8], "chunk_size": 4}
    actor = Actor.remote(str(tiny_model_dir), latr=latr, remote_rm_url=reward_module.__file__)
    prompt = "Using the numbers [1, 2, 3], create an equation that equals 6."
    label = '{"numbers": [1, 2, 3], "target": 6}'
    outs = ray.get(
        actor.generate_responses.remote(prompt, label, vllm_sampling_fields(), 64, None, num_samples=4)
    )
    assert len(outs) == 4
    for out in outs:
        start, end = out["action_ranges"][0]
        assert end == len(out["observation_tokens"]) and 1 <= end - start <= 16
        assert len(out["rollout_log_probs"]) == end
        assert out["reward"] is not None and float(out["scores"]) in (0.0, 1.0)
        assert "latr_branches_created" in out["extra_logs"]

    # weight sync: this process is the trainer (rank 0), the actor is rank 1
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    greedy = vllm_sampling_fields(temperature=0.0, max_tokens=8)
    before = ray.get(actor.generate_responses.remote(prompt, label, greedy, 64, None, num_samples=1))
    port = free_port()
    ref = actor.init_process_group.remote("127.0.0.1", port, 1, 2, "openrlhf", "gloo", False)
    group = WeightSyncGroup("127.0.0.1", port, 0, 2, "gloo")
    ray.get(ref)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    count = broadcast_weights(group, [actor], model.state_dict().items())
    assert count == len(model.state_dict())
    after = ray.get(actor.generate_responses.remote(prompt, label, greedy, 64, None, num_samples=1))
    assert after[0]["observation_tokens"] != before[0]["observation_tokens"]

    # the engine now decodes exactly what the trainer's weights decode
    ids = after[0]["observation_tokens"]
    start = after[0]["action_ranges"][0][0]
    with torch.no_grad():
        expected = model.generate(torch.tensor([ids[:start]]), do_sample=False, max_new_tokens=8)[0, start:]
    assert ids[start:] == expected.tolist()[: len(ids) - start]


def test_bad_actor_arguments_are_named(tiny_model_dir):
    with pytest.raises(ValueError, match="sampler"):
        LATRRolloutActor(str(tiny_model_dir), sampler="beam")
    with pytest.raises(ValueError, match="sglang_url"):
        LATRRolloutActor(str(tiny_model_dir), backend="sglang")
