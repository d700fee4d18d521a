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
from pathlib import Path

from latr_sglang.tasks.math import DAPO_TEMPLATE, last_boxed

EVAL_DIR = Path(__file__).parent / "eval"
EVAL_SETS = ("math500", "amc23", "aime24", "olympiadbench")
RAW_WRAPPER = "User: {prompt}\nAssistant:"


def rows_from(source: str) -> list[dict]:
    path = Path(source)
    if path.exists():
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    try:
        from datasets import load_dataset

        return list(load_dataset(source, split="train"))
    except Exception as e:  # no hub from this machine: say what to do instead
        raise SystemExit(
            f"{source!r} is not a local file and could not be loaded from the hub ({e}); "
            "download the parquet elsewhere and pass its path"
        ) from None


def problem_and_answer(row: dict) -> tuple[str, str] | None:
    if "reward_model" in row:  # DAPO-Math-17k: the prompt already holds the instruction; take the problem out
        content = row["prompt"][0]["content"] if isinstance(row["prompt"], list) else row["prompt"]
        problem = content.split("\n\n", 1)[1].rsplit("\n\n", 1)[0] if content.count("\n\n") >= 2 else content
        return problem, str(row["reward_model"]["ground_truth"])
    if "problem" in row and row.get("answer") not in (None, ""):
        return row["problem"], str(row["answer"])
    if "problem" in row and "solution" in row:
        boxed = last_boxed(row["solution"])
        return (row["problem"], boxed[1]) if boxed else None
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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.split == "train":
        if not args.source:
            raise SystemExit("train needs --source")
        items, skipped = [], 0
        for row in rows_from(args.source):
            pa = problem_and_answer(row)
            if pa is None:
                skipped += 1
                continue
            items.append((pa[0], pa[1], {}))
        write(out / "train.jsonl", items, args.template)
        print(
            f"wrote {len(items)} problems to {out / 'train.jsonl'} ({skipped} rows without an answer skipped)"
        )
    else:
        for name in EVAL_SETS:
            rows = [json.loads(line) for line in (EVAL_DIR / f"{name}.jsonl").read_text().splitlines()]
            items = [(r["problem"], r["answer"], {"id": r["id"], "source": r["source"]}) for r in rows]
            write(out / f"{name}.jsonl", items, args.template)
            print(f"wrote {len(items)} problems to {out / f'{name}.jsonl'}")


if __name__ == "__main__":
    main()
