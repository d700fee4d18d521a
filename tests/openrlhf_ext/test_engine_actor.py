"""The rollout engine actor in real Ray, and the weight-sync protocol over gloo (NCCL's stand-in on CPU)."""

import socket
import types

import pytest
import ray
import torch

import latr_sglang.tasks.reward_func as reward_module
from openrlhf_ext import vllm_shim
from openrlhf_ext.engine_actor import LATRRolloutActor


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


GREEDY = vllm_sampling_fields(temperature=0.0, max_tokens=8)


@pytest.fixture(scope="module")
def ray_cluster():
    # the stand-in for vLLM's names in this process and, through the setup hook, in every Ray worker
    vllm_shim.ray_worker_setup()
    ray.init(
        num_cpus=4,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"worker_process_setup_hook": "openrlhf_ext.vllm_shim.ray_worker_setup"},
    )
    yield
    ray.shutdown()


def push_random_weights(actor, model, prompt, label, seed=0):
    """Trainer side as OpenRLHF's PolicyModelActor does it: the engine joins the group named "openrlhf" at
    rank 1, rank 0 opens it with OpenRLHF's stateless_init_process_group, then per tensor update_weight +
    broadcast, then a prefix-cache reset. Returns the actor's greedy response afterwards."""
    from openrlhf.utils.distributed_util import stateless_init_process_group

    port = free_port()
    ref = actor.init_process_group.remote("127.0.0.1", port, 1, 2, "openrlhf", "gloo", False)
    group = stateless_init_process_group("127.0.0.1", port, 0, 2, "cpu")
    ray.get(ref)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    for name, tensor in model.state_dict().items():
        ref = actor.update_weight.remote(name, dtype=tensor.dtype, shape=tuple(tensor.shape))
        group.broadcast(tensor.contiguous(), src=0, stream=None)
        ray.get(ref)
    ray.get(actor.reset_prefix_cache.remote())
    return ray.get(actor.generate_responses.remote(prompt, label, GREEDY, 64, None, num_samples=1))


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
        assert "latr/branches_created" in out["extra_logs"]
        tree = {k: out["extra_logs"][f"latr/{k}"] for k in ("parent", "birth_step", "shared_prefix_len")}
        assert all(isinstance(v, float) for v in tree.values())  # tree metadata, -1 where none

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    before = ray.get(actor.generate_responses.remote(prompt, label, GREEDY, 64, None, num_samples=1))
    # weight sync through OpenRLHF's own trainer-side function (vLLM's group, here our stand-in over gloo)
    after = push_random_weights(actor, model, prompt, label)
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


# ---- OpenRLHF's own sample generator driving LATR engines -------------------------------------------------
COUNTDOWN = [
    ("Using the numbers [1, 2, 3], create an equation that equals 6.", '{"numbers": [1, 2, 3], "target": 6}'),
    ("Using the numbers [4, 5], create an equation that equals 9.", '{"numbers": [4, 5], "target": 9}'),
    ("Using the numbers [7, 2, 9], make 14.", '{"numbers": [7, 2, 9], "target": 14}'),
    ("Using the numbers [8, 3], create an equation that equals 5.", '{"numbers": [8, 3], "target": 5}'),
    ("Using the numbers [6, 6, 1], make 37.", '{"numbers": [6, 6, 1], "target": 37}'),
    ("Using the numbers [9, 1], create an equation that equals 8.", '{"numbers": [9, 1], "target": 8}'),
]
PARITY_REWARD = """
import torch
def reward_func(queries, prompts, labels, **kwargs):
    # 1 when the query's length is a multiple of 3: some groups differ, some are all 0
    scores = torch.tensor([float(len(q) % 3 == 0) for q in queries])
    return {"rewards": scores, "scores": scores, "extra_logs": {}}
"""


def latr_train_args(tiny_model_dir, reward_path, *extra):
    from openrlhf_ext.cli.train_ppo_ray import parse

    argv = [
        "--actor.model_name_or_path", str(tiny_model_dir),
        "--reward.remote_url", str(reward_path),
        "--rollout.backend", "torch",
        "--vllm.num_engines", "2",
        "--rollout.batch_size", "3",
        "--rollout.n_samples_per_prompt", "4",
        "--rollout.max_new_tokens", "12",
        "--algo.advantage.estimator", "group_norm",
        "--latr.tau_abs", "0.05", "--latr.tau_rel", "0.9",
        "--latr.lookahead_steps", "4,8", "--latr.chunk_size", "4",
        *extra,
    ]  # fmt: skip
    return parse(argv)


def openrlhf_generator(inv, tiny_model_dir, engines):
    from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator
    from transformers import AutoTokenizer

    batches = [(None, [prompt], [label], [None]) for prompt, label in COUNTDOWN]  # OpenRLHF's loader items
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    return SamplesGenerator(
        types.SimpleNamespace(args=inv.openrlhf), batches, batches[:2], tokenizer, engines
    )


GENERATE_KWARGS = {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 12, "max_len": 256}


def test_openrlhf_samples_generator_runs_on_latr_engines(ray_cluster, tiny_model_dir):
    """OpenRLHF's SamplesGenerator (the real class, importing vLLM names from our stand-in) dispatches to
    engines made by create_rollout_engines and turns their responses into Experiences."""
    from openrlhf_ext.engine_actor import create_rollout_engines

    inv = latr_train_args(tiny_model_dir, reward_module.__file__)
    engines = create_rollout_engines(2, 1, str(tiny_model_dir), 0, False, True, True, 256, ext=inv.ext(),
                                     remote_rm_url=reward_module.__file__)  # fmt: skip
    generator = openrlhf_generator(inv, tiny_model_dir, engines)
    samples, pass_rate, consumed, exhausted = generator.generate_samples(**GENERATE_KWARGS)
    assert len(samples) == 3 * 4 and consumed == 3 and pass_rate is None and not exhausted
    for exp in samples:
        n_actions = int(exp.action_mask.sum())
        assert 1 <= n_actions <= 12
        assert exp.rollout_log_probs.shape == exp.action_mask.shape
        assert (exp.rollout_log_probs[exp.action_mask.bool()] <= 0).all()
        assert float(exp.scores[0]) in (0.0, 1.0)
        names = {"latr/branches_created", "latr/origin_tree", "latr/pairwise_edit_distance", "latr/parent"}
        assert names | {"latr/birth_step", "latr/shared_prefix_len"} <= set(exp.info)
    # the step reached the engines (mix-ratio schedule): OpenRLHF's global step (0 before training) + 1
    assert ray.get([e.__ray_call__.remote(lambda a: a.training_step) for e in engines]) == [1, 1]
    assert any(float(exp.info["latr/origin_tree"][0]) == 1.0 for exp in samples)
    # OpenRLHF's evaluation samples plainly on the same engines (the paper validates with stochastic sampling)
    evaluated = generator.generate_eval_samples(**GENERATE_KWARGS)
    assert len(evaluated) == 2 * 4
    assert all(float(exp.info["latr/origin_tree"][0]) == 0.0 for exp in evaluated)
    for engine in engines:
        ray.kill(engine)


def test_dynamic_sampling_keeps_informative_groups_within_its_bound(ray_cluster, tiny_model_dir, tmp_path):
    from openrlhf_ext.engine_actor import create_rollout_engines

    reward_path = tmp_path / "parity_reward.py"
    reward_path.write_text(PARITY_REWARD)
    inv = latr_train_args(
        tiny_model_dir, reward_path, "--algo.dynamic_filtering_enable", "--dapo.max_sampling_rounds", "2"
    )
    engines = create_rollout_engines(2, 1, str(tiny_model_dir), 0, False, True, True, 256, ext=inv.ext(),
                                     remote_rm_url=str(reward_path))  # fmt: skip
    generator = openrlhf_generator(inv, tiny_model_dir, engines)
    samples, pass_rate, consumed, exhausted = generator.generate_samples(**GENERATE_KWARGS)
    assert 3 <= consumed <= 6 and not exhausted  # at most max_sampling_rounds x the batch
    counts = generator._latr_counts
    assert counts["prompts_drawn"] == consumed and counts["groups_generated"] == consumed
    kept = int(counts["groups_kept"])
    assert consumed == 3 or kept < consumed  # a replacement is drawn only for a dropped group
    # one meaning in both modes: the fraction of generated groups kept
    assert pass_rate == pytest.approx(kept / consumed)
    if kept == 3:  # a full batch: every group informative
        assert len(samples) == 3 * 4
    else:  # short: held back whole (every actor rank would otherwise get a different batch), step skipped
        assert samples == [] and len(generator._sample_buffer) == kept * 4
    batch = samples or generator._sample_buffer
    for start in range(0, len(batch), 4):
        scores = {float(e.scores[0]) for e in batch[start : start + 4]}
        assert scores == {0.0, 1.0}  # DAPO's rule: only groups whose scores differ
    for engine in engines:
        ray.kill(engine)


def test_sglang_backend_actor_launches_a_server_and_takes_weights_over_http(ray_cluster, tiny_model_dir):
    """The SGLang code path of the actor: it launches a server (our `latr-sglang serve`, which speaks SGLang's
    HTTP API, stands in for sglang.launch_server on CPU), generates through /generate, and the weights reach
    the server through SGLang's /init_weights_update_group + /update_weights_from_distributed."""
    import sys

    from transformers import AutoModelForCausalLM

    serve = [sys.executable, "-m", "latr_sglang.cli", "serve", "--model", str(tiny_model_dir)]
    serve += ["--port", "{port}", "--enable-weight-updates"]  # the trainer pushes weights from loopback
    actor = ray.remote(LATRRolloutActor).remote(
        str(tiny_model_dir),
        backend="sglang",
        latr={"tau_abs": 0.05, "tau_rel": 0.9, "lookahead_steps": [4, 8], "chunk_size": 4},
        sglang_launch={"command": serve, "launch_timeout_s": 120},
    )
    prompt, label = COUNTDOWN[0]
    sampled = vllm_sampling_fields()
    group = ray.get(actor.generate_responses.remote(prompt, label, sampled, 64, None, num_samples=4))
    assert len(group) == 4
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    before = ray.get(actor.generate_responses.remote(prompt, label, GREEDY, 64, None, num_samples=1))
    after = push_random_weights(actor, model, prompt, label, seed=1)
    assert after[0]["observation_tokens"] != before[0]["observation_tokens"]
    ids, start = after[0]["observation_tokens"], after[0]["action_ranges"][0][0]
    with torch.no_grad():
        expected = model.generate(torch.tensor([ids[:start]]), do_sample=False, max_new_tokens=8)[0, start:]
    assert ids[start:] == expected.tolist()[: len(ids) - start]
    ray.get(actor.shutdown.remote())


TIE_REWARD = """
import torch
def reward_func(queries, prompts, labels, **kwargs):
    scores = torch.zeros(len(queries))  # every group ties: dynamic sampling keeps none
    return {"rewards": scores, "scores": scores, "extra_logs": {}}
"""


def test_a_batch_dynamic_sampling_cannot_fill_is_skipped_then_topped_up(
    ray_cluster, tiny_model_dir, tmp_path
):
    from openrlhf_ext.engine_actor import create_rollout_engines

    reward_path = tmp_path / "tie_reward.py"
    reward_path.write_text(TIE_REWARD)
    inv = latr_train_args(
        tiny_model_dir, reward_path, "--algo.dynamic_filtering_enable", "--dapo.max_sampling_rounds", "1"
    )
    engines = create_rollout_engines(
        1, 1, str(tiny_model_dir), 0, False, True, True, 256, ext=inv.ext(), remote_rm_url=[str(reward_path)]
    )  # fmt: skip  (a list, as OpenRLHF passes)
    generator = openrlhf_generator(inv, tiny_model_dir, engines)
    samples, pass_rate, consumed, exhausted = generator.generate_samples(**GENERATE_KWARGS)
    # nothing informative within the bound: an empty batch (OpenRLHF's fit loop skips it on every rank),
    # not a short one, and not the end of the data
    assert (samples, pass_rate, consumed, exhausted) == ([], 0.0, 3, False)
    total, calls = consumed, 0
    while not exhausted and calls < 3:  # the other 3 prompts tie too: the data runs out, nothing trained
        samples, _, consumed, exhausted = generator.generate_samples(**GENERATE_KWARGS)
        assert samples == []
        total, calls = total + consumed, calls + 1
    assert exhausted and total == len(COUNTDOWN)
    ray.kill(engines[0])


def test_an_engine_that_cannot_start_fails_at_once_naming_why(ray_cluster, tiny_model_dir, tmp_path):
    import time

    from openrlhf_ext.engine_actor import create_rollout_engines

    inv = latr_train_args(tiny_model_dir, reward_module.__file__)
    start = time.monotonic()
    with pytest.raises(ray.exceptions.RayActorError, match=r"not-a-reward\.txt"):
        create_rollout_engines(1, 1, str(tiny_model_dir), 0, False, True, True, 256, ext=inv.ext(),
                               remote_rm_url=[str(tmp_path / "not-a-reward.txt")])  # fmt: skip
    assert time.monotonic() - start < 120  # not the weight-sync rendezvous timeout (300 s)
