"""The end-of-run summary's intervals, worked by hand."""

import math

import pytest

from openrlhf_ext.local.summary import Z95, gain_ci, mean_ci, pass1_ci, summarize


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


def wilson(p, size):
    """Wilson's 95% score interval of a proportion p observed on `size` samples, by the textbook formula."""
    z2 = Z95**2
    center = (p + z2 / (2 * size)) / (1 + z2 / size)
    half = Z95 / (1 + z2 / size) * math.sqrt(p * (1 - p) / size + z2 / (4 * size**2))
    return center - half, center + half


def test_pass1_intervals_stay_in_0_1():
    # the walkthrough's 8 problems x 8: the normal interval was [-0.035, 0.223]
    before = result([0, 0, 0, 0, 0, 0, 2, 4], n=8)
    assert [round(x, 3) for x in mean_ci([c / 8 for c in before["correct_per_prompt"]])] == [
        0.094,
        -0.035,
        0.223,
    ]
    p, low, high = pass1_ci(before)
    assert p == 6 / 64 and 0 < low < p < high <= 1  # 6 correct answers: pass@1 is above 0
    # by hand: Wilson's interval at the effective size p(1-p) / (sample variance / problems)
    fractions = [0.0] * 6 + [0.25, 0.5]
    var = sum((f - p) ** 2 for f in fractions) / 7 / 8
    assert (low, high) == pytest.approx(wilson(p, p * (1 - p) / var))
    assert (round(low, 3), round(high, 3)) == (0.025, 0.296)
    text, data = summarize(
        before, result([8] * 6 + [0, 4], n=8), steps=1, trained_steps=1, train_s=1, total_s=1
    )
    assert "pass@1  before 0.094 [0.025, 0.296]" in text and "-0." not in text.split("gain")[0]
    assert all(0 <= x <= 1 for tag in ("before", "after") for x in data[tag]["pass@1_ci95"])


def test_all_wrong_or_all_right_is_not_a_point():
    # no spread over problems: the interval of the 64 samples drawn (Wilson's at 0 and at 64 of 64)
    assert pass1_ci(result([0] * 8, n=8)) == (0.0, 0.0, pytest.approx(Z95**2 / (64 + Z95**2)))
    assert pass1_ci(result([8] * 8, n=8)) == (1.0, pytest.approx(64 / (64 + Z95**2)), 1.0)
    # a spread below the samples' own (every problem solved 1 time in 8) is credited no more than them
    assert pass1_ci(result([1] * 8, n=8))[1:] == pytest.approx(wilson(1 / 8, 64))
    from openrlhf_ext.local.summary import proportion_ci

    with pytest.raises(ValueError):
        proportion_ci([], 8)


def test_away_from_0_and_1_the_interval_is_about_the_normal_one():
    counts = [i % 9 for i in range(64)]  # 64 problems x 8, pass@1 near 0.5
    _, low, high = pass1_ci(result(counts, n=8))
    _, normal_low, normal_high = mean_ci([c / 8 for c in counts])
    assert abs(low - normal_low) < 0.002 and abs(high - normal_high) < 0.002


def test_the_gain_interval_stays_in_minus_1_1():
    # on 2 problems, differences 1 and 0: the normal interval 0.5 +- 0.98 reaches past 1
    gain, low, high = gain_ci(result([0, 0]), result([4, 0]))
    assert gain == 0.5 and mean_ci([1.0, 0.0])[2] > 1 and high == 1.0 and -1 < low < 0
