"""A pool of worker processes with a hard per-call time bound that works from any thread.

Signal-based timeouts (math-verify's own) only work in a main thread; OpenRLHF calls reward functions from
worker threads. Here each call goes to a long-lived worker process over a pipe; a worker that does not answer
in time is killed and reaped (a fresh one starts on the next call), and the call returns the default.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import queue
import threading
import time
from collections.abc import Callable
from typing import Any


def _worker_main(conn, target: Callable[..., Any]) -> None:
    while True:
        try:
            args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            conn.send(("ok", target(*args)))
        except Exception as e:
            conn.send(("error", f"{type(e).__name__}: {e}"))


class _Worker:
    def __init__(self, ctx, target: Callable[..., Any]) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, target), daemon=True)
        self.process.start()
        child.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


class TimeoutPool:
    """`call(*args)` runs `target(*args)` in a worker process; past `timeout_s` it returns `default`."""

    def __init__(self, target: Callable[..., Any], workers: int = 2, timeout_s: float = 5.0) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.size = workers
        self._ctx = mp.get_context("spawn")  # no fork: the parent may hold threads, CUDA or torch state
        self._idle: queue.Queue[_Worker | None] = queue.Queue()
        for _ in range(workers):
            self._idle.put(None)  # a slot; the process starts on first use
        self._lock = threading.Lock()
        self._live: set[_Worker] = set()
        self.timeouts = 0
        self._closed = False
        atexit.register(self.close)

    def call(self, *args: Any, default: Any = None) -> Any:
        """The bound covers the whole call: waiting for a free worker included."""
        if self._closed:
            raise RuntimeError("the pool is closed")
        deadline = time.monotonic() + self.timeout_s
        try:
            worker = self._idle.get(timeout=self.timeout_s)
        except queue.Empty:
            self.timeouts += 1
            return default
        try:
            if worker is None or not worker.process.is_alive():
                worker = _Worker(self._ctx, self.target)
                with self._lock:
                    self._live.add(worker)
            worker.conn.send(args)
            if worker.conn.poll(max(deadline - time.monotonic(), 0.0)):
                status, value = worker.conn.recv()
                return value if status == "ok" else default
            self.timeouts += 1
            self._discard(worker)
            worker = None
            return default
        except (EOFError, OSError, BrokenPipeError):
            if worker is not None:
                self._discard(worker)
            worker = None
            return default
        finally:
            self._idle.put(worker)

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [w.process.pid for w in self._live]

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._live.discard(worker)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            workers, self._live = list(self._live), set()
        for w in workers:
            w.kill()
