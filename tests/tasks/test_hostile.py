"""Hostile model outputs: every case scores without raising, within its time bound, and leaves nothing behind.

The corpus is payloads x wrappers (inside <answer> tags for countdown, on an Answer: line and inside \\boxed{}
for math, and bare), scored from several threads at once as OpenRLHF does.
"""

import concurrent.futures
import threading
import time

import psutil
import pytest

from latr_sglang.tasks import countdown
from latr_sglang.tasks import math as math_task
from latr_sglang.tasks.reward_func import reward_func

PAYLOADS = [
    "9**9**9",
    "44**19**35",
    "2**10000000",
    "(9**9)**(9**9)",
    "9" * 1_000_000,
    "1" + "0" * 5000,
    "(" * 10_000 + "1" + ")" * 10_000,
    "-" * 100_000 + "1",
    "1+" * 500_000 + "1",
    "x" * (1 << 20),
    "1\x00+2",
    "\x00" * 1000,
    "١+٢",
    "１＋２",
    "5 − 3",
    "5 ∗ 3",
    "5 ÷ 5",
    "５5+1",
    "𝟓+𝟑",
    "½+½",
    "__import__('os').system('echo pwned')",
    "exec('import os')",
    "eval('1+1')",
    "lambda: 1",
    "[1] * 10**9",
    "open('/etc/passwd').read()",
    "().__class__.__bases__[0].__subclasses__()",
    "globals()",
    "1 if 1 else 2",
    "1e308 * 10",
    "1.5 + 2",
    "0x10 + 1",
    "1_000 + 1",
    "(1)(2)",
    "1 // 0",
    "1 / 0",
    "0 / 0",
    "1 % 0",
    "~1",
    "not 1",
    "((((",
    "))))",
    "",
    " ",
    "\n" * 10_000,
    "<answer>" * 1000,
    "</answer>" * 1000,
    "\\frac{1}{0}",
    "\\frac{" * 5000,
    "\\sqrt{" * 3000 + "2" + "}" * 3000,
    "x^{" * 1000 + "2" + "}" * 1000,
    "10^{10^{10^{10^{10}}}}",
    "9^{9^{9^{9}}}",
    "\\underbrace{" * 500,
    "\\boxed{" * 10_000,
    "{" * 100_000,
    "$" * 10_000,
    "\\begin{matrix}" * 2000,
    "\\left(" * 5000 + "1" + "\\right)" * 5000,
    "\\int_0^\\infty e^{-x^{100000}} dx",
    "\\sum_{n=1}^{10^{100}} n!",
    "(10^{100000})!",
    "\\mathrm{" * 2000,
    "\U0010ffff" * 1000,
    "\ud800" if False else "\uffff" * 100,
    "a" * 400 + "=1",
    "1=" * 1000,
    "\\\\" * 50_000,
    "%" * 1000,
    "🙂" * 10_000,
]
WRAPPERS = [
    ("countdown", lambda p: f"<think>x</think><answer>{p}</answer>"),
    ("math-line", lambda p: f"reasoning\nAnswer: {p}"),
    ("math-boxed", lambda p: f"so \\boxed{{{p}}}"),
    ("bare", lambda p: p),
]
CORPUS = [(kind, wrap(p)) for p in PAYLOADS for kind, wrap in WRAPPERS]
COUNTDOWN_BOUND_S = 1.0
# the pool's bound plus killing a hung worker and starting its replacement, on 2 busy cores
MATH_BOUND_S = math_task.VERIFY_TIMEOUT_S + 4.0


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 200


def _score(case):
    """Problems with one case, as strings (empty when it scored correctly in time)."""
    kind, response = case
    problems = []
    if kind in ("countdown", "bare"):
        t0 = time.perf_counter()
        reward, _ = countdown.score(response, [9, 9, 9], 3)
        elapsed = time.perf_counter() - t0
        if reward not in (0.0, 0.1) or elapsed > COUNTDOWN_BOUND_S:
            problems.append(f"countdown {response[:50]!r}: reward {reward}, {elapsed:.2f}s")
    if kind != "countdown":
        t0 = time.perf_counter()
        accuracy, _ = math_task.score(response, "42")
        elapsed = time.perf_counter() - t0
        if accuracy != 0.0 or elapsed > MATH_BOUND_S:
            problems.append(f"math {response[:50]!r}: accuracy {accuracy}, {elapsed:.2f}s")
    return problems


def test_every_hostile_case_scores_within_its_bound_and_nothing_leaks():
    me = psutil.Process()

    def live_children() -> set[int]:
        return {
            c.pid
            for c in me.children(recursive=True)
            if c.is_running() and c.status() != psutil.STATUS_ZOMBIE
        }

    threads_before = threading.active_count()
    math_task.score("Answer: 1", "2")  # start the verifier pool
    # other tests may have left long-lived services (wandb's) behind: only what this run adds is judged
    children_before = live_children() - set(math_task.verifier_pool().worker_pids())
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        problems = [p for ps in pool.map(_score, CORPUS) for p in ps]
    assert not problems, problems
    pool = math_task.verifier_pool()
    new_children = live_children() - children_before
    assert new_children <= set(pool.worker_pids()) and len(new_children) <= pool.size, new_children
    assert threading.active_count() <= threads_before, threading.enumerate()


def test_the_pool_kills_a_hung_worker_and_keeps_serving():
    from latr_sglang.tasks.verify_pool import TimeoutPool

    pool = TimeoutPool(time.sleep, workers=1, timeout_s=0.5)
    try:
        t0 = time.perf_counter()
        assert pool.call(30, default="timeout") == "timeout"
        assert time.perf_counter() - t0 < 5 and pool.timeouts == 1
        assert pool.call(0, default="timeout") is None  # a fresh worker answers
        worker_pids = pool.worker_pids()
        assert len(worker_pids) == 1
    finally:
        pool.close()
    alive = [
        p for p in worker_pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
    assert not alive


def test_hostile_batches_through_the_openrlhf_entry_point():
    queries = [response for _, response in CORPUS[:40]]
    labels = ['{"numbers": [9, 9, 9], "target": 3}', "42"] * 20
    out = reward_func(queries, [""] * 40, labels)
    assert out["rewards"].shape == (40,) and float(out["scores"].sum()) == 0.0


@pytest.mark.parametrize("bad", [None, 12, b"bytes", ["list"], {"dict": 1}])
def test_non_string_responses_score_zero(bad):
    assert countdown.score(bad, [1], 1)[0] == 0.0 and math_task.score(bad, "1")[0] == 0.0
