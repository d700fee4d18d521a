"""A pool of worker processes with a per-call bound on the work itself, usable from any thread.

Signal-based timeouts (math-verify's own) only work in a main thread; OpenRLHF calls reward functions from
worker threads. Here each call goes to a long-lived worker process over a pipe. The bound is on the CPU time
the worker spends on that call, not on wall time: waiting for a free worker, a worker's cold start and a busy
machine do not count, so a verification that needs 50 ms of CPU is never cut off because eight other callers
share two cores. Inside the worker a CPU-time itimer (ITIMER_PROF) stops the target cleanly at the bound; a
worker stuck where a signal cannot reach it (one long C call) is killed by the caller once it has used the
bound plus a grace, and replaced. A generous wall-clock cap (`wall_limit_s`) remains for a worker that makes
no progress at all; reaching it is logged as a warning: then the machine, not the input, was the limit.

The pool starts `workers` processes (each runs `warmup` once, so imports and caches are paid before the first
call) and grows on demand up to `max_workers` when more callers arrive at once, so concurrent callers are
served in parallel instead of queueing behind one slow input.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

_POLL_S = 0.02
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class WorkersCannotStart(RuntimeError):
    """No worker of the pool has ever started: each one exits while starting. That is the setup, not an
    input (an input reaches only a worker that has started), so calls raise this instead of returning the
    default for every input."""


class _CPUTimeUp(BaseException):
    """Raised in the worker by the itimer; a BaseException so a target's `except Exception` cannot eat it."""


def _on_itimer(signum, frame):
    raise _CPUTimeUp


def _worker_main(conn, target: Callable[..., Any], warmup: tuple | None, cpu_limit_s: float) -> None:
    signal.signal(signal.SIGPROF, _on_itimer)
    if warmup is not None:
        with contextlib.suppress(Exception):  # a failed warm-up only costs the first real call its caches
            target(*warmup)
    signal.setitimer(signal.ITIMER_PROF, 0)
    try:
        conn.send(("ready", os.getpid()))
    except (OSError, BrokenPipeError):
        return
    while True:
        try:
            args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            signal.setitimer(signal.ITIMER_PROF, cpu_limit_s)
            try:
                result = ("ok", target(*args))
            finally:
                signal.setitimer(signal.ITIMER_PROF, 0)
        except _CPUTimeUp:
            result = ("timeout", None)
        except Exception as e:
            result = ("error", f"{type(e).__name__}: {e}")
        try:
            conn.send(result)
        except (OSError, BrokenPipeError):
            return


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (Linux /proc), or None where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()  # the command name may contain spaces: skip past it
    try:
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14 and 15 of stat)
    except (IndexError, ValueError):
        return None


def _start_error_message(deaths: int, code: int) -> str:
    import sys

    main = getattr(sys.modules.get("__main__"), "__file__", None)
    text = (
        f"the verifier's worker processes cannot start: {deaths} exited while starting (the last with code "
        f"{code}) and none has ever started, so no answer can be verified; their own error is printed above."
    )
    if main and code == 1:  # a Python error at start-up; the usual one is the missing main-module guard
        text += (
            f" Worker processes are spawned: each imports the main script ({main}) again, so a script that "
            'scores rewards (or calls math.warm_up) must do it under `if __name__ == "__main__":`.'
        )
    return text


class CPUBudget:
    """CPU seconds shared by a group of calls (one reward batch), charged as the workers use them, so that a
    batch of many expensive inputs is bounded as a whole and not only per call. Once it is spent, calls that
    have not started return "budget" at once; calls already running finish within their own bound."""

    def __init__(self, seconds: float) -> None:
        if not seconds >= 0:
            raise ValueError(f"CPUBudget seconds={seconds}: must be a number >= 0")
        self.seconds = float(seconds)
        self._used = 0.0
        self._lock = threading.Lock()

    def charge(self, seconds: float) -> None:
        if seconds > 0:
            with self._lock:
                self._used += seconds

    @property
    def used(self) -> float:
        with self._lock:
            return self._used

    @property
    def spent(self) -> bool:
        return self.used >= self.seconds


class _Worker:
    def __init__(self, ctx, target: Callable[..., Any], warmup: tuple | None, cpu_limit_s: float) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_worker_main, args=(child, target, warmup, cpu_limit_s), daemon=True
        )
        self.process.start()
        child.close()
        self.ready = False

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait for the worker's start-up and warm-up (not part of any call's bound)."""
        if self.ready:
            return True
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.conn.poll(min(0.5, max(deadline - time.monotonic(), 0.0))):
                try:
                    message = self.conn.recv()
                except (EOFError, OSError):
                    return False
                self.ready = message[0] == "ready"
                return self.ready
            if not self.process.is_alive():
                return False
        return False

    def kill(self) -> None:
        self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


class TimeoutPool:
    """`call(*args)` runs `target(*args)` in a worker process and returns its result; when the call uses more
    than `timeout_s` seconds of the worker's CPU (or `wall_limit_s` of wall time), or fails, it returns
    `default`."""

    def __init__(
        self,
        target: Callable[..., Any],
        workers: int = 2,
        timeout_s: float = 5.0,
        max_workers: int | None = None,
        warmup: tuple | None = None,
        wall_limit_s: float | None = None,
        start_timeout_s: float = 120.0,
        grace_s: float = 1.0,
    ) -> None:
        if workers < 1 or (max_workers is not None and max_workers < workers):
            raise ValueError(
                f"workers={workers}, max_workers={max_workers}: need 1 <= workers <= max_workers"
            )
        if not timeout_s > 0:
            raise ValueError(f"timeout_s={timeout_s}: must be > 0")
        self.target = target
        self.timeout_s = timeout_s
        self.size = workers  # the warm minimum
        self.max_workers = max_workers or workers
        self.warmup = warmup
        # only for a worker that gets next to no CPU at all: on 2 cores shared by 10 busy processes, 2 s of
        # CPU took 10 s of wall time
        self.wall_limit_s = wall_limit_s if wall_limit_s is not None else max(60.0, 30 * timeout_s)
        self.start_timeout_s = start_timeout_s
        self.grace_s = grace_s
        self._ctx = mp.get_context("spawn")  # no fork: the parent may hold threads, CUDA or torch state
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._live: set[_Worker] = set()
        self._starting = 0  # slots taken by workers being created
        self.timeouts = 0  # calls that hit the CPU bound (the input was too expensive)
        self.wall_timeouts = 0  # calls that hit the wall-clock cap (the machine was too busy)
        self.failures = 0  # workers that died or did not start
        self.started = 0  # workers that reached "ready"
        self._start_deaths = 0  # workers that exited while starting, before any worker ever started
        self.start_error: str | None = None  # set once no worker can start: every call raises it
        self.max_call_cpu_s = 0.0  # the most CPU one call used (the bound's check; clock-tick resolution)
        self._closed = False
        for _ in range(workers):
            self._spawn_idle()
        atexit.register(self.close)

    # ---- worker bookkeeping --------------------------------------------------------------------------------
    def _new_worker(self) -> _Worker:
        worker = _Worker(self._ctx, self.target, self.warmup, self.timeout_s)
        with self._cond:
            self._live.add(worker)
        return worker

    def _spawn_idle(self) -> None:
        """Start a worker that warms up while idle (its start-up is waited for by its first caller)."""
        worker = self._new_worker()
        with self._cond:
            self._idle.append(worker)
            self._cond.notify()

    def _acquire(self) -> _Worker:
        """A ready idle worker, else the oldest idle one (already warming), else a new one while the pool may
        grow, else wait: the pool grows only when every worker is busy."""
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("the pool is closed")
                if self._idle:
                    for i, w in enumerate(self._idle):
                        if w.ready or w.conn.poll(0):
                            return self._idle.pop(i)
                    return self._idle.pop(0)
                if len(self._live) + self._starting < self.max_workers:
                    self._starting += 1
                    break
                self._cond.wait()
        try:
            return self._new_worker()
        finally:
            with self._cond:
                self._starting -= 1

    def _release(self, worker: _Worker | None) -> None:
        with self._cond:
            if worker is not None and not self._closed:
                self._idle.append(worker)
            self._cond.notify()
        if worker is None and not self._closed and self.start_error is None:
            with self._cond:
                short = len(self._live) + self._starting < self.size
            if short:
                try:
                    self._spawn_idle()  # keep the warm minimum: the next caller should not pay a cold start
                except Exception:
                    logger.warning("could not start a replacement verifier worker", exc_info=True)

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        with self._cond:
            self._live.discard(worker)

    # ---- calls ---------------------------------------------------------------------------------------------
    def call(self, *args: Any, default: Any = None) -> Any:
        """The bound covers the target's own work; waiting for a worker and its start-up do not count."""
        outcome, value = self.call_outcome(*args)
        return value if outcome == "ok" else default

    def call_outcome(self, *args: Any, budget: CPUBudget | None = None) -> tuple[str, Any]:
        """(outcome, value): "ok" with the target's result; "timeout" (the call used its CPU bound: the input
        is too expensive, a repeat would be too); "error" (the target raised; value is the message); "wall"
        (the wall-clock cap: the machine was too busy); "failed" (no worker could run it); "budget" (the
        shared `budget` was spent before the call could start)."""
        for attempt in range(2):  # a worker that dies or fails to start gets one fresh replacement
            if self.start_error is not None:
                raise WorkersCannotStart(self.start_error)
            if budget is not None and budget.spent:
                return "budget", None
            worker = self._acquire()
            if budget is not None and budget.spent:  # spent while this call waited for a worker
                self._release(worker)
                return "budget", None
            try:
                was_ready = worker.ready
                if worker.wait_ready(self.start_timeout_s):
                    if not was_ready:
                        with self._cond:
                            self.started += 1
                else:
                    self.failures += 1
                    worker.process.join(timeout=0.5)  # a worker that died: let its exit code be read
                    code, pid = worker.process.exitcode, worker.process.pid
                    self._discard(worker)
                    worker = None
                    if code is not None and self._note_start_death(code):
                        raise WorkersCannotStart(self.start_error)
                    logger.warning(
                        "a verifier worker (pid %s) %s%s",
                        pid,
                        f"exited with code {code} while starting"
                        if code is not None
                        else f"did not start within {self.start_timeout_s:.0f} s",
                        "; retrying with a fresh one" if attempt == 0 else "; scoring as the default",
                    )
                    continue
                outcome, value = self._run(worker, args, budget)
                if outcome in ("ok", "timeout", "error"):
                    return outcome, value
                # "killed", "wall" or "dead": the worker is gone; a dead one gets the call retried once
                self._discard(worker)
                worker = None
                if outcome == "killed":
                    return "timeout", None
                if outcome == "wall":
                    return "wall", None
                self.failures += 1
            finally:
                self._release(worker)
        return "failed", None

    def _note_start_death(self, code: int) -> bool:
        """Counts a worker that exited while starting; True (and `start_error` set) once two have, before any
        worker of this pool ever started."""
        with self._cond:
            if self.started:
                return False  # workers can start: this one's death was its own (memory, a signal)
            self._start_deaths += 1
            if self._start_deaths < 2:
                return False
            self.start_error = _start_error_message(self._start_deaths, code)
        logger.error("%s", self.start_error)
        return True

    def _run(self, worker: _Worker, args: tuple, budget: CPUBudget | None = None) -> tuple[str, Any]:
        """('ok', value), ('timeout'|'error', None) with the worker still usable, or ('killed'|'wall'|'dead',
        None) when it must be discarded."""
        pid = worker.process.pid
        try:
            worker.conn.send(args)
        except (OSError, BrokenPipeError):
            return "dead", None
        cpu0 = process_cpu_seconds(pid)
        wall0 = time.monotonic()
        hard_cpu = self.timeout_s + self.grace_s
        charged = 0.0  # of this call's CPU, what the budget has been charged (as it runs: others see it)

        def charge(used: float | None) -> None:
            nonlocal charged
            if budget is not None and used is not None and used > charged:
                budget.charge(used - charged)
                charged = used

        while True:
            try:
                if worker.conn.poll(_POLL_S):
                    status, value = worker.conn.recv()
                    cpu = process_cpu_seconds(pid)
                    charge(cpu - cpu0 if cpu is not None and cpu0 is not None else None)
                    self._note_cpu(pid, cpu0)
                    if status == "timeout":
                        self.timeouts += 1
                    return status, value
            except (EOFError, OSError):
                return "dead", None
            cpu = process_cpu_seconds(pid)
            used = cpu - cpu0 if cpu is not None and cpu0 is not None else None
            charge(used)
            if used is not None:
                if used > hard_cpu:  # stuck in one C call, where the itimer's signal cannot land
                    self.timeouts += 1
                    self._note_cpu(pid, cpu0)
                    return "killed", None
            elif time.monotonic() - wall0 > hard_cpu:  # no /proc: wall time is the only measure left
                self.timeouts += 1
                return "killed", None
            if time.monotonic() - wall0 > self.wall_limit_s:
                self.wall_timeouts += 1
                logger.warning(
                    "a verification made no progress within %.0f s of wall time (%.1f s of CPU): the machine "
                    "is overloaded; scoring it as the default",
                    self.wall_limit_s,
                    used if used is not None else float("nan"),
                )
                return "wall", None
            if not worker.process.is_alive():
                return "dead", None

    def _note_cpu(self, pid: int, cpu0: float | None) -> None:
        cpu = process_cpu_seconds(pid)
        if cpu is not None and cpu0 is not None:
            self.max_call_cpu_s = max(self.max_call_cpu_s, cpu - cpu0)

    def worker_pids(self) -> list[int]:
        with self._cond:
            return [w.process.pid for w in self._live]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            workers, self._live, self._idle = list(self._live), set(), []
            self._cond.notify_all()
        for w in workers:
            w.kill()
