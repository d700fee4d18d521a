"""Training and held-out problems of the local trainer, the reward it scores them with, and the position in
the shuffled training data (saved with a checkpoint)."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from latr_sglang.evaluate import EvalItem, RunSettings, check_config_types
from latr_sglang.tasks.prompts import read_jsonl, split_problems, task_problems
from openrlhf_ext.local.config import LocalTrainConfig

EVAL_SEED_OFFSET = 7919  # held-out problems come from another seed, minus any training duplicates
TRAIN_POOL = 2000  # built-in task problems drawn for training (the data order repeats after them)


def default_reward(prompt: str, response: str, label: Any) -> tuple[float, float]:
    """(shaped reward, accuracy) of one response by the task's verifier (latr_sglang.tasks.reward_func)."""
    from latr_sglang.tasks.reward_func import score_one

    reward, accuracy, _ = score_one(prompt + response, prompt, label)
    return reward, accuracy


def default_rewards(
    prompts: Sequence[str], responses: Sequence[str], labels: Sequence[Any]
) -> list[tuple[float, float]]:
    """(shaped reward, accuracy) of each response, scored as one batch by the task's verifier
    (latr_sglang.tasks.reward_func.reward_func): the math answers concurrently, under one CPU budget for the
    whole batch, so a batch of hostile answers costs a bounded time; a response past it scores 0. Each value
    is the one `default_reward` gives the same response alone (unless the budget ran out)."""
    from latr_sglang.tasks.reward_func import reward_func

    if not prompts:
        return []
    out = reward_func(
        [p + r for p, r in zip(prompts, responses)], list(prompts), list(labels), responses=list(responses)
    )
    return list(zip(out["rewards"].tolist(), out["scores"].tolist()))


def load_problems(cfg: LocalTrainConfig) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """(training problems, held-out problems) as (prompt, label). A built-in task holds out eval_prompts
    problems of its own (none of them is trained on, whatever order its numbers are shown in); a prompts
    file is evaluated on eval_dataset."""
    if cfg.prompts is not None:
        rows = read_jsonl(cfg.prompts, {cfg.input_key: str, cfg.label_key: object})
        return [
            (row[cfg.input_key], _checked_label(cfg, i, row[cfg.label_key])) for i, row in enumerate(rows)
        ], []
    low, high = cfg.countdown_numbers
    options = dict(chat=cfg.apply_chat_template, min_numbers=low, max_numbers=high, max_number=cfg.max_number)
    train = task_problems(cfg.task, TRAIN_POOL, cfg.seed, **options)
    if not cfg.eval_prompts or cfg.eval_dataset:
        return train, []
    held_out = task_problems(cfg.task, 8 * cfg.eval_prompts + 200, cfg.seed + EVAL_SEED_OFFSET, **options)
    return split_problems(train, held_out, cfg.eval_prompts)


def _checked_label(cfg: LocalTrainConfig, index: int, label: Any) -> Any:
    """The row's label, checked as the reward will parse it (which converts the same unambiguous forms, like
    "65" for 65), or a ValueError naming the row: a malformed label would otherwise score 0 on every sample
    and train on nothing, without a word."""
    from latr_sglang.tasks.reward_func import check_label

    try:
        check_label(label)
        return label
    except ValueError as e:
        raise ValueError(f"{cfg.prompts}: row {index + 1}: {cfg.label_key}: {e}") from None


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


def run_settings(run_dir: str | Path) -> RunSettings:
    """The settings of the local trainer's run in `run_dir`, read with the trainer's own config class (so a
    default the trainer derives, like countdown-fewshot's prefix, is derived the same way)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"--run {run_dir}: no config.json there (a `latr-train --trainer.mode local` run)"
        )
    try:
        train = json.loads(path.read_text())["train"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"--run {run_dir}: {path} is not a local training run's config") from None
    if not isinstance(train, dict):
        raise ValueError(f"--run {run_dir}: {path}: 'train' is not an object")
    names = {f.name for f in dataclasses.fields(LocalTrainConfig)}
    check_config_types(LocalTrainConfig, {k: v for k, v in train.items() if k in names}, str(path), "train.")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in train.items() if k in names}
    cfg = LocalTrainConfig(**values)
    held_out = None
    if cfg.prompts is None and cfg.eval_prompts:
        _, pairs = load_problems(cfg)
        held_out = [EvalItem(prompt, label) for prompt, label in pairs]
    task = cfg.builtin_task or cfg.task
    return RunSettings(
        chat=bool(cfg.chat),
        response_prefix=cfg.prefix,
        stop_at_newline=bool(cfg.stops_at_newline),
        held_out=held_out,
        description=f"{run_dir} (task {task}, chat {cfg.chat}, prefix {cfg.prefix!r})",
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        n=cfg.eval_n,
        base_model=cfg.model,
        policy=str(Path(run_dir) / "policy")
        if (Path(run_dir) / "policy" / "config.json").is_file()
        else None,
    )
