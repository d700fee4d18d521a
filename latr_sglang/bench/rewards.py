"""Reward throughput: scoring 10k countdown answers, and math answers, single-threaded; then a batch of
hostile math answers scored one at a time against one reward_func call (one CPU budget for the batch, the
answers verified concurrently), side by side.

python -m latr_sglang.bench.rewards
"""

from __future__ import annotations

import random
import time

from latr_sglang.argtypes import bench_parser
from latr_sglang.tasks import countdown
from latr_sglang.tasks import math as math_task
from latr_sglang.tasks.reward_func import reward_func, score_one


def main(argv: list[str] | None = None) -> None:
    bench_parser(__doc__).parse_args(argv)  # no options: --help and unknown flags answer before it runs
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

    # 16 distinct power towers (a different base per arm: the verifier caches verdicts by answer), each of
    # which uses its whole per-answer CPU bound; a training step's group of such answers must stay bounded
    def towers(base: int) -> list[str]:
        return [f"Answer: {base}^{{{base}^{{{base}^{{{k + 2}}}}}}}" for k in range(16)]

    prompt = "Q\n"
    t0 = time.perf_counter()
    for answer in towers(7):
        score_one(prompt + answer, prompt, "5")
    one_by_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    answers = towers(9)
    reward_func([prompt + a for a in answers], [prompt] * len(answers), ["5"] * len(answers))
    batched = time.perf_counter() - t0
    print(
        f"hostile math: 16 power towers one at a time {one_by_one:.1f}s, as one reward_func batch "
        f"{batched:.1f}s ({one_by_one / batched:.1f}x)"
    )


if __name__ == "__main__":
    main()
