"""Reward functions for the custom-reward tests, in a module of their own: with reward_timeout_s they run in
spawned worker processes, which import them by name (a test module pytest imports by path has none)."""

from __future__ import annotations

import math


def picky_reward(prompt: str, response: str, label: object) -> tuple[float, float]:
    """Loops on "spin", raises on "boom", returns NaN on "nan", else 1 for the label and 0 for the rest."""
    if response == "spin":
        while True:
            pass
    if response == "boom":
        raise ZeroDivisionError("boom in the user's reward")
    if response == "nan":
        return math.nan, 0.0
    return (1.0, 1.0) if response == str(label) else (0.0, 0.0)
