import pytest

from latr_sglang.tasks.math import extract_answer, normalize, score


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("reasoning...\nAnswer: 27", "27"),
        ("Answer: 3\nmore\nAnswer: 5", "5"),
        ("so the result is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("\\boxed{3} then\nAnswer: 4", "4"),
        ("Answer: 4 then \\boxed{3}", "3"),
        ("**Answer:** $\\boxed{12}$", "12"),
        ("\\boxed{a{b}c}", "a{b}c"),
        ("no final answer", None),
        ("Answer:", None),
    ],
)
def test_extract_answer(response, expected):
    assert extract_answer(response) == expected


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("1,000", "1000"),
        ("$5$", "5"),
        ("x = 5", "5"),
        ("10\\%", "10"),
        ("\\dfrac{1}{2}", "\\frac{1}{2}"),
        ("\\text{(B)}", "(B)"),
        ("5.0", "5"),
        ("90^\\circ", "90"),
    ],
)
def test_normalize(a, b):
    assert normalize(a) == normalize(b)


@pytest.mark.parametrize(
    ("response", "gold", "correct"),
    [
        ("Answer: 27", "27", 1.0),
        ("Answer: 28", "27", 0.0),
        ("Answer: 0.5", "\\frac{1}{2}", 1.0),  # symbolic equivalence through math-verify
        ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)", 1.0),
        ("Answer: 2\\sqrt{2}", "\\sqrt{8}", 1.0),
        ("nothing", "27", 0.0),
    ],
)
def test_score(response, gold, correct):
    assert score(response, gold)[0] == correct


def test_math500_answers_score_against_themselves():
    import json
    from pathlib import Path

    rows = [
        json.loads(x)
        for x in (Path(__file__).parents[2] / "datasets/eval/math500.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 500
    for r in rows[:60]:
        assert score(f"Answer: {r['answer']}", r["answer"])[0] == 1.0, r["answer"]
