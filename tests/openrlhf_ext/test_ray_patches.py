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
