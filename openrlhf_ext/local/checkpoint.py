"""The local trainer's checkpoints: policy, optimizer, data position, step and RNG, enough to continue
exactly where a run stopped; written atomically with a checksum manifest and refused on a changed config
(openrlhf_ext.checkpointing.CheckpointStore)."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import torch

from openrlhf_ext.checkpointing import RESUME_MAY_CHANGE, CheckpointError, CheckpointStore

STATE_FILE = "trainer_state.pt"
FORCE_RESUME_FLAG = "--local.force_resume true"
# what a run writes into its output directory: a new run (not a resume) into one holding any is refused
RUN_FILES = ("config.json", "metrics.csv", "policy", "checkpoints", "summary.json", "tensorboard")


def prepare_output_dir(output_dir: str, resume: bool) -> Path:
    """The run's output directory, created; a ValueError naming --ckpt.output_dir when it is a file, cannot be
    created or written, or (unless `resume`) already holds another run, whose config, metrics and policy
    would be overwritten and whose checkpoints would stay beside the new run's. Checked before any model
    loads."""
    flag = f"--ckpt.output_dir {output_dir}"
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{flag}: is a file, not a directory")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{flag}: {parent} is a file, not a directory")
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{flag}: cannot create it ({e.strerror or e})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"{flag}: not writable")
    if not resume:
        found = [name + ("/" if (out / name).is_dir() else "") for name in RUN_FILES if (out / name).exists()]
        if found:
            raise ValueError(
                f"{flag}: holds an earlier run ({', '.join(found)}), which a new run would overwrite; "
                "continue it with --ckpt.load_enable (without checkpoints it starts again from step 1 "
                "there), or choose another --ckpt.output_dir (or delete this one)"
            )
    return out


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
        force_hint=FORCE_RESUME_FLAG,
        may_change=RESUME_MAY_CHANGE | {"eval_before"},
    )
    if ckpt is None:
        return None
    state = ckpt.torch_load(STATE_FILE)
    _check_same_shapes(ckpt.path, state["model"], model.state_dict())
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    print(f"resumed from {ckpt.path.name} (step {state['step']})", flush=True)
    return int(state["step"]), int(state["data_position"])


def _check_same_shapes(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """A CheckpointError naming the first tensor that differs when the checkpoint holds another model's
    weights (another width or depth): force_resume lets a config differ, never the weights' shapes."""
    missing = [k for k in current if k not in saved]
    unexpected = [k for k in saved if k not in current]
    shapes = [
        f"{k}: {list(saved[k].shape)} in the checkpoint, {list(v.shape)} in the model"
        for k, v in current.items()
        if k in saved and tuple(saved[k].shape) != tuple(v.shape)
    ]
    problems = (
        shapes
        + [f"{k}: in the model, not in the checkpoint" for k in missing]
        + [f"{k}: in the checkpoint, not in the model" for k in unexpected]
    )
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CheckpointError(
            f"resume refused: {path} holds another model's weights ({problems[0]}{more}); no flag can load "
            "them into this model: start a new output directory, or resume with the checkpoint's model"
        )
