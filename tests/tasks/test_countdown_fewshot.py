"""The few-shot two-number countdown task: problems, prompt and scoring by the countdown reward."""

import pytest

from latr_sglang.tasks import countdown, countdown_fewshot
from latr_sglang.tasks.prompts import split_problems, task_problems


def test_problems_are_solvable_two_number_problems_in_range():
    problems = countdown_fewshot.generate(300, seed=3, max_number=12)
    assert len(problems) == 300
    for p in problems:
        assert len(p.numbers) == 2 and all(1 <= x <= 12 for x in p.numbers) and p.target >= 1
        # the construction's own solution earns the full countdown reward
        assert countdown.score(f"<answer> {p.solution} </answer>", p.numbers, p.target)[0] == 1.0
    assert countdown_fewshot.generate(5, seed=3) == problems[:5]  # seeded
    with pytest.raises(ValueError, match="max_number=1"):
        countdown_fewshot.generate(1, max_number=1)


def test_prompt_shows_three_solved_examples_then_the_problem():
    text = countdown_fewshot.prompt((6, 7), 42)
    lines = text.split("\n")
    assert lines[0] == countdown_fewshot.INSTRUCTION and len(lines) == 5
    assert lines[1] == "Numbers: 3 5. Target: 15. Answer: <answer> 3 * 5 </answer>"
    assert lines[-1] == "Numbers: 6 7. Target: 42. Answer:"
    # prompt + prefill + a one-line answer is what the reward scores
    response = countdown_fewshot.RESPONSE_PREFIX + " 6 * 7 </answer>\n"
    assert countdown.score(response, [6, 7], 42)[0] == 1.0
    assert countdown.score(countdown_fewshot.RESPONSE_PREFIX + " 6 + 7 </answer>\n", [6, 7], 42)[0] == 0.1


def test_split_never_trains_on_a_held_out_problem_in_any_order():
    train = [("a", '{"numbers": [3, 4], "target": 7}'), ("b", '{"numbers": [4, 3], "target": 7}')]
    train.append(("c", '{"numbers": [4, 3], "target": 12}'))
    rest, held = split_problems(train, [("x", '{"numbers": [3, 4], "target": 7}')], 1)
    assert [p for p, _ in rest] == ["c"] and len(held) == 1
    with pytest.raises(ValueError, match="eval_prompts=5"):
        split_problems(train, train[:1], 5)
    with pytest.raises(ValueError, match="task='nope'"):
        task_problems("nope", 1, 0)
