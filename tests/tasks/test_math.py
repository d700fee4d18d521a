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
        ("Answer: units", "$", 0.0),  # both normalize to nothing: not equal answers
        ("Answer: 5 units", "5", 1.0),
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


@pytest.mark.parametrize(
    ("response", "gold", "correct"),
    [
        ("Answer: 3.141593", "\\pi", 0.0),  # a 6-decimal approximation is not the exact value
        ("Answer: 3.14", "\\pi", 0.0),
        ("Answer: 0.333333", "\\frac{1}{3}", 0.0),
        ("Answer: 1.41421356", "\\sqrt{2}", 0.0),
        ("Answer: 5 = 3", "3", 0.0),  # an equation whose last side matches states no value
        ("Answer: x = 5 = 3", "3", 0.0),
        ("Answer: a + b = 3", "3", 0.0),
        ("Answer: 1 + 2 = 3", "3", 0.0),
        ("Answer: 0.5", "\\frac{1}{2}", 1.0),  # plain equivalent forms still score
        ("Answer: \\frac{1}{4}", "0.25", 1.0),
        ("Answer: 1.5", "\\frac{3}{2}", 1.0),
        ("Answer: x = 3", "3", 1.0),  # an assignment states its value
        ("Answer: y = 2x + 1", "y=2x+1", 1.0),
        ("Answer: \\frac{\\pi}{2}", "\\pi/2", 1.0),
        ("Answer: \\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2", 1.0),
        ("Answer: 10\\%", "0.1", 1.0),
    ],
)
def test_strict_equivalence(response, gold, correct):
    assert score(response, gold)[0] == correct


@pytest.mark.parametrize(
    ("gold", "predicted", "equal"),
    [
        ("\\pi", "3.141593", False),
        ("3", "5 = 3", False),
        ("\\frac{1}{3}", "0.333333", False),
        ("\\frac{1}{2}", "0.5", True),
    ],
)
def test_the_strict_configuration_is_math_verifys_own(gold, predicted, equal):
    """The verifier itself, not only the in-process shortcuts, is strict."""
    from latr_sglang.tasks.math import _math_verify_equal

    assert _math_verify_equal(gold, predicted) is equal


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("12", 12),
        ("-0.5", -0.5),
        (".25", 0.25),
        ("\\frac{1}{2}", 0.5),
        ("-\\frac{3}{4}", -0.75),
        ("3/4", 0.75),
    ],
)
def test_exact_number(text, value):
    from latr_sglang.tasks.math import exact_number

    assert exact_number(text) == value


@pytest.mark.parametrize("text", ["\\frac{1}{0}", "1/0", "\\pi", "2\\sqrt{2}", "1e5", "1" * 50, "x"])
def test_exact_number_declines(text):
    from latr_sglang.tasks.math import exact_number

    assert exact_number(text) is None


@pytest.mark.parametrize(
    ("spec", "expected"), [("3", (3, 3)), ("1:6", (1, 6)), ("0", None), ("4:2", None), ("x", None)]
)
def test_verifier_pool_size_from_the_environment(monkeypatch, caplog, spec, expected):
    from latr_sglang.tasks import math as math_task

    monkeypatch.setenv("LATR_VERIFY_WORKERS", spec)
    got = math_task._pool_workers()
    if expected is None:  # a bad value warns and keeps the defaults: a reward call must not fail on it
        monkeypatch.delenv("LATR_VERIFY_WORKERS")
        assert got == math_task._pool_workers() and "LATR_VERIFY_WORKERS" in caplog.text
    else:
        assert got == expected


def test_unclosed_boxed_bombs_scan_in_linear_time():
    """The scan runs in the caller's process, outside the verifier's bound: a scan from every unclosed
    \\boxed{ to the end was quadratic (0.6-0.8 s for this input) (F15)."""
    import time

    from latr_sglang.tasks.math import MAX_RESPONSE_SCAN, last_boxed

    bomb = "\\boxed{" * (MAX_RESPONSE_SCAN // len("\\boxed{"))
    t0 = time.process_time()
    assert extract_answer(bomb) is None and last_boxed(bomb + "}") == (len(bomb) - 7, "")
    assert time.process_time() - t0 < 0.1
    assert last_boxed("} \\boxed {x}} \\boxed{") == (2, "x") and last_boxed("\\boxed{\\frac{1}{2}") is None
