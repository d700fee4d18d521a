import pytest

from latr_sglang.driver import BranchRecord, GroupResult, Trajectory
from latr_sglang.engines.base import FinishReason
from latr_sglang.metrics import (
    distinct_answers,
    distinct_n,
    pairwise_edit_distance,
    rollout_metrics,
    tie_fraction,
    tree_stats,
)


def test_pairwise_edit_distance():
    assert pairwise_edit_distance([[1, 2, 3], [1, 2, 3]]) == 0.0
    assert pairwise_edit_distance([[1, 2], [3, 4]]) == 1.0
    # pairs: (a,b)=1/4, (a,c)=0, (b,c)=1/4 -> mean 1/6
    assert pairwise_edit_distance([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3, 4]]) == pytest.approx(1 / 6)
    assert pairwise_edit_distance([[1]]) == 0.0


def test_distinct_n():
    assert distinct_n([[1, 2, 1, 2]], 1) == 0.5
    assert distinct_n([[1, 2, 1, 2]], 2) == pytest.approx(2 / 3)
    assert distinct_n([[1], [2]], 2) == 0.0


def test_distinct_answers_and_ties():
    extract = lambda text: text.split("=")[-1].strip() if "=" in text else None  # noqa: E731
    assert distinct_answers(["x = 3", "y = 3", "z = 4", "no answer"], extract) == 2
    assert tie_fraction([[1, 1, 1], [0, 1, 0], [0.1, 0.1]]) == pytest.approx(2 / 3)


def _group():
    def t(ids, origin, shared=0):
        return Trajectory(ids, [-1.0] * len(ids), FinishReason.STOP, origin, shared_prefix_len=shared)

    return GroupResult(
        prompt_ids=[1],
        trajectories=[t([5, 6, 7, 8], "tree"), t([5, 6, 9, 9], "tree", 2), t([3, 3], "stochastic")],
        branches=[
            BranchRecord(0, None, None, [5, 6, 7], None),
            BranchRecord(1, 0, 2, [5, 6, 9], None),
            BranchRecord(2, 0, 1, [5, 1], 3),
        ],
        k_latr=2,
        exit_step=3,
        engine_requests=6,
        decoded_tokens=15,
    )


def test_tree_stats():
    stats = tree_stats(_group())
    assert stats["branches_created"] == 2 and stats["branches_pruned"] == 1
    assert stats["shared_token_fraction"] == pytest.approx(2 / 10)
    assert stats["engine_requests_per_trajectory"] == 2.0
    assert stats["decoded_per_delivered_token"] == 1.5


def test_rollout_metrics_names_and_values():
    m = rollout_metrics([_group()], rewards=[[1.0, 0.0, 0.0]])
    assert m["latr/decoded_per_delivered_token"] == 1.5
    assert m["latr/reward_tie_fraction"] == 0.0
    assert m["latr/response_length"] == pytest.approx(10 / 3)
    assert {f"latr/distinct_{n}" for n in range(1, 5)} <= set(m)
