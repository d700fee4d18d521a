"""The OpenRLHF wrappers: inert without latr-train's settings; overlong filtering on OpenRLHF's Experience and
OpenRLHF's real policy/KL loss."""

import types

import torch

from openrlhf_ext import vllm_shim


def test_overlong_filtering_masks_truncated_samples_out():
    vllm_shim.ray_worker_setup()
    from openrlhf.trainer.ppo_utils.experience import Experience

    from openrlhf_ext.ray_patches import overlong_filter

    exp = Experience(
        advantages=torch.tensor([[1.0, 2.0], [3.0, 4.0]]),
        returns=torch.tensor([[1.0, 2.0], [3.0, 4.0]]),
        action_mask=torch.tensor([[True, True], [True, False]]),
        truncated=torch.tensor([True, False]),
    )
    overlong_filter([exp])
    assert exp.advantages.tolist() == [[0.0, 0.0], [3.0, 4.0]]
    assert exp.returns.tolist() == [[0.0, 0.0], [3.0, 4.0]]
    assert exp.action_mask.tolist() == [[False, False], [True, False]]
    assert exp.info["overlong_filtered"].tolist() == [1.0, 0.0]


def test_overlong_filtering_keeps_a_loss_when_every_sample_is_truncated():
    vllm_shim.ray_worker_setup()
    from openrlhf.trainer.ppo_utils.experience import Experience

    from openrlhf_ext.ray_patches import overlong_filter

    exp = Experience(
        advantages=torch.tensor([[1.0, 2.0]]),
        action_mask=torch.tensor([[True, True]]),
        truncated=torch.tensor([True]),
    )
    overlong_filter([exp])
    assert exp.advantages.tolist() == [[0.0, 0.0]]
    assert exp.action_mask.tolist() == [[True, True]]  # a 0/0 token mean otherwise


def test_a_filtered_sample_adds_no_gradient_to_openrlhfs_policy_and_kl_loss():
    vllm_shim.ray_worker_setup()
    from openrlhf.models.loss import PolicyLoss, aggregate_loss
    from openrlhf.models.utils import compute_approx_kl
    from openrlhf.trainer.ppo_utils.experience import Experience

    from openrlhf_ext.ray_patches import overlong_filter

    torch.manual_seed(0)
    old = torch.randn(3, 4)
    ref = torch.randn(3, 4)
    exp = Experience(
        advantages=torch.tensor([[1.0] * 4, [-1.0] * 4, [0.5] * 4]),
        action_mask=torch.ones(3, 4, dtype=torch.bool),
        truncated=torch.tensor([True, False, False]),
    )
    overlong_filter([exp])
    loss_fn = PolicyLoss(clip_eps_low=0.2, clip_eps_high=0.28)

    def loss_of(log_probs, rows):
        mask = exp.action_mask[rows].float()
        info = {"dp_size": 1, "batch_num_tokens": mask.sum(), "global_batch_size": None}
        policy = loss_fn(log_probs, old[rows], exp.advantages[rows], action_mask=mask, **info)[0]
        kl = compute_approx_kl(log_probs, ref[rows], kl_estimator="k3")
        return policy + 0.01 * aggregate_loss(kl, mask, **info)

    log_probs = (old + 0.1 * torch.randn(3, 4)).requires_grad_()
    loss = loss_of(log_probs, slice(None))
    loss.backward()
    assert torch.all(log_probs.grad[0] == 0)  # the truncated sample: no policy, KL or denominator share
    assert torch.all(log_probs.grad[1:] != 0)
    # the same loss as if it had never been in the batch (the token-mean counts only the others' tokens)
    alone = loss_of(log_probs.detach()[1:], slice(1, None))
    assert torch.isclose(loss.detach(), alone)


def test_wrappers_are_installed_once_and_inert_without_latr_ext():
    vllm_shim.ray_worker_setup()
    from openrlhf.trainer.ppo_utils import samples_generator

    from openrlhf_ext import ray_patches

    generator_cls = samples_generator.SamplesGenerator
    ray_patches.apply()
    wrapped = generator_cls._generate_vllm
    ray_patches.apply()
    assert generator_cls._generate_vllm is wrapped and generator_cls._latr_patched

    # plain OpenRLHF args (no latr_ext): dynamic filtering takes OpenRLHF's own path, which returns
    # ([], 0, True) on an empty dataloader (ours would need args.latr_ext["dapo"] and fail without it)
    generator = generator_cls.__new__(generator_cls)
    generator.args = types.SimpleNamespace(algo=types.SimpleNamespace(dynamic_filtering_range=(0, 1)))
    assert ray_patches._ext(generator) is None
    assert generator._generate_vllm(iter([]), 4, True) == ([], 0, True)


def _reverse_finishing_generator(ray, labels: list[str]):
    """A SamplesGenerator whose engine calls finish in reverse dispatch order (real Ray tasks that sleep
    less the later they are sent), each returning a group of 2 responses tagged with its prompt."""
    from openrlhf.trainer.ppo_utils import samples_generator

    @ray.remote
    def group_of(prompt: str, label: str, delay: float) -> list[dict]:
        import time

        time.sleep(delay)
        score = 1.0 if label == "mix" else 0.0
        return [{"prompt": prompt, "score": score}, {"prompt": prompt, "score": 0.0}]

    generator = samples_generator.SamplesGenerator.__new__(samples_generator.SamplesGenerator)
    sent = []

    def dispatch(prompts, labels, images=None, **kwargs):
        refs = []
        for prompt, label in zip(prompts, labels):
            sent.append(prompt)
            refs.append(group_of.remote(prompt, label, max(0.0, 1.2 - 0.3 * len(sent))))
        return refs

    def to_experience(response, **kwargs):
        score = torch.tensor([response["score"]])
        return types.SimpleNamespace(prompt=response["prompt"], scores=score, rewards=score)

    generator._dispatch_prompts_to_vllm = dispatch
    generator._process_response_into_experience = to_experience
    dapo = {"dynamic_filtering_metric": "score", "max_sampling_rounds": 2, "dynamic_filtering_rule": "std"}
    generator.args = types.SimpleNamespace(
        algo=types.SimpleNamespace(dynamic_filtering_range=(0.0, 1.0)), latr_ext={"dapo": dapo}
    )
    data = iter([{"prompt": f"p{i}", "label": lab} for i, lab in enumerate(labels)])
    return generator, data, sent


def _batch_iter(rows):
    # OpenRLHF's prompt dataloader yields (datasources, prompts, labels, images) batches; here of one
    for row in rows:
        yield ["default"], [row["prompt"]], [row["label"]], [None]


def test_groups_come_back_in_dispatch_order_not_finish_order():
    """Without dynamic sampling and with it (a dropped group's replacement is dispatched last): the replay
    buffer's order is the prompts' order, whichever engine call finishes first (a resumed step must see the
    same micro-batches as the uninterrupted one)."""
    import ray

    from openrlhf_ext import ray_patches

    vllm_shim.ray_worker_setup()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        generator, data, sent = _reverse_finishing_generator(ray, ["mix"] * 4)
        experiences, consumed, _ = ray_patches.generate_in_dispatch_order(generator, _batch_iter(data), 4)
        assert consumed == 4 and sent == ["p0", "p1", "p2", "p3"]
        assert [e.prompt for e in experiences] == ["p0", "p0", "p1", "p1", "p2", "p2", "p3", "p3"]

        # p1 ties (all 0): dropped, replaced by p4, dispatched after p3; p3 finishes first, p4 last
        generator, data, sent = _reverse_finishing_generator(ray, ["mix", "tie", "mix", "mix", "mix"])
        experiences, consumed, _ = ray_patches.generate_with_dynamic_sampling(generator, _batch_iter(data), 4)
        assert consumed == 5 and sent == ["p0", "p1", "p2", "p3", "p4"]
        assert [e.prompt for e in experiences][::2] == ["p0", "p2", "p3", "p4"]
    finally:
        ray.shutdown()


def _experience(prompt: str, info: dict[str, float]):
    from openrlhf.trainer.ppo_utils.experience import Experience

    return Experience(
        sequences=torch.tensor([[1, 2, 3]]),
        attention_mask=torch.ones(1, 3, dtype=torch.long),
        action_mask=torch.ones(1, 2, dtype=torch.bool),
        rewards=torch.tensor([0.5]),
        prompts=[prompt],
        labels=["1"],
        info={key: torch.tensor([value]) for key, value in info.items()},
    )


def test_a_batch_whose_samples_carry_different_metric_names_is_aligned_before_openrlhf_merges_it(caplog):
    """A reward file's extra_logs that change between calls (or a group whose reward call timed out before any
    names were known) leave some samples without a name; OpenRLHF merges info name by name and splits the
    batch by index, so the names must be the same on every sample: a missing one is 0, with a warning."""
    vllm_shim.ray_worker_setup()  # OpenRLHF's samples generator imports vllm
    from openrlhf.trainer.ppo_utils import samples_generator
    from openrlhf.trainer.ppo_utils.experience import Experience, split_experience_batch

    from openrlhf_ext import ray_patches

    ray_patches.apply()
    made = [
        _experience("timed out", {"latr/reward_timeout": 1.0}),
        _experience("timed out", {"latr/reward_timeout": 1.0}),
        _experience("scored", {"latr/reward_timeout": 0.0, "format": 1.0}),
        _experience("scored", {"latr/reward_timeout": 0.0, "format": 0.0}),
    ]
    # OpenRLHF's own merge of such a batch: the name only two samples carry has two values for four samples
    merged = Experience.concat_experiences([_experience(e.prompts[0], {}) for e in made[:2]] + made[2:], 0)
    assert merged.info["format"].shape[0] == 2 != len(merged.sequences)

    generator = samples_generator.SamplesGenerator.__new__(samples_generator.SamplesGenerator)
    generator.args = types.SimpleNamespace(
        rollout=types.SimpleNamespace(batch_size=2, n_samples_per_prompt=2, vllm_generate_batch_size=None),
        vllm=types.SimpleNamespace(enable_sleep=False),
        algo=types.SimpleNamespace(dynamic_filtering_enable=False),
        latr_ext={"rollout": {"backend": "vllm"}, "dapo": {}},
    )
    generator._dataloader_iter, generator._sample_buffer = iter([]), []
    generator._generate_vllm = lambda **kwargs: (list(made), 2, True)  # the engines' samples of one step
    with caplog.at_level("WARNING", logger="latr.ray_patches"):
        samples = generator.generate_samples()[0]
    assert "format" in caplog.text and "latr/reward_timeout" not in caplog.text.split("logged as 0 there:")[1]
    batch = Experience.concat_experiences(samples, 0)
    assert batch.info["format"].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert batch.info["latr/reward_timeout"].tolist() == [1.0, 1.0, 0.0, 0.0]
    split = split_experience_batch(batch)
    assert [e.info["format"].item() for e in split] == [0.0, 0.0, 1.0, 0.0]
