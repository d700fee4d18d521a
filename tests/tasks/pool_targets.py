"""Targets for verify_pool tests: importable by name, as a spawned worker needs them."""

import time


def spin(seconds: float) -> float:
    """Burn `seconds` of this process's CPU time in Python bytecode (where the worker's itimer can land)."""
    end = time.process_time() + seconds
    n = 0
    while time.process_time() < end:
        n += 1
    return seconds


def stuck_in_c(n: int) -> int:
    """One long C call: a signal handler cannot run until it returns, so only a kill bounds it."""
    return sum(range(n))


def pid_and_echo(value):
    import os

    return os.getpid(), value


def exit_at_once(*args):
    """As a warm-up: the worker exits while starting, as one does that cannot import the main script."""
    import os

    os._exit(1)


def die_on(value):
    """Kills its worker for the input "die" (an input that crashes the verifier), echoes any other."""
    import os

    if value == "die":
        os._exit(3)
    return value
