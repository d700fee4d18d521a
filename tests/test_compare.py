"""The side-by-side arm runner: both admission schedules deliver every prompt's group, in prompt order."""

import pytest

from latr_sglang.compare import run_arm
from latr_sglang.config import LATRConfig
from latr_sglang.driver import LATRSampler
from latr_sglang.engines.base import SamplingParams


@pytest.mark.parametrize("admission", ["batch", "window"])
def test_every_prompt_gets_its_group_in_order(tiny_engine, prompt_ids, admission):
    tok = tiny_engine.tokenizer
    sampler = LATRSampler(
        tiny_engine,
        LATRConfig.preset("countdown"),
        SamplingParams(max_new_tokens=6),
        tiny_engine.eos_ids,
        lambda t: tok.decode([t]),
    )
    prompts = [list(p) for p in prompt_ids] * 2  # 8 prompts through 3 slots
    arm = run_arm("latr", sampler, prompts, 4, 1.0, 0, 3, admission=admission)
    assert [g.prompt_ids for g in arm.groups] == prompts
    assert all(len(g.trajectories) == 4 for g in arm.groups)
    assert arm.delivered == sum(len(t.token_ids) for g in arm.groups for t in g.trajectories) > 0


def test_unknown_admission_is_named(tiny_engine):
    with pytest.raises(ValueError, match="admission='fifo'"):
        run_arm("x", None, [[1]], 2, 0.0, 0, 1, admission="fifo")
