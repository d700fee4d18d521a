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
    # by hand: mean 0.5, unbiased std sqrt((4 * 0.25) / 3) = 0.57735, so +-0.5 / 0.57735 = +-0.86603
    assert torch.allclose(adv[0], torch.tensor([0.86603, -0.86603, -0.86603, 0.86603]), atol=1e-5)
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


def _openrlhf_group_norm_line() -> str:
    """The group_norm statement of the installed OpenRLHF's experience maker, as its source writes it."""
    import importlib.util
    from pathlib import Path

    # read as text: importing the module pulls in vLLM, which a CPU machine does not have
    root = Path(importlib.util.find_spec("openrlhf").submodule_search_locations[0])
    lines = (root / "trainer" / "ppo_utils" / "experience_maker.py").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if '.estimator == "group_norm"' in line)
    statement = lines[at + 1].strip()
    assert statement.startswith("rewards = "), statement
    return statement


def test_group_advantages_are_openrlhfs_group_norm():
    # OpenRLHF's own statement, evaluated on the same rewards, gives the same advantages: both trainers
    # (ray mode runs OpenRLHF's experience maker) compute identical advantages
    statement = _openrlhf_group_norm_line()
    torch.manual_seed(0)
    rewards = torch.cat([torch.rand(5, 8), torch.tensor([[1.0] * 8, [0.0] * 7 + [1.0]])])
    scope = {"rewards": rewards.clone()}
    exec(statement, {}, scope)
    assert torch.equal(group_advantages(rewards), scope["rewards"])
    assert "1e-9" in statement and "std(-1" in statement  # unbiased std, eps 1e-9: what the test relies on


def test_soft_overlong_punishment_matches_openrlhfs():
    from types import SimpleNamespace

    from openrlhf_ext.cpu_compat import install

    install()
    from openrlhf.trainer.ppo_utils import apply_overlong_penalty

    lengths = torch.tensor([3, 8, 10, 12, 14, 16])
    experience = SimpleNamespace(response_length=lengths, rewards=torch.zeros(6))
    apply_overlong_penalty(
        [experience], max_new_tokens=16, overlong_buffer_len=8, overlong_penalty_factor=1.0
    )
    # by hand: no penalty up to 16 - 8 = 8 tokens, then -(len - 8) / 8
    assert soft_overlong_penalty(lengths, 16, 8).tolist() == [0.0, 0.0, -0.25, -0.5, -0.75, -1.0]
    assert torch.equal(soft_overlong_penalty(lengths, 16, 8), experience.rewards)
