#!/usr/bin/env python
"""Countdown data in OpenRLHF's format: {"prompt", "label", "numbers", "target"} JSONL.

    python datasets/prepare_countdown.py --out data/countdown                  # generate (seeded, solvable)
    python datasets/prepare_countdown.py --out data/countdown --from cd.parquet  # Countdown-Tasks-3to4 file
    python datasets/prepare_countdown.py --out data/countdown --template chat  # a user message, chat models

Generated problems follow the public Countdown-Tasks-3to4 set (3-4 numbers in 1..100, an integer target) and
are solvable by construction. `--from` accepts that dataset's parquet or JSONL (columns `nums`, `target`).
Train with `--data.input_key prompt --data.label_key label` (plus `--data.apply_chat_template` for `chat`).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from latr_sglang.tasks.countdown import CountdownProblem, generate


def load_public(path: Path) -> list[CountdownProblem]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    problems = []
    for i, row in enumerate(rows):
        numbers = row.get("nums", row.get("numbers"))
        target = row.get("target")
        if not isinstance(numbers, list) or not isinstance(target, int):
            raise ValueError(
                f"{path} row {i}: expected 'nums' (list of ints) and 'target' (int), got {row!r}"
            )
        problems.append(CountdownProblem(tuple(int(n) for n in numbers), target, ""))
    return problems


def write(path: Path, problems: list[CountdownProblem], template: str) -> None:
    with open(path, "w") as f:
        for p in problems:
            row = {
                "prompt": p.prompt(template),
                "label": p.label(),
                "numbers": list(p.numbers),
                "target": p.target,
            }
            f.write(json.dumps(row) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (train.jsonl, test.jsonl)")
    ap.add_argument("--from", dest="source", default=None, help="public dataset file (parquet or JSONL)")
    ap.add_argument("--train", type=int, default=20_000, help="train problems (generated)")
    ap.add_argument("--test", type=int, default=512, help="test problems")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--template", choices=["raw", "chat"], default="raw")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.source:
        problems = load_public(Path(args.source))
        random.Random(args.seed).shuffle(problems)
        test, train = problems[: args.test], problems[args.test :]
    else:
        problems = generate(args.train + args.test, seed=args.seed)
        train, test = problems[: args.train], problems[args.train :]
        seen = {(p.numbers, p.target) for p in train}
        test = [p for p in test if (p.numbers, p.target) not in seen]
    write(out / "train.jsonl", train, args.template)
    write(out / "test.jsonl", test, args.template)
    print(f"wrote {len(train)} train and {len(test)} test problems to {out}")


if __name__ == "__main__":
    main()
