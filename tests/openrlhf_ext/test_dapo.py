import torch

from openrlhf_ext.dapo import (
    group_advantages,
    informative_groups,
    mean_score_in_range,
    overlong_mask,
    soft_overlong_penalty,
)


def test_group_advantages():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]])
    adv = group_advantages(r)
    assert torch.allclose(adv[0], torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-4)
    assert torch.equal(adv[1], torch.zeros(4))  # a tied group teaches nothing
    assert torch.allclose(group_advantages(r, normalize_std=False)[0], torch.tensor([0.5, -0.5, -0.5, 0.5]))


def test_dynamic_sampling_rules():
    scores = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0], [0.1, 0.1]])
    assert informative_groups(scores).tolist() == [False, False, True, False]
    # OpenRLHF's range rule keeps the tied 0.1 group, which DAPO's rule drops
    assert mean_score_in_range(scores, 0.0, 1.0).tolist() == [False, False, True, True]


def test_overlong_filtering_and_soft_punishment():
    assert overlong_mask(torch.tensor([[True, False]])).tolist() == [[0.0, 1.0]]
    lengths = torch.tensor([10, 80, 90, 100])
    assert soft_overlong_penalty(lengths, 100, 20).tolist() == [0.0, 0.0, -0.5, -1.0]
