"""Countdown for small models: two numbers, a short raw few-shot prompt, one line of answer.

SmolLM2-135M-Instruct almost never solves the paper's countdown prompt, so every group ties and RL has nothing
to learn from. On this version (two numbers in 1..max_number, the target made with + - or *, three solved
examples, the answer on one line in <answer> tags) it is right about one time in eight at T = 1 (held-out
pass@1 0.127 in the main job's evaluation; 0.22 on its first training step's draws), and most groups of 8 hold
both right and wrong answers: the regime where GRPO/DAPO learn (BENCHMARKS.md, "Main job on the embedded
model"). The scoring is the paper's countdown reward (latr_sglang.tasks.countdown.score), so `reward_func.py`,
the evaluator and the trainer score it unchanged; the label is countdown's JSON.
"""

from __future__ import annotations

import random

from latr_sglang.tasks.countdown import CountdownProblem

INSTRUCTION = "Write an equation that uses each number once and equals the target."
EXAMPLES = ((3, 5, 15, "3 * 5"), (9, 2, 7, "9 - 2"), (4, 8, 12, "4 + 8"))
LINE = "Numbers: {a} {b}. Target: {target}. Answer:"
# The assistant's prefill: the reward needs the opening tag, and the model only writes the equation and
# closes it. Stopping at the newline (STOP_TEXT) ends the answer where the examples end theirs.
RESPONSE_PREFIX = " <answer>"
STOP_TEXT = "\n"


def prompt(numbers: tuple[int, ...] | list[int], target: int) -> str:
    """The few-shot prompt for one problem; it ends right before RESPONSE_PREFIX."""
    shots = [
        f"{LINE.format(a=a, b=b, target=t)}{RESPONSE_PREFIX} {solution} </answer>"
        for a, b, t, solution in EXAMPLES
    ]
    a, b = numbers
    return "\n".join([INSTRUCTION, *shots, LINE.format(a=a, b=b, target=target)])


def generate(count: int, seed: int = 0, max_number: int = 12) -> list[CountdownProblem]:
    """`count` problems: two numbers in 1..max_number, in random order, and a positive target a + b, a - b
    (larger first) or a * b; never one of the prompt's own examples."""
    if count < 0:
        raise ValueError(f"count={count}: must be >= 0")
    if max_number < 2:
        raise ValueError(f"max_number={max_number}: needs at least 2 (two numbers, a positive target)")
    rng = random.Random(seed)
    shown = {(a, b, t) for a, b, t, _ in EXAMPLES}
    problems: list[CountdownProblem] = []
    while len(problems) < count:
        a, b = rng.randint(1, max_number), rng.randint(1, max_number)
        op = rng.choice("+-*")
        hi, lo = max(a, b), min(a, b)
        target = {"+": a + b, "-": hi - lo, "*": a * b}[op]
        if target < 1 or (a, b, target) in shown:
            continue
        solution = f"{hi} - {lo}" if op == "-" else f"{a} {op} {b}"
        problems.append(CountdownProblem((a, b), target, solution))
    return problems
