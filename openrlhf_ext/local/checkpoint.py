"""The local trainer's checkpoints: policy, optimizer, data position, step and RNG, enough to continue
exactly where a run stopped; written atomically with a checksum manifest and refused on a changed config
(openrlhf_ext.checkpointing.CheckpointStore)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from openrlhf_ext.checkpointing import RESUME_MAY_CHANGE, CheckpointStore

STATE_FILE = "trainer_state.pt"


def save_trainer_state(
    store: CheckpointStore,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data_position: int,
    config: dict[str, Any],
) -> Path:
    state = {
        "step": step,
        "data_position": data_position,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "python_rng": random.getstate(),
    }  # the engine needs no RNG state: the driver seeds every sampled request, greedy ones use none
    return store.save(step, {STATE_FILE: state}, config=config).path


def load_trainer_state(
    store: CheckpointStore,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config: dict[str, Any],
    force: bool,
) -> tuple[int, int] | None:
    """Restores model, optimizer and RNG from the latest intact checkpoint; returns (step, data position),
    or None when there is none. A damaged latest falls back to the previous intact one (with a warning
    naming the file); a changed config is refused (CheckpointError) unless `force` (--local.force_resume)."""
    ckpt = store.load_latest(
        config=config,
        force=force,
        force_hint="--local.force_resume",
        may_change=RESUME_MAY_CHANGE | {"eval_before"},
    )
    if ckpt is None:
        return None
    state = ckpt.torch_load(STATE_FILE)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    print(f"resumed from {ckpt.path.name} (step {state['step']})", flush=True)
    return int(state["step"]), int(state["data_position"])
