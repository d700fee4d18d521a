"""The end-of-run summary's intervals, worked by hand."""

import math

import pytest

from openrlhf_ext.local.summary import gain_ci, mean_ci, summarize


def result(counts, n=4, examples=()):
    return {
        "prompts": len(counts),
        "n": n,
        f"pass@{n}": sum(c > 0 for c in counts) / len(counts),
        "correct_per_prompt": counts,
        "distinct_answers_mean": 2.0,
        "correct_examples": list(examples),
    }


def test_mean_ci_by_hand():
    # values 0, 0.5, 1: mean 0.5, sample std 0.5, half width 1.96 * 0.5 / sqrt(3)
    mean, low, high = mean_ci([0.0, 0.5, 1.0])
    half = 1.959964 * 0.5 / math.sqrt(3)
    assert mean == 0.5 and low == pytest.approx(0.5 - half) and high == pytest.approx(0.5 + half)
    with pytest.raises(ValueError):
        mean_ci([])


def test_gain_is_paired_per_problem():
    before, after = result([0, 2, 4]), result([1, 3, 4])
    # differences 0.25, 0.25, 0: mean 1/6
    assert gain_ci(before, after)[0] == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="different problem counts"):
        gain_ci(before, result([1, 1]))


def test_summary_names_the_numbers_and_shows_correct_answers():
    example = {"label": '{"numbers": [3, 4], "target": 7}', "response": " <answer> 3 + 4 </answer>\n"}
    text, data = summarize(
        result([0, 1, 2]),
        result([2, 3, 4], examples=[example]),
        steps=5,
        trained_steps=4,
        train_s=10,
        total_s=12,
    )
    assert "pass@1  before 0.250" in text and "after 0.750" in text and "gain    +0.500" in text
    assert "numbers 3 4, target 7: <answer> 3 + 4 </answer>" in text and "4 of 5 trained (1 skipped)" in text
    assert data["gain"]["pass@1"] == pytest.approx(0.5) and data["after"]["pass@4"] == 1.0
