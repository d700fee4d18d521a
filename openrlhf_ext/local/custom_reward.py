"""A user's own reward function in the local trainer (`LocalTrainer(cfg, reward_fn=fn)`), called so that model
output cannot stop training and a broken function is still reported.

`fn(prompt, response, label) -> (reward, accuracy)` is called once per response. Its result is checked: two
finite numbers, accuracy in [0, 1] (a NaN reward would turn a whole group's advantages into NaN; an accuracy
outside [0, 1] would corrupt pass@k and DAPO's filter), else a ValueError names the value and the response.
A response the function raises on scores 0 and is counted; a round where it raised on every response is a
broken function, not hostile output, and raises with the first error.

Time: with `reward_timeout_s = 0` (the default) the function runs in the trainer's process, where nothing can
stop it; a call slower than SLOW_CALL_S is warned about once. With `reward_timeout_s > 0` it runs in worker
processes (latr_sglang.tasks.verify_pool) under that many CPU seconds per response; a response past the
bound scores 0 and is counted. Workers are spawned, so the function must be picklable (defined at a module's
top level; not a lambda or a closure). The task's own verifiers are always bounded (latr_sglang.tasks.math).
"""

from __future__ import annotations

import functools
import math
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from latr_sglang.messages import short_repr

RewardFn = Callable[[str, str, Any], tuple[float, float]]  # (prompt, response, label) -> (reward, accuracy)
SLOW_CALL_S = 5.0  # an in-process call this slow is warned about (once): it holds up the whole step


@dataclass
class RewardCounts:
    """What happened to one round's responses, for the step's metrics."""

    errors: int = 0  # the function raised: scored 0
    timeouts: int = 0  # past reward_timeout_s (or the machine's wall-clock cap): scored 0
    first_error: str | None = field(default=None, repr=False)


def checked_score(value: Any, prompt: str, response: str) -> tuple[float, float]:
    """(reward, accuracy) from what a reward function returned, or a ValueError naming the value."""
    where = f"for the response {short_repr(response)} (prompt {short_repr(prompt, 60)})"
    expected = "it must return (reward, accuracy): two finite numbers, accuracy in [0, 1]"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"reward_fn returned {short_repr(value)} {where}; {expected}")
    reward, accuracy = value
    numbers = []
    for name, x in (("reward", reward), ("accuracy", accuracy)):
        try:
            number = float(x)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"reward_fn returned {name}={short_repr(x)} {where}; {expected}") from None
        if not math.isfinite(number):
            raise ValueError(f"reward_fn returned {name}={number} {where}; {expected}")
        numbers.append(number)
    if not 0.0 <= numbers[1] <= 1.0:
        raise ValueError(f"reward_fn returned accuracy={numbers[1]} {where}; {expected}")
    return numbers[0], numbers[1]


def _describe(error: BaseException) -> str:
    try:
        return short_repr(f"{type(error).__name__}: {error}", 300)
    except Exception:  # an exception whose own str() fails
        return type(error).__name__


@functools.lru_cache(maxsize=4)
def _loaded(fn_bytes: bytes) -> RewardFn:
    return pickle.loads(fn_bytes)


def _call_checked(fn_bytes: bytes, row: tuple[str, str, Any] | None) -> tuple[str, Any]:
    """In a worker: ("ok", score) or ("error", message) when the function raised; ("bad", message) for a bad
    return value and ("unloadable", message) when the function cannot be imported here, both of which the
    trainer raises (bugs in the set-up, not in the response). `row` None only loads the function."""
    try:
        fn = _loaded(fn_bytes)
    except Exception as error:  # a module the worker cannot import (pickle stores functions by name)
        return "unloadable", _describe(error)
    if row is None:
        return "ok", None
    try:
        value = fn(*row)
    except Exception as error:  # a response the function cannot handle scores 0
        return "error", _describe(error)
    try:
        return "ok", checked_score(value, row[0], row[1])
    except ValueError as error:
        return "bad", str(error)


class CustomReward:
    """Scores rows of (prompt, response, label) with a user's reward function."""

    def __init__(self, fn: RewardFn, timeout_s: float = 0.0) -> None:
        if not callable(fn):
            raise ValueError(f"reward_fn={short_repr(fn)}: must be a callable (prompt, response, label)")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s >= 0:
            raise ValueError(f"reward_timeout_s={short_repr(timeout_s)}: must be a number >= 0 (0: no bound)")
        if not math.isfinite(timeout_s):
            raise ValueError(f"reward_timeout_s={timeout_s}: must be finite (0: no bound)")
        self.fn = fn
        self.timeout_s = timeout_s
        self._warned_slow = False
        self._warned_error = False
        self.pool = None
        if timeout_s > 0:
            try:
                self._fn_bytes = pickle.dumps(fn)
            except Exception as error:  # pickle raises several types
                raise ValueError(
                    f"reward_timeout_s={timeout_s} runs reward_fn in spawned worker processes, so it must be "
                    f"picklable (a function defined at a module's top level); {short_repr(fn)} is not: "
                    f"{type(error).__name__}: {error}. Use reward_timeout_s=0 to call it in this process."
                ) from None
            from latr_sglang.tasks.verify_pool import TimeoutPool

            # one worker: responses are scored one at a time
            self.pool = TimeoutPool(_call_checked, workers=1, timeout_s=timeout_s)
            self._pooled(None)  # load it in a worker now: a function workers cannot import fails here

    def score(self, rows: Sequence[tuple[str, str, Any]]) -> tuple[list[tuple[float, float]], RewardCounts]:
        counts = RewardCounts()
        scores = [self._one(prompt, response, label, counts) for prompt, response, label in rows]
        if rows and counts.errors == len(rows):
            raise RuntimeError(
                f"reward_fn raised on every one of this round's {len(rows)} responses: the function is "
                f"broken rather than the responses. First error: {counts.first_error}"
            )
        if counts.errors and not self._warned_error:
            self._warned_error = True
            print(
                f"warning: reward_fn raised on {counts.errors} of {len(rows)} responses (scored 0; counted "
                f"in rollout/reward_errors): {counts.first_error}",
                flush=True,
            )
        return scores, counts

    def _one(self, prompt: str, response: str, label: Any, counts: RewardCounts) -> tuple[float, float]:
        if self.pool is not None:
            outcome, value = self._pooled((prompt, response, label))
            if outcome == "ok":
                return value
            if outcome == "error":
                return self._failed(counts, value)
            counts.timeouts += 1  # "timeout" or "wall": the bound, not the function, ended it
            return 0.0, 0.0
        start = time.perf_counter()
        try:
            value = self.fn(prompt, response, label)
        except Exception as error:  # a response the function cannot handle scores 0
            return self._failed(counts, _describe(error))
        finally:
            self._note_time(time.perf_counter() - start)
        return checked_score(value, prompt, response)

    def _pooled(self, row: tuple[str, str, Any] | None) -> tuple[str, Any]:
        """(outcome, value) of one call in a worker; raises for what is not the response's fault."""
        assert self.pool is not None
        outcome, value = self.pool.call_outcome(self._fn_bytes, row)
        if outcome == "ok":
            outcome, value = value
        if outcome == "bad":
            raise ValueError(value)
        if outcome == "unloadable":
            self.close()
            raise ValueError(
                f"reward_fn {short_repr(self.fn)} cannot be loaded in a worker process ({value}): with "
                "reward_timeout_s > 0 it must be importable by its module name (a module on sys.path, not "
                "__main__ of a script run without the main guard, not a test module pytest imported by path)"
            )
        if outcome == "failed":
            self.close()
            raise RuntimeError(
                f"no worker process could run reward_fn {short_repr(self.fn)}: the workers died twice "
                "(their error is printed above)"
            )
        return outcome, value

    def _failed(self, counts: RewardCounts, message: str) -> tuple[float, float]:
        counts.errors += 1
        if counts.first_error is None:
            counts.first_error = message
        return 0.0, 0.0

    def _note_time(self, seconds: float) -> None:
        if seconds > SLOW_CALL_S and not self._warned_slow:
            self._warned_slow = True
            print(
                f"warning: reward_fn took {seconds:.1f} s on one response in the trainer's process, where "
                "nothing bounds it; set reward_timeout_s (CPU seconds per response, run in worker processes) "
                "to bound it",
                flush=True,
            )

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None
