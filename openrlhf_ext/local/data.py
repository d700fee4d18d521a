"""Training and held-out problems of the local trainer, the reward it scores them with, and the position in
the shuffled training data (saved with a checkpoint)."""

from __future__ import annotations

import random
from typing import Any

from latr_sglang.tasks.prompts import read_jsonl, split_problems, task_problems
from openrlhf_ext.local.config import LocalTrainConfig

EVAL_SEED_OFFSET = 7919  # held-out problems come from another seed, minus any training duplicates
TRAIN_POOL = 2000  # built-in task problems drawn for training (the data order repeats after them)


def default_reward(prompt: str, response: str, label: Any) -> tuple[float, float]:
    """(shaped reward, accuracy) of one response by the task's verifier (latr_sglang.tasks.reward_func)."""
    from latr_sglang.tasks.reward_func import score_one

    reward, accuracy, _ = score_one(prompt + response, prompt, label)
    return reward, accuracy


def load_problems(cfg: LocalTrainConfig) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """(training problems, held-out problems) as (prompt, label). A built-in task holds out eval_prompts
    problems of its own (none of them is trained on, whatever order its numbers are shown in); a prompts
    file is evaluated on eval_dataset."""
    if cfg.prompts is not None:
        rows = read_jsonl(cfg.prompts, {cfg.input_key: str, cfg.label_key: object})
        return [(row[cfg.input_key], row[cfg.label_key]) for row in rows], []
    low, high = cfg.countdown_numbers
    options = dict(chat=cfg.apply_chat_template, min_numbers=low, max_numbers=high, max_number=cfg.max_number)
    train = task_problems(cfg.task, TRAIN_POOL, cfg.seed, **options)
    if not cfg.eval_prompts or cfg.eval_dataset:
        return train, []
    held_out = task_problems(cfg.task, 8 * cfg.eval_prompts + 200, cfg.seed + EVAL_SEED_OFFSET, **options)
    return split_problems(train, held_out, cfg.eval_prompts)


def load_prompts(cfg: LocalTrainConfig) -> list[tuple[str, Any]]:
    return load_problems(cfg)[0]


class PromptStream:
    """The training problems in a seeded order, cycled; `position` (how many were taken) is what a
    checkpoint saves to continue the same order."""

    def __init__(self, problems: list[tuple[str, Any]], seed: int) -> None:
        if not problems:
            raise ValueError("no training problems (the prompts file is empty?)")
        self.problems = list(problems)
        random.Random(seed).shuffle(self.problems)
        self.position = 0

    def take(self, count: int) -> list[tuple[str, Any]]:
        batch = [self.problems[(self.position + i) % len(self.problems)] for i in range(count)]
        self.position += count
        return batch
