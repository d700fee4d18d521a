import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latr_sglang.tasks.countdown import CORRECT, NO_ANSWER, WELL_FORMED, generate, score, solvable


@pytest.mark.parametrize(
    ("response", "numbers", "target", "expected"),
    [
        ("<think>..</think><answer> 55 + 36 - 19 - 7 </answer>", [19, 36, 55, 7], 65, CORRECT),
        ("<answer>(55 + 36) - (19 + 7)</answer>", [19, 36, 55, 7], 65, CORRECT),
        ("<answer>55 + 36 - 19 - 7 = 65</answer>", [19, 36, 55, 7], 65, CORRECT),
        ("<answer>100 / (3 - 1)</answer>", [100, 3, 1], 50, CORRECT),
        ("<answer>-(1 - 3) * 2</answer>", [1, 3, 2], 4, CORRECT),
        ("<answer>55 + 36 - 19</answer>", [19, 36, 55, 7], 72, WELL_FORMED),  # 7 unused
        ("<answer>55 + 36 - 19 - 7 - 7</answer>", [19, 36, 55, 7], 58, WELL_FORMED),  # 7 twice
        ("<answer>55 + 36 - 19 + 7</answer>", [19, 36, 55, 7], 65, WELL_FORMED),  # wrong value
        ("<answer>3 / (1 - 1)</answer>", [3, 1, 1], 3, WELL_FORMED),  # division by zero = wrong
        ("<answer>2 * 3</answer> <answer>2 + 3</answer>", [2, 3], 5, CORRECT),  # the last answer counts
        ("<answer>2 + 3</answer> <answer>2 * 3</answer>", [2, 3], 5, WELL_FORMED),
        ("no answer here", [2, 3], 5, NO_ANSWER),
        ("<answer>2 ** 3</answer>", [2, 3], 8, NO_ANSWER),
        ("<answer>two plus three</answer>", [2, 3], 5, NO_ANSWER),
        ("<answer></answer>", [2, 3], 5, NO_ANSWER),
        ("<answer>2.5 * 2</answer>", [2, 2], 5, NO_ANSWER),
        ("<answer>x = 2 + 3</answer>", [2, 3], 5, NO_ANSWER),
    ],
)
def test_score_hand_worked(response, numbers, target, expected):
    assert score(response, numbers, target)[0] == expected


def test_fractions_are_exact():
    # 8 / (3 - 8 / 3) = 24 exactly; float arithmetic gives 23.999999999999996
    assert score("<answer>8 / (3 - 8 / 3)</answer>", [8, 3, 8, 3], 24)[0] == CORRECT


def test_generated_problems_are_solvable_and_their_solutions_score():
    problems = generate(300, seed=7)
    assert len({(p.numbers, p.target) for p in problems}) > 250
    for p in problems:
        assert 3 <= len(p.numbers) <= 4 and all(1 <= n <= 100 for n in p.numbers) and 1 <= p.target <= 100
        assert score(f"<answer>{p.solution}</answer>", p.numbers, p.target)[0] == CORRECT
        assert solvable(p.numbers, p.target)
        assert json.loads(p.label()) == {"numbers": list(p.numbers), "target": p.target}
    assert generate(5, seed=7) == problems[:5]  # seeded


def test_solvable_detects_impossible_targets():
    assert not solvable([1, 1], 5) and solvable([2, 3], 6)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.lists(st.integers(1, 100), min_size=1, max_size=4), st.integers(-50, 200))
def test_score_never_raises_and_stays_in_range(text, numbers, target):
    reward, _ = score(text, numbers, target)
    assert reward in (CORRECT, WELL_FORMED, NO_ANSWER)
    reward, _ = score(f"<answer>{text}</answer>", numbers, target)
    assert reward in (CORRECT, WELL_FORMED, NO_ANSWER)


def test_too_many_numbers_are_refused_not_drawn_forever():
    """Random expressions over many numbers rarely hit an integer target in 1..100 (2000 problems: ~5 s at
    6 numbers, ~6 min at 12, never at 30): the count is bounded, and the error names the setting."""
    import time

    from latr_sglang.tasks.countdown import MAX_NUMBERS
    from latr_sglang.tasks.prompts import task_problems

    t0 = time.perf_counter()
    with pytest.raises(
        ValueError, match=rf"max_numbers=40: countdown problems have 1..{MAX_NUMBERS} numbers"
    ):
        generate(20, min_numbers=30, max_numbers=40)
    with pytest.raises(ValueError, match=r"countdown_numbers=30,40: the countdown task has 1..6 numbers"):
        task_problems("countdown", 20, 0, min_numbers=30, max_numbers=40)
    assert time.perf_counter() - t0 < 1.0
    assert len(generate(5, min_numbers=MAX_NUMBERS, max_numbers=MAX_NUMBERS)) == 5


def test_generation_gives_up_after_its_draws_with_an_error():
    with pytest.raises(ValueError, match=r"only \d+ of 1000 problems in 500 random expressions"):
        generate(1000, max_draws=500)
    with pytest.raises(ValueError, match="max_target=0"):
        generate(3, max_target=0)
    assert generate(0) == []
