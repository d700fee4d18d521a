"""The OpenRLHF wrappers: inert without latr-train's settings; overlong filtering on OpenRLHF's Experience."""

import types

import torch

from openrlhf_ext import vllm_shim


def test_overlong_filtering_zeroes_truncated_advantages():
    vllm_shim.ray_worker_setup()
    from openrlhf.trainer.ppo_utils.experience import Experience

    from openrlhf_ext.ray_patches import zero_truncated_advantages

    exp = Experience(
        advantages=torch.tensor([[1.0, 2.0], [3.0, 4.0]]),
        returns=torch.tensor([[1.0, 2.0], [3.0, 4.0]]),
        truncated=torch.tensor([True, False]),
    )
    zero_truncated_advantages([exp])
    assert exp.advantages.tolist() == [[0.0, 0.0], [3.0, 4.0]]
    assert exp.returns.tolist() == [[0.0, 0.0], [3.0, 4.0]]
    assert exp.info["overlong_filtered"].tolist() == [1.0, 0.0]


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
