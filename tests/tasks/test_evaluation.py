import math

import pytest

from latr_sglang.tasks.evaluation import length_stats, mean_at_k, mean_pass_at_k, pass_at_k


def test_pass_at_k_matches_the_combinatorial_definition():
    for n in range(1, 10):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact)
    assert pass_at_k(8, 0, 8) == 0.0 and pass_at_k(8, 1, 8) == 1.0 and pass_at_k(8, 2, 1) == 0.25


def test_bad_pass_at_k_arguments():
    with pytest.raises(ValueError, match="k=9"):
        pass_at_k(8, 1, 9)


def test_means_and_lengths():
    assert mean_pass_at_k([[True, False], [False, False]], 1) == 0.25
    assert mean_at_k([[1.0, 0.0], [1.0, 1.0]]) == 0.75
    stats = length_stats([3, 1, 2, 10], [False, False, True, True])
    assert stats["response_length_median"] == 2.5 and stats["truncated_fraction"] == 0.5
