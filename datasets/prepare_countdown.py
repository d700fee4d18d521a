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
import sys
from pathlib import Path

from _common import DataError, output_dir  # datasets/_common.py, beside this script

from latr_sglang.messages import short_repr
from latr_sglang.tasks.countdown import CountdownProblem, as_integer, generate
from latr_sglang.tasks.prompts import iter_jsonl


def _integer(value: object, where: str) -> int:
    number = as_integer(value)
    if number is None:
        raise DataError(f"{where}={short_repr(value)}: must be an integer")
    return number


def public_rows(path: Path) -> list[tuple[str, dict]]:
    """(location, row) of a parquet or JSONL file: "FILE:LINE" (JSONL) or "FILE: row N" (parquet)."""
    if not path.exists():
        raise DataError(f"--from {path}: no such file")
    if path.is_dir():
        raise DataError(f"--from {path}: is a directory, expected a parquet or JSONL file")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow's errors: a truncated or non-parquet file
            raise DataError(f"--from {path}: not a readable parquet file ({type(e).__name__}: {e})") from None
        return [(f"{path}: row {i + 1}", row) for i, row in enumerate(rows)]
    return [(f"{path}:{line}", row) for line, row in iter_jsonl(path)]


def load_public(path: Path) -> list[CountdownProblem]:
    problems = []
    for where, row in public_rows(path):
        if "nums" not in row and "numbers" not in row:
            raise DataError(f"{where}: no 'nums' (or 'numbers'): expected a list of integers")
        key = "nums" if "nums" in row else "numbers"
        numbers, target = row.get(key), row.get("target")
        if not isinstance(numbers, list | tuple) or not numbers:
            raise DataError(f"{where}: {key}={short_repr(numbers)}: expected a non-empty list of integers")
        values = tuple(_integer(n, f"{where}: {key}[{j}]") for j, n in enumerate(numbers))
        problems.append(CountdownProblem(values, _integer(target, f"{where}: target"), ""))
    if not problems:
        raise DataError(f"--from {path}: no rows")
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
    if args.train < 1:
        ap.error(f"--train {args.train}: need at least 1 training problem")
    if args.test < 0:
        ap.error(f"--test {args.test}: must be >= 0")
    try:
        if args.source:
            problems = load_public(Path(args.source))
            if len(problems) <= args.test:
                raise DataError(
                    f"--from {args.source} has {len(problems)} problems and --test takes {args.test}: no "
                    "training problem is left (lower --test)"
                )
            random.Random(args.seed).shuffle(problems)
            test, train = problems[: args.test], problems[args.test :]
        else:
            problems = generate(args.train + args.test, seed=args.seed)
            train, test = problems[: args.train], problems[args.train :]
            seen = {(p.numbers, p.target) for p in train}
            test = [p for p in test if (p.numbers, p.target) not in seen]
        out = output_dir(args.out)
        write(out / "train.jsonl", train, args.template)
        write(out / "test.jsonl", test, args.template)
    except (ValueError, OSError) as e:  # a bad input file or output folder: one line, as argparse does
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {len(train)} train and {len(test)} test problems to {out}")


if __name__ == "__main__":
    main()
