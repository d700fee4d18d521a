#!/usr/bin/env python
"""Math data in OpenRLHF's format: {"prompt", "label"} JSONL with the DAPO "Answer: $Answer" instruction.

    python datasets/prepare_math.py train --source dapo-math-17k.parquet --out data/math   # a local file
    python datasets/prepare_math.py train --source BytedTsinghua-SIA/DAPO-Math-17k --out data/math  # hub
    python datasets/prepare_math.py eval --out data/math  # MATH-500, AMC23, AIME24, OlympiadBench

Train sources: DAPO-Math-17k (`prompt` as chat messages, `reward_model.ground_truth`) or MATH-style rows
(`problem` + `answer`, or `solution` with a \\boxed answer). `--template chat` writes the bare problem with
the instruction for chat models (train with --data.apply_chat_template); `raw` wraps it for base models.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from _common import DataError, output_dir  # datasets/_common.py, beside this script

from latr_sglang.messages import short_repr
from latr_sglang.tasks.math import DAPO_TEMPLATE, last_boxed
from latr_sglang.tasks.prompts import iter_jsonl, unicode_error

EVAL_DIR = Path(__file__).parent / "eval"
EVAL_SETS = ("math500", "amc23", "aime24", "olympiadbench")
RAW_WRAPPER = "User: {prompt}\nAssistant:"
_LOCAL_SUFFIXES = (".parquet", ".jsonl", ".json")


def _check_hub_reachable(source: str, timeout_s: float = 5.0) -> None:
    """One quick request before `datasets` is asked (offline, it retries for about half a minute first)."""
    import os

    import requests

    advice = "download the parquet elsewhere and pass its path"
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise DataError(f"--source {source}: not a local file, and HF_HUB_OFFLINE is set; {advice}")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        requests.head(f"{endpoint}/api/datasets/{source}", timeout=timeout_s)
    except requests.RequestException as e:
        raise DataError(
            f"--source {source}: not a local file, and the hub ({endpoint}) cannot be reached from here "
            f"({type(e).__name__}); {advice}"
        ) from None


def rows_from(source: str) -> list[tuple[str, dict]]:
    """(location, row): "FILE:LINE" for JSONL, "FILE: row N" for parquet, "SOURCE: row N" from the hub."""
    path = Path(source).expanduser()
    if path.is_dir():
        raise DataError(f"--source {source}: is a directory, expected a parquet or JSONL file")
    if path.exists():
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            try:
                rows = pq.read_table(path).to_pylist()
            except Exception as e:  # pyarrow's errors: a truncated or non-parquet file
                raise DataError(
                    f"--source {source}: not a readable parquet file ({type(e).__name__}: {e})"
                ) from None
            return [(f"{path}: row {i + 1}", row) for i, row in enumerate(rows)]
        return [(f"{path}:{line}", row) for line, row in iter_jsonl(path)]
    if path.suffix in _LOCAL_SUFFIXES or source.startswith(
        (".", "/", "~")
    ):  # meant as a file, not a hub name
        raise DataError(f"--source {source}: no such file")
    _check_hub_reachable(source)
    try:
        from datasets import load_dataset

        return [(f"{source}: row {i + 1}", row) for i, row in enumerate(load_dataset(source, split="train"))]
    except Exception as e:  # no hub from this machine: say what to do instead
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"--source {source}: not a local file, and it could not be loaded from the hub ({first[:200]}); "
            "download the parquet elsewhere and pass its path"
        ) from None


def _text(value: object, where: str, field: str) -> str:
    """A non-empty string that a tokenizer can encode: null would become the prompt "None", 5 the text "5"."""
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: {field}={short_repr(value)}: must be a non-empty string")
    if problem := unicode_error(value):
        raise DataError(f"{where}: {field} is {problem}")
    return value


def _answer(value: object, where: str, field: str) -> str:
    """A math answer as the reward takes it: a string, an integer, or a finite number; a list would become
    the label "['a', 'b']"."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return _text(value, where, field)


def problem_and_answer(row: dict, where: str = "row") -> tuple[str, str] | None:
    """(problem, answer) of a row, None for a MATH-style row without an answer, or a DataError naming the
    row and the field."""
    if "reward_model" in row:  # DAPO-Math-17k: the prompt already holds the instruction; take the problem out
        reward_model, prompt = row["reward_model"], row.get("prompt")
        if not isinstance(reward_model, dict) or "ground_truth" not in reward_model:
            raise DataError(
                f"{where}: reward_model={short_repr(reward_model)}: expected {{'ground_truth': ...}}"
            )
        if isinstance(prompt, list):  # chat messages: the first one's content
            first = prompt[0] if prompt else None
            if not isinstance(first, dict) or "content" not in first:
                raise DataError(
                    f"{where}: prompt={short_repr(prompt)}: expected a string or chat messages "
                    "[{'role': ..., 'content': ...}]"
                )
            prompt = first["content"]
        content = _text(prompt, where, "prompt")
        problem = content.split("\n\n", 1)[1].rsplit("\n\n", 1)[0] if content.count("\n\n") >= 2 else content
        return _text(problem, where, "prompt"), _answer(
            reward_model["ground_truth"], where, "reward_model.ground_truth"
        )
    if "problem" in row and row.get("answer") not in (None, ""):
        return _text(row["problem"], where, "problem"), _answer(row["answer"], where, "answer")
    if "problem" in row and "solution" in row:
        boxed = last_boxed(_text(row["solution"], where, "solution"))
        return (_text(row["problem"], where, "problem"), boxed[1]) if boxed else None
    return None


def render(problem: str, template: str) -> str:
    prompt = DAPO_TEMPLATE.format(problem=problem)
    return prompt if template == "chat" else RAW_WRAPPER.format(prompt=prompt)


def write(path: Path, items: list[tuple[str, str, dict]], template: str) -> None:
    with open(path, "w") as f:
        for problem, answer, extra in items:
            f.write(json.dumps({"prompt": render(problem, template), "label": answer, **extra}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split", choices=["train", "eval"])
    ap.add_argument("--source", help="train: a local parquet/JSONL file or a hub dataset name")
    ap.add_argument("--out", required=True)
    ap.add_argument("--template", choices=["raw", "chat"], default="chat")
    args = ap.parse_args()
    if args.split == "train" and not args.source:
        ap.error("train needs --source")
    try:
        if args.split == "train":
            items, skipped = [], 0
            rows = rows_from(args.source)
            for where, row in rows:
                pa = problem_and_answer(row, where)
                if pa is None:
                    skipped += 1
                    continue
                items.append((pa[0], pa[1], {}))
            if not items:
                raise DataError(
                    f"--source {args.source}: none of its {len(rows)} rows has an answer (`answer`, a "
                    "\\boxed{} in `solution`, or `reward_model.ground_truth`): nothing to write"
                )
            out = output_dir(args.out)
            write(out / "train.jsonl", items, args.template)
            print(
                f"wrote {len(items)} problems to {out / 'train.jsonl'} "
                f"({skipped} rows without an answer skipped)"
            )
        else:
            out = output_dir(args.out)
            for name in EVAL_SETS:
                rows = [row for _, row in iter_jsonl(EVAL_DIR / f"{name}.jsonl")]
                items = [(r["problem"], r["answer"], {"id": r["id"], "source": r["source"]}) for r in rows]
                write(out / f"{name}.jsonl", items, args.template)
                print(f"wrote {len(items)} problems to {out / f'{name}.jsonl'}")
    except (ValueError, OSError) as e:  # a bad input file or output folder: one line, as argparse does
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
