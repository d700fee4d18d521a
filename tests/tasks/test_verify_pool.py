"""The verifier pool: its bound is the CPU time of the call itself; waiting, cold starts and a busy machine do
not count; it grows to its callers; a hung worker is killed, reaped and replaced."""

import concurrent.futures
import time

import psutil
import pytest
from tasks import pool_targets  # a namespace package under tests/ (on sys.path); workers import it too

from latr_sglang.tasks.verify_pool import TimeoutPool, WorkersCannotStart, process_cpu_seconds


@pytest.fixture
def make_pool():
    pools = []

    def make(*args, **kwargs):
        pools.append(TimeoutPool(*args, **kwargs))
        return pools[-1]

    yield make
    for pool in pools:
        pids = pool.worker_pids()
        pool.close()
        alive = [
            p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]
        assert not alive, alive


def test_waiting_without_cpu_is_not_counted(make_pool):
    pool = make_pool(time.sleep, workers=1, timeout_s=0.3)
    assert pool.call_outcome(1.0) == ("ok", None)  # 1 s asleep, no CPU: within a 0.3 s CPU bound
    assert pool.timeouts == 0


def test_waiting_for_a_busy_worker_is_not_counted(make_pool):
    """One worker, two callers: the second waits at least 0.45 s for the first, then needs 0.1 s of CPU
    itself. A bound on the whole call (0.5 s) would fail it whatever the machine; a bound on its own CPU
    does not."""
    pool = make_pool(pool_targets.spin, workers=1, max_workers=1, timeout_s=0.5)
    pool.call(0.0)  # warm
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        first = ex.submit(pool.call_outcome, 0.45)
        time.sleep(0.05)
        second = ex.submit(pool.call_outcome, 0.1)
        assert first.result() == ("ok", 0.45) and second.result() == ("ok", 0.1)
    assert pool.timeouts == 0 and len(pool.worker_pids()) == 1


def test_cpu_past_the_bound_stops_the_call_and_the_worker_survives(make_pool):
    pool = make_pool(pool_targets.spin, workers=1, timeout_s=0.4)
    pids = pool.worker_pids()
    assert pool.call_outcome(5.0) == ("timeout", None)  # the itimer in the worker ended it
    assert pool.call_outcome(0.01) == ("ok", 0.01)
    assert pool.timeouts == 1 and pool.worker_pids() == pids  # the same worker, not a kill and a restart
    assert pool.max_call_cpu_s < 0.4 + pool.grace_s


def test_a_worker_stuck_in_c_is_killed_and_replaced(make_pool):
    pool = make_pool(pool_targets.stuck_in_c, workers=1, timeout_s=0.3, grace_s=0.3)
    pid_before = pool.worker_pids()
    assert pool.call_outcome(10**13) == ("timeout", None)
    assert pool.call_outcome(10) == ("ok", 45)  # a fresh worker answers
    assert pool.worker_pids() != pid_before and len(pool.worker_pids()) == 1
    gone = pid_before[0]
    assert not psutil.pid_exists(gone) or psutil.Process(gone).status() == psutil.STATUS_ZOMBIE


def test_a_cold_start_is_not_counted(make_pool):
    # the warm-up burns 1.5 s of CPU, five times the call's bound: the first call must still be answered
    pool = make_pool(pool_targets.spin, workers=1, timeout_s=0.3, warmup=(1.5,))
    assert pool.call_outcome(0.01) == ("ok", 0.01)


def test_the_pool_grows_to_its_callers(make_pool):
    pool = make_pool(pool_targets.pid_and_echo, workers=1, max_workers=4, timeout_s=1.0)
    slow = make_pool(time.sleep, workers=1, max_workers=4, timeout_s=1.0)
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        t0 = time.perf_counter()
        outs = list(ex.map(lambda _: slow.call_outcome(2.0), range(4)))
        elapsed = time.perf_counter() - t0
    assert outs == [("ok", None)] * 4
    assert len(slow.worker_pids()) == 4
    # four 2 s sleeps in parallel, not in a queue of one (8 s); worker start-ups on a busy machine included
    assert elapsed < 7.5, elapsed
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        outs = list(ex.map(lambda i: pool.call(i), range(16)))
    assert [v for _, v in outs] == list(range(16)) and len(pool.worker_pids()) <= 4


def test_process_cpu_seconds_reads_this_process():
    import os

    before = process_cpu_seconds(os.getpid())
    pool_targets.spin(0.2)
    after = process_cpu_seconds(os.getpid())
    assert before is not None and after - before >= 0.15


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="workers=3, max_workers=2"):
        TimeoutPool(time.sleep, workers=3, max_workers=2)
    with pytest.raises(ValueError, match="timeout_s=0"):
        TimeoutPool(time.sleep, timeout_s=0)


def test_workers_that_cannot_start_raise_instead_of_scoring_the_default(make_pool, caplog):
    """No worker ever starts (under spawn, a script that scores rewards at module level without the
    main-module guard): every answer would silently get the default. The call raises, naming the guard, and
    later calls raise at once instead of spawning more workers."""
    pool = make_pool(pool_targets.exit_at_once, workers=1, timeout_s=1.0, warmup=(0,))
    with pytest.raises(WorkersCannotStart, match="none has ever started") as error:
        pool.call_outcome(0)
    assert 'if __name__ == "__main__":' in str(error.value)
    t0 = time.perf_counter()
    with pytest.raises(WorkersCannotStart):
        pool.call(0)
    assert time.perf_counter() - t0 < 0.5 and not pool.worker_pids()


def test_a_worker_that_dies_on_one_input_scores_it_as_the_default(make_pool):
    """Once workers start, a worker that dies is the input's doing: that call fails (the default), the
    pool goes on, nothing is raised."""
    pool = make_pool(pool_targets.die_on, workers=1, timeout_s=1.0, warmup=("warm",))
    assert pool.call_outcome("a") == ("ok", "a")
    assert pool.call_outcome("die") == ("failed", None)
    assert pool.call_outcome("b") == ("ok", "b") and pool.start_error is None
