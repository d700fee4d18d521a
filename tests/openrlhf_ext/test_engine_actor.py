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


def test_an_sglang_backed_sync_asks_the_server_to_flush_its_cache_at_the_last_tensor(tiny_model_dir):
    """SGLang keeps its radix cache across /update_weights_from_distributed unless the request sets
    flush_cache, and OpenRLHF calls reset_prefix_cache only with --vllm.enable_prefix_caching: the sync's
    last tensor (OpenRLHF's empty_cache=True) asks the server for the flush, the others do not. Our server
    (a real HTTP server on 127.0.0.1) counts the flushes it was asked for."""
    import asyncio

    from latr_sglang.engines.torch_engine import TorchEngine
    from latr_sglang.engines.weight_sync import WeightSyncGroup
    from latr_sglang.server import ServerThread

    engine = TorchEngine.from_pretrained(str(tiny_model_dir))
    server = ServerThread(engine, enable_weight_updates=True).start()
    received: list[str] = []
    flushed_after: list[int] = []  # how many tensors had arrived at each flush the server was asked for
    update, flush = engine.update_weights, engine.flush_cache

    async def counting_update(tensors):
        received.extend(tensors)
        await update(tensors)

    async def counting_flush():
        flushed_after.append(len(received))
        await flush()

    engine.update_weights, engine.flush_cache = counting_update, counting_flush
    actor = LATRRolloutActor(str(tiny_model_dir), backend="sglang", sglang_url=server.url)
    from transformers import AutoModelForCausalLM

    # the weights it already holds, under the names OpenRLHF's trainer sends
    weights = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).state_dict()
    names = list(weights)[:3]

    async def sync() -> None:
        port = free_port()
        joining = actor.init_process_group("127.0.0.1", port, 1, 2, "openrlhf", "gloo", False)
        trainer, _ = await asyncio.gather(
            asyncio.to_thread(WeightSyncGroup, "127.0.0.1", port, 0, 2, "gloo", "openrlhf"), joining
        )
        for i, name in enumerate(names):
            tensor = weights[name].contiguous()
            last = i == len(names) - 1
            await asyncio.gather(
                actor.update_weight(name, tensor.dtype, tuple(tensor.shape), empty_cache=last),
                asyncio.to_thread(trainer.broadcast, tensor, 0),
            )

    try:
        asyncio.run(sync())
    finally:
        actor.shutdown()
        server.stop()
        engine.close_sync()
    assert received == names
    assert flushed_after == [len(names)]


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


# ---- the reward file: its return value, its time bound, its errors (no Ray: the actor class directly) -----
def test_reward_values_accepts_openrlhfs_conventions():
    import numpy as np

    from openrlhf_ext.engine_actor import reward_values

    t = torch.tensor([1.0, 0.0])
    assert reward_values({"rewards": t, "scores": t, "extra_logs": {}}, 2, "r.py") == (
        [1.0, 0.0],
        [1.0, 0.0],
        {},
    )
    assert reward_values({"rewards": [1, 0.5]}, 2, "r.py") == ([1.0, 0.5], None, {})
    assert reward_values(t, 2, "r.py") == ([1.0, 0.0], None, {})  # a bare tensor: OpenRLHF's older convention
    assert reward_values((0.0, 1.0), 2, "r.py")[0] == [0.0, 1.0]
    assert reward_values(np.array([[1.0], [2.0]]), 2, "r.py")[0] == [1.0, 2.0]  # (n, 1)
    assert reward_values({"rewards": 0.5}, 1, "r.py")[0] == [0.5]  # one number for one sample
    logs = {"a": 2, "b": [1, 2], "c": torch.tensor([3.0, 4.0]), "d": torch.tensor(5.0)}
    _, _, extra = reward_values({"rewards": [0, 1], "extra_logs": logs}, 2, "r.py")
    assert extra == {"a": [2.0, 2.0], "b": [1.0, 2.0], "c": [3.0, 4.0], "d": [5.0, 5.0]}


@pytest.mark.parametrize(
    ("returned", "named"),
    [
        (None, "reward_func must return a dict with 'rewards' (one number per sample"),
        ("1.0", "reward_func must return a dict with 'rewards'"),
        ({"score": [1.0, 1.0]}, "returned a dict without 'rewards' (keys: 'score')"),
        ({"rewards": []}, "reward_func's 'rewards' has 0 values for 2 samples; got list []"),
        ({"rewards": "1"}, "reward_func's 'rewards' must be 2 numbers (one per sample); got str '1'"),
        ({"rewards": [1.0, "x"]}, "reward_func's 'rewards' must be numbers, not str"),
        ({"rewards": [1.0, None]}, "must be numbers, not NoneType"),
        ({"rewards": torch.zeros(2, 2)}, "not of shape (2, 2)"),
        (torch.ones(3), "return value has 3 values for 2 samples"),
        ({"rewards": [1, 0], "scores": [1]}, "'scores' has 1 values for 2 samples"),
        ({"rewards": [1, 0], "extra_logs": {"note": "abc"}}, "extra_logs['note'] must be 2 numbers"),
        ({"rewards": [1, 0], "extra_logs": ["abc"]}, "'extra_logs' must be a dict of numbers"),
        ({"rewards": [1, 0], "extra_logs": {"n": [1.0]}}, "extra_logs['n'] has 1 values for 2 samples"),
    ],
)
def test_a_malformed_reward_return_value_is_named(returned, named):
    from openrlhf_ext.engine_actor import reward_values

    with pytest.raises(ValueError) as exc:
        reward_values(returned, 2, "my_reward.py")
    assert str(exc.value).startswith("--reward.remote_url my_reward.py: ") and named in str(exc.value)


def test_a_huge_return_value_gives_a_short_message():
    from openrlhf_ext.engine_actor import reward_values

    with pytest.raises(ValueError) as exc:
        reward_values({"rewards": "x" * 10**6}, 2, "r.py")
    assert len(str(exc.value)) < 400


REWARD_FILES = {
    "hang": "import time\ndef reward_func(queries, prompts, labels):\n    time.sleep(10**6)\n",
    "raises": "def reward_func(queries, prompts, labels):\n    raise ValueError('boom from user reward')\n",
    "nan": (
        "def reward_func(queries, prompts, labels):\n"
        "    n = len(queries)\n"
        "    return {'rewards': [float('nan')] + [1.0] * (n - 1), 'scores': [1.0] * n}\n"
    ),
    "tensor": (
        "import torch\ndef reward_func(queries, prompts, labels):\n    return torch.ones(len(queries))\n"
    ),
    "strrewards": (
        "def reward_func(queries, prompts, labels):\n"
        "    return {'rewards': '1', 'scores': '1', 'extra_logs': {'note': 'abc'}}\n"
    ),
    "strlogs": (
        "def reward_func(queries, prompts, labels):\n"
        "    return {'rewards': [1.0] * len(queries), 'extra_logs': {'note': 'abc'}}\n"
    ),
    # the group in one call; its first call returns, later ones hang (a time bound in the middle of a run)
    "counted": (
        "import time\nCALLS = []\n"
        "def reward_func(queries, prompts, labels, responses=None):\n"
        "    CALLS.append(len(queries))\n"
        "    if len(CALLS) > 1:\n        time.sleep(10**6)\n"
        "    return {'rewards': [0.5] * len(queries), 'extra_logs': {'calls': float(len(CALLS))}}\n"
    ),
}
PLAIN = vllm_sampling_fields(max_tokens=4)


def actor_with_reward(tiny_model_dir, tmp_path, name, timeout=1.0):
    path = tmp_path / f"{name}.py"
    path.write_text(REWARD_FILES[name])
    actor = LATRRolloutActor(
        str(tiny_model_dir), sampler="stochastic", remote_rm_url=[str(path)], reward_timeout_s=timeout
    )
    return actor, str(path)


def generate(actor, n=3):
    import asyncio

    return asyncio.run(actor.generate_responses("Q: hi\n", "5", PLAIN, 64, num_samples=n))


def test_a_reward_call_past_its_time_bound_scores_0_with_one_warning(tiny_model_dir, tmp_path, caplog):
    import time

    actor, path = actor_with_reward(tiny_model_dir, tmp_path, "hang", timeout=0.5)
    start = time.monotonic()
    with caplog.at_level("WARNING", logger="openrlhf_ext.engine_actor"):
        outs = generate(actor)
    assert time.monotonic() - start < 30
    assert [(o["reward"], o["scores"]) for o in outs] == [(0.0, 0.0)] * 3
    assert all(o["extra_logs"]["latr/reward_timeout"] == 1.0 for o in outs)
    warnings = [r.getMessage() for r in caplog.records if "did not return within" in r.getMessage()]
    assert len(warnings) == 1 and path in warnings[0] and "--trainer.reward_timeout_s" in warnings[0]


def test_a_hung_reward_call_does_not_keep_the_process_from_exiting(tiny_model_dir, tmp_path):
    """asyncio.to_thread's threads are joined at interpreter exit: a reward that never returns held the
    process forever (killed at 45 s in the audit). The call runs in a daemon thread now."""
    import subprocess
    import sys

    path = tmp_path / "hang.py"
    path.write_text(REWARD_FILES["hang"])
    script = (
        "import asyncio, types\n"
        "from openrlhf_ext.engine_actor import LATRRolloutActor\n"
        f"a = LATRRolloutActor({str(tiny_model_dir)!r}, sampler='stochastic', remote_rm_url=[{str(path)!r}],"
        " reward_timeout_s=0.5)\n"
        "p = types.SimpleNamespace(max_tokens=4, temperature=1.0, top_p=1.0, top_k=-1)\n"
        "outs = asyncio.run(a.generate_responses('Q: hi\\n', '5', p, 64, num_samples=2))\n"
        "print('rewards', [o['reward'] for o in outs])\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rewards [0.0, 0.0]" in proc.stdout


def test_a_reward_that_raises_stops_the_rollout_naming_the_file(tiny_model_dir, tmp_path):
    actor, path = actor_with_reward(tiny_model_dir, tmp_path, "raises")
    with pytest.raises(RuntimeError) as exc:
        generate(actor)
    assert (
        str(exc.value) == f"--reward.remote_url {path}: reward_func raised ValueError: boom from user reward"
    )
    assert isinstance(exc.value.__cause__, ValueError)


def test_non_finite_rewards_score_0_and_are_counted(tiny_model_dir, tmp_path, caplog):
    actor, path = actor_with_reward(tiny_model_dir, tmp_path, "nan")
    with caplog.at_level("WARNING", logger="openrlhf_ext.engine_actor"):
        outs = generate(actor)
    assert [o["reward"] for o in outs] == [0.0, 1.0, 1.0] and [o["scores"] for o in outs] == [0.0, 1.0, 1.0]
    assert [o["extra_logs"]["latr/reward_nonfinite"] for o in outs] == [1.0, 0.0, 0.0]
    assert any("non-finite" in r.getMessage() and path in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("name", "named"),
    [
        ("strrewards", "reward_func's 'rewards' must be 3 numbers (one per sample); got str '1'"),
        ("strlogs", "reward_func's extra_logs['note'] must be 3 numbers (one per sample); got str 'abc'"),
    ],
)
def test_strings_from_the_reward_are_refused_not_indexed(tiny_model_dir, tmp_path, name, named):
    actor, path = actor_with_reward(tiny_model_dir, tmp_path, name)
    with pytest.raises(ValueError) as exc:
        generate(actor)
    assert str(exc.value) == f"--reward.remote_url {path}: {named}"


def test_a_bare_reward_tensor_is_openrlhfs_older_convention(tiny_model_dir, tmp_path):
    actor, _ = actor_with_reward(tiny_model_dir, tmp_path, "tensor")
    outs = generate(actor)
    assert [(o["reward"], o["scores"]) for o in outs] == [(1.0, 1.0)] * 3


def test_the_group_is_one_reward_call_and_keeps_its_log_names_past_a_timeout(tiny_model_dir, tmp_path):
    actor, _ = actor_with_reward(tiny_model_dir, tmp_path, "counted", timeout=0.5)
    first = generate(actor, n=4)
    assert [o["reward"] for o in first] == [0.5] * 4 and first[0]["extra_logs"]["calls"] == 1.0  # one call
    later = generate(
        actor, n=4
    )  # the second call hangs: 0, and the same extra_logs names (OpenRLHF stacks them)
    assert [o["reward"] for o in later] == [0.0] * 4
    assert (
        set(later[0]["extra_logs"]) == set(first[0]["extra_logs"]) and later[0]["extra_logs"]["calls"] == 0.0
    )


def test_the_reward_time_bound_must_be_positive(tiny_model_dir):
    for bad in (0, -1, float("nan"), float("inf"), "5"):
        with pytest.raises(ValueError, match="reward_timeout_s"):
            LATRRolloutActor(str(tiny_model_dir), reward_timeout_s=bad)


def test_loading_a_reward_file_names_it_on_every_failure(tmp_path):
    from openrlhf_ext.engine_actor import load_reward_func

    cases = {
        "importerr.py": (
            "import nonexistent_module_xyz\ndef reward_func(q, p, l):\n    return {}\n",
            "imports nonexistent_module_xyz, which this Python",
        ),
        # a missing module that only a conditional import names is found when the file runs
        "condimport.py": (
            "try:\n    import nonexistent_module_xyz\nexcept KeyError:\n    pass\n"
            "def reward_func(q, p, l):\n    return {}\n",
            "loading it raised ModuleNotFoundError: No module named 'nonexistent_module_xyz'",
        ),
        "raises.py": (
            "raise RuntimeError('no GPU')\ndef reward_func(q, p, l):\n    return {}\n",
            "RuntimeError: no GPU",
        ),
        "notcallable.py": ("reward_func = 5\n", "reward_func is int 5, not a function"),
        "syntax.py": ("def reward_func(q, p, l)\n    return {}\n", "SyntaxError at line 1"),
        "missing.py": (None, "no such file"),
    }
    for name, (text, named) in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(ValueError) as exc:
            load_reward_func([str(path)])
        assert str(exc.value).startswith(f"--reward.remote_url {path}: ") and named in str(exc.value), name


def test_a_reward_file_may_import_installed_packages_its_siblings_and_optional_ones(tmp_path):
    from openrlhf_ext.engine_actor import reward_file_problem

    (tmp_path / "helper_xyz.py").write_text("def f():\n    return 1\n")
    (tmp_path / "pkg_xyz").mkdir()
    path = tmp_path / "reward.py"
    path.write_text(
        "from __future__ import annotations\nimport math, json.decoder\nimport sys\nimport numpy as np\n"
        "import helper_xyz\nfrom pkg_xyz import thing\nfrom . import nothing_relative\n"
        "try:\n    import optional_missing_xyz\nexcept ImportError:\n    optional_missing_xyz = None\n"
        "def reward_func(q, p, l):\n    import lazily_missing_xyz\n    return {}\n"
    )
    assert reward_file_problem(str(path)) is None
