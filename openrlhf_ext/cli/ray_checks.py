"""Ray-mode inputs checked before Ray starts: what OpenRLHF would otherwise find out in a Ray actor tens of
seconds later, as a deep traceback (a model folder that is not one, a prompts file without the key it is
read by), or never (a new run writing into another run's checkpoints), and the settings our engines cannot
serve. Each problem is one line naming the flag and the value; latr-train joins them into its error."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# flags of OpenRLHF's vLLM engines that the torch engine has no use for (the SGLang backend maps them)
VLLM_ONLY_FLAGS = (
    "vllm.gpu_memory_utilization",
    "vllm.enable_prefix_caching",
    "vllm.enforce_eager",
    "vllm.enable_sleep",
)
JSON_PROBE_BYTES = 64 << 20  # a .json file (one array) is parsed whole up to this size, else not checked


def looks_local(name: str) -> bool:
    """A model or dataset name that can only be a local path (absolute, ./ ../ ~/), or one that exists."""
    return os.path.isabs(name) or name.startswith((".", "~")) or os.path.exists(os.path.expanduser(name))


def model_path_problems(model: str | None) -> list[str]:
    """--actor.model_name_or_path that names a local folder must be a loadable one (a hub id is fetched by
    OpenRLHF's actors, as in OpenRLHF)."""
    if not model or not looks_local(model):
        return []
    from openrlhf_ext.cli.train_ppo_ray import model_problem

    problem = model_problem(model)
    return [f"--actor.model_name_or_path {model}: {problem}"] if problem else []


def first_row(path: Path) -> tuple[dict | None, str | None]:
    """The first record of a local .jsonl/.json file, or why there is none (None, None: not checked)."""
    try:
        size = path.stat().st_size
        if size == 0:
            return None, "the file is empty"
        with path.open("rb") as f:
            head = f.read(1 << 16).lstrip()
        if path.suffix.lower() == ".json" and head.startswith(b"["):
            if size > JSON_PROBE_BYTES:
                return None, None
            rows = json.loads(path.read_bytes())
            if not rows:
                return None, "the JSON array is empty"
            row, where = rows[0], "its first element"
        else:  # JSON lines (also what `datasets` reads from a .json file that is not one array)
            with path.open("rb") as f:
                found = next(((n, line) for n, line in enumerate(f, start=1) if line.strip()), None)
            if found is None:
                return None, "the file holds only blank lines"
            row, where = json.loads(found[1]), f"line {found[0]}"
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except json.JSONDecodeError as e:
        return None, f"not JSON ({e.msg} at line {e.lineno} column {e.colno})"
    except OSError as e:
        return None, f"cannot be read ({e.strerror})"
    if not isinstance(row, dict):
        return None, f"{where} is a JSON {type(row).__name__}, not an object of fields"
    return row, None


def json_file_problems(path: Path, keys: dict[str, str | None]) -> list[str]:
    """Why a local .jsonl/.json prompts file cannot be read as OpenRLHF reads it: not JSON, or its first row
    lacks a field `keys` names (flag -> field name, e.g. --data.input_key -> prompt). Other files, folders
    and hub datasets are left to OpenRLHF's loader."""
    if not path.is_file() or path.suffix.lower() not in (".json", ".jsonl"):
        return []
    row, why = first_row(path)
    if why:
        return [why]
    if row is None:
        return []
    fields = ", ".join(sorted(map(str, row))) or "none"
    return [
        f"its rows have no field {key!r} (--{key_flag} {key}); the first row's fields: {fields}"
        for key_flag, key in keys.items()
        if key is not None and key not in row
    ]


def checkpoint_problems(ckpt: Any) -> list[str]:
    """A new run (no --ckpt.load_enable) that saves checkpoints into a --ckpt.path holding another run's
    would overwrite some of them and OpenRLHF's retention would delete others, mixing the two runs."""
    if ckpt.load_enable or ckpt.save_steps <= 0:
        return []
    actor = Path(ckpt.path).expanduser() / "_actor"
    saved = sorted(p.name for p in actor.glob("global_step*")) if actor.is_dir() else []
    if not saved:
        return []
    shown = ", ".join(saved[:3]) + (", ..." if len(saved) > 3 else "")
    return [
        f"--ckpt.path {ckpt.path} holds another run's checkpoints ({shown}): --ckpt.load_enable resumes it; "
        "for a new run give another --ckpt.path (or remove that folder)"
    ]


def ray_input_problems(inv: Any) -> list[str]:
    """Everything above but the prompt files' content (checked where their names are, dataset_problems), for
    a ray-mode invocation with one of our backends or OpenRLHF's."""
    args, given, backend = inv.openrlhf, inv.given, inv.rollout.backend
    problems = model_path_problems(given.get("actor.model_name_or_path"))
    problems += checkpoint_problems(args.ckpt)
    zero = args.ds.zero_stage
    if zero not in (0, 1, 2, 3):
        problems.append(f"--ds.zero_stage {zero}: DeepSpeed's ZeRO stages are 0, 1, 2 and 3")
    elif zero == 3 and inv.trainer.device == "cpu":
        problems.append(
            "--ds.zero_stage 3 does not run in --trainer.device cpu mode (OpenRLHF 0.11.2's ZeRO-3 model "
            "loading fails with the pinned transformers); use 0, 1 or 2"
        )
    if backend != "vllm" and given.get("train.async_enable"):
        problems.append(
            f"--train.async_enable is not supported with --rollout.backend {backend}: OpenRLHF's async "
            "trainer generates in an actor of its own, which LATR's training-step hand-off (the mix-ratio "
            "schedule) and the dynamic-sampling and overlong patches do not reach"
        )
    if backend == "torch":
        tp = args.vllm.tensor_parallel_size
        if tp and tp > 1:
            problems.append(
                f"--vllm.tensor_parallel_size {tp}: the torch engine runs on one device (tensor parallelism "
                "is SGLang's: --rollout.backend sglang)"
            )
    return problems


def ray_warnings(inv: Any) -> list[str]:
    """Flags that are accepted but do nothing in this invocation (a script shared between backends may pass
    them): one line each, not an error."""
    if inv.trainer.mode != "ray" or inv.rollout.backend != "torch":
        return []
    ignored = [f"--{flag}" for flag in VLLM_ONLY_FLAGS if flag in inv.explicit or flag in inv.given]
    if not ignored:
        return []
    return [
        f"{', '.join(ignored)} {'has' if len(ignored) == 1 else 'have'} no effect with --rollout.backend "
        "torch (vLLM's engine settings; the SGLang backend maps them)"
    ]
