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
        # the math bound is on the verification's CPU time (checked on the pool below), not on wall time,
        # which here includes waiting for a worker behind other hostile cases on a busy machine
        accuracy, _ = math_task.score(response, "42")
        if accuracy != 0.0:
            problems.append(f"math {response[:50]!r}: accuracy {accuracy}")
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
    # no call used more than its CPU bound plus the grace before the kill (and /proc's clock-tick resolution)
    assert pool.max_call_cpu_s <= math_task.VERIFY_TIMEOUT_S + pool.grace_s + 0.2, pool.max_call_cpu_s
    assert pool.failures == 0
    new_children = live_children() - children_before
    assert new_children <= set(pool.worker_pids()) and len(new_children) <= pool.max_workers, new_children
    assert threading.active_count() <= threads_before, threading.enumerate()


HOSTILE_MATH = [
    "Answer: 9^{9^{9^{9}}}",
    "so \\boxed{(10^{100000})!}",
    "Answer: 10^{10^{10^{10^{10}}}}",
]


def _correct_math_answers() -> list[tuple[str, str]]:
    """64 distinct correct answers: plain numbers (decided in process) and forms only math-verify equates."""
    cases = [("Answer: 0.5", "\\frac{1}{2}"), ("Answer: \\frac{3}{4}", "0.75")] * 8
    cases += [(f"Answer: \\sqrt{{{2 * k * k}}}", f"{k}\\sqrt{{2}}") for k in range(2, 26)]
    cases += [(f"Answer: \\frac{{\\pi}}{{{k}}}", f"\\pi/{k}") for k in range(2, 26)]
    assert len(cases) == 64
    return cases


@pytest.fixture
def fresh_verifier(monkeypatch):
    """A cold verifier pool and no cached verdicts, as at the start of a run."""
    from collections import OrderedDict

    monkeypatch.setattr(math_task, "_pool", None)
    monkeypatch.setattr(math_task, "_verdicts", OrderedDict())
    yield
    if math_task._pool is not None:
        math_task._pool.close()


@pytest.fixture
def loaded_machine():
    """Every core busy with a spinning process for the test's duration."""
    import os
    import subprocess
    import sys

    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(len(os.sched_getaffinity(0)))
    ]
    yield
    for p in spinners:
        p.kill()
        p.wait(timeout=10)


def test_correct_math_answers_from_8_threads_on_a_loaded_machine_all_score_1(fresh_verifier, loaded_machine):
    cases = [(r, g, 1.0) for r, g in _correct_math_answers()]
    for i, hostile in enumerate(HOSTILE_MATH):  # hostile answers that use their whole bound, mixed in early
        cases.insert(3 + 7 * i, (hostile, "42", 0.0))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        scores = list(pool.map(lambda c: math_task.score(c[0], c[1])[0], cases))
    wrong = [(r, g, s) for (r, g, expected), s in zip(cases, scores) if s != expected]
    assert not wrong, wrong
    pool = math_task.verifier_pool()
    assert pool.timeouts >= 1 and pool.wall_timeouts == 0 and pool.failures == 0  # the hostile ones ran out


def test_the_pool_kills_a_worker_that_makes_no_progress_and_keeps_serving():
    """A worker that uses no CPU and never answers (asleep, stopped) is ended by the wall-clock cap."""
    from latr_sglang.tasks.verify_pool import TimeoutPool

    pool = TimeoutPool(time.sleep, workers=1, timeout_s=0.5, wall_limit_s=1.0)
    try:
        pool.call(0)  # started and warm: what follows measures the call alone
        t0 = time.perf_counter()
        assert pool.call(30, default="timeout") == "timeout"
        assert time.perf_counter() - t0 < 10 and pool.wall_timeouts == 1
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


def test_a_batch_of_distinct_hostile_towers_is_bounded_as_a_batch(fresh_verifier, monkeypatch):
    """Each tower uses its whole per-answer bound, and distinct ones miss the verdict cache: scored one after
    another, 16 of them took 16 bounds. The batch shares a CPU budget (F5)."""
    monkeypatch.setenv("LATR_VERIFY_WORKERS", "1:2")  # 2 cores: keep CPU use modest
    math_task.verifier_pool().call("1", "1")  # started and warm: what follows measures the batch alone
    towers = [f"Q\nAnswer: 10^{{10^{{10^{{{k + 2}}}}}}}" for k in range(16)]
    t0 = time.monotonic()
    out = reward_func(towers, ["Q\n"] * 16, ["5"] * 16)
    elapsed = time.monotonic() - t0
    assert out["rewards"].tolist() == [0.0] * 16
    pool = math_task.verifier_pool()
    budget = math_task.batch_budget(16).seconds
    # the calls that ran out their bound fit in the budget, plus those in flight when it was spent
    assert pool.timeouts <= budget / math_task.VERIFY_TIMEOUT_S + 2 < 16, pool.timeouts
    assert elapsed < 0.75 * 16 * math_task.VERIFY_TIMEOUT_S, elapsed
    # an honest answer in the next batch is verified as usual: the budget is per call
    assert reward_func(["Q\nAnswer: \\frac{\\sqrt{3}}{2}"], ["Q\n"], ["\\sqrt{3}/2"])["scores"].tolist() == [
        1.0
    ]
