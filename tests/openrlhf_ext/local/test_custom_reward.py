"""A user's reward_fn in the local trainer: its result is checked, a response it raises on scores 0 (a broken
function still fails), and with reward_timeout_s it runs in worker processes under a CPU bound."""

from __future__ import annotations

import math
import time

import pytest
import torch
from reward_fns import picky_reward

from openrlhf_ext.local import custom_reward
from openrlhf_ext.local.custom_reward import CustomReward, checked_score


@pytest.mark.parametrize(
    "value, expected",
    [((1, 0), (1.0, 0.0)), ([0.5, 1.0], (0.5, 1.0)), ((torch.tensor(-2.0), True), (-2.0, 1.0))],
)
def test_a_pair_of_numbers_is_a_score(value, expected):
    assert checked_score(value, "p", "r") == expected


@pytest.mark.parametrize(
    "value, named",
    [
        (None, "None"),
        (0.5, "0.5"),
        ("ab", "'ab'"),
        ((1.0,), "(1.0,)"),
        ((1.0, 0.0, 0.0), "(1.0, 0.0, 0.0)"),
        ((math.nan, 0.0), "reward=nan"),
        ((math.inf, 0.0), "reward=inf"),
        ((1.0, 2.0), "accuracy=2.0"),
        ((1.0, -0.5), "accuracy=-0.5"),
        (("high", 1.0), "reward='high'"),
        ((1.0, None), "accuracy=None"),
    ],
)
def test_anything_else_is_refused_naming_the_value_and_the_response(value, named):
    with pytest.raises(ValueError) as error:
        checked_score(value, "What is 2+2?", "Answer: 4")
    assert named in str(error.value) and "'Answer: 4'" in str(error.value)


def test_a_response_the_function_raises_on_scores_zero_and_is_counted(capsys):
    reward = CustomReward(picky_reward)
    rows = [("p", "4", "4"), ("p", "boom", "4"), ("p", "5", "4"), ("p", "boom", "4")]
    scores, counts = reward.score(rows)
    assert scores == [(1.0, 1.0), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0)]
    assert (counts.errors, counts.timeouts) == (2, 0)
    assert "raised on 2 of 4 responses" in capsys.readouterr().out
    reward.score(rows)
    assert "raised" not in capsys.readouterr().out  # warned once


def test_a_function_that_raises_on_every_response_is_broken():
    with pytest.raises(RuntimeError, match=r"every one of this round's 2 responses.*ZeroDivisionError"):
        CustomReward(picky_reward).score([("p", "boom", "4"), ("p", "boom", "4")])


def test_a_bad_return_value_fails_the_step():
    with pytest.raises(ValueError, match="reward=nan"):
        CustomReward(picky_reward).score([("p", "4", "4"), ("p", "nan", "4")])


def test_a_slow_in_process_call_is_warned_about(monkeypatch, capsys):
    monkeypatch.setattr(custom_reward, "SLOW_CALL_S", 0.01)
    CustomReward(lambda p, r, lab: time.sleep(0.05) or (0.0, 0.0)).score([("p", "r", None)] * 2)
    out = capsys.readouterr().out
    assert out.count("nothing bounds it") == 1 and "reward_timeout_s" in out


@pytest.mark.parametrize("timeout", [-1.0, math.nan, math.inf, "2", True])
def test_a_bad_timeout_is_refused(timeout):
    with pytest.raises(ValueError, match="reward_timeout_s"):
        CustomReward(picky_reward, timeout)


def local_reward(prompt, response, label):
    return 0.0, 0.0


def test_a_timeout_needs_a_function_workers_can_load():
    with pytest.raises(ValueError, match=r"picklable.*reward_timeout_s=0"):
        CustomReward(lambda p, r, lab: (0.0, 0.0), timeout_s=1.0)
    # picklable here, but by a module name a worker cannot import: refused when made, not scored 0 later
    with pytest.raises(ValueError, match=r"cannot be loaded in a worker process.*ModuleNotFoundError"):
        CustomReward(local_reward, timeout_s=1.0)
    with pytest.raises(ValueError, match="must be a callable"):
        CustomReward("not a function")


def test_with_a_timeout_a_response_past_the_bound_scores_zero_within_it():
    reward = CustomReward(picky_reward, timeout_s=0.5)
    try:
        reward.score([("p", "4", "4")])  # the worker's start-up, outside the bound
        start = time.monotonic()
        scores, counts = reward.score([("p", "spin", "4"), ("p", "4", "4"), ("p", "boom", "4")])
        elapsed = time.monotonic() - start
        assert scores == [(0.0, 0.0), (1.0, 1.0), (0.0, 0.0)]
        assert (counts.errors, counts.timeouts) == (1, 1)
        assert elapsed < 30, elapsed  # 0.5 s of CPU plus the kill's grace, on a busy machine
        with pytest.raises(ValueError, match="reward=nan"):  # a bad value from a worker is still a bug
            reward.score([("p", "nan", "4")])
    finally:
        reward.close()


def test_the_rollout_counts_errors_in_the_step_metrics():
    from types import SimpleNamespace

    from openrlhf_ext.local.config import LocalTrainConfig
    from openrlhf_ext.local.rollout import GroupRollout

    class Tok:
        def decode(self, ids, skip_special_tokens=True):
            return ["4", "boom", "5", "boom"][ids[0]]

    group = SimpleNamespace(
        trajectories=[SimpleNamespace(token_ids=[i], truncated=False) for i in range(4)],
        prompt_ids=[0],
    )
    rollout = GroupRollout(LocalTrainConfig(response_prefix=""), None, Tok(), reward_fn=picky_reward)
    scored = rollout.score_groups([("p", "4")], [group])
    assert scored[0].accuracy.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert (rollout.reward_counts.errors, rollout.reward_counts.timeouts) == (2, 0)
