"""Reward throughput: scoring 10k countdown answers, and math answers, single-threaded.

python -m latr_sglang.bench.rewards
"""

from __future__ import annotations

import random
import time

from latr_sglang.tasks import countdown
from latr_sglang.tasks import math as math_task


def main() -> None:
    problems = countdown.generate(10_000, seed=0)
    rng = random.Random(0)
    responses = []
    for p in problems:
        kind = rng.random()
        if kind < 0.3:
            responses.append(f"<think>...</think><answer>{p.solution}</answer>")
        elif kind < 0.7:
            responses.append(
                "<think>" + "let me try " * 40 + f"</think><answer>{' + '.join(map(str, p.numbers))}</answer>"
            )
        else:
            responses.append("I think the answer is probably " + str(p.target))
    t0 = time.perf_counter()
    rewards = [countdown.score(r, p.numbers, p.target)[0] for r, p in zip(responses, problems)]
    elapsed = time.perf_counter() - t0
    print(
        f"countdown: {len(rewards)} answers in {elapsed:.3f}s ({len(rewards) / elapsed:,.0f}/s), "
        f"mean reward {sum(rewards) / len(rewards):.3f}"
    )

    math_task.score("Answer: 1", "2")  # start the verifier pool
    golds = ["27", "\\frac{1}{2}", "3\\sqrt{2}", "(3, \\frac{\\pi}{2})", "10"] * 100
    answers = ["Answer: 27", "Answer: 0.5", "\\boxed{\\sqrt{18}}", "Answer: (3, \\pi/2)", "Answer: 11"] * 100
    t0 = time.perf_counter()
    scores = [math_task.score(a, g)[0] for a, g in zip(answers, golds)]
    elapsed = time.perf_counter() - t0
    print(
        f"math: {len(scores)} answers in {elapsed:.3f}s ({len(scores) / elapsed:,.0f}/s), "
        f"accuracy {sum(scores) / len(scores):.3f} (expected 0.800: 1 in 5 is wrong, 3 in 5 need math-verify)"
    )


if __name__ == "__main__":
    main()
