"""The data scripts in datasets/, run as a user runs them."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from latr_sglang.tasks.countdown import CORRECT, score

ROOT = Path(__file__).parents[2]


def run(script, *args):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "datasets" / script), *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def read(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_countdown_generate_raw_and_chat(tmp_path):
    run("prepare_countdown.py", "--out", str(tmp_path / "raw"), "--train", "50", "--test", "20")
    train, test = read(tmp_path / "raw/train.jsonl"), read(tmp_path / "raw/test.jsonl")
    assert len(train) == 50 and 0 < len(test) <= 20
    assert train[0]["prompt"].startswith("A conversation between User and Assistant")
    assert not {(tuple(r["numbers"]), r["target"]) for r in test} & {
        (tuple(r["numbers"]), r["target"]) for r in train
    }
    label = json.loads(train[0]["label"])
    assert label == {"numbers": train[0]["numbers"], "target": train[0]["target"]}
    run(
        "prepare_countdown.py",
        "--out",
        str(tmp_path / "chat"),
        "--train",
        "5",
        "--test",
        "5",
        "--template",
        "chat",
    )
    assert read(tmp_path / "chat/train.jsonl")[0]["prompt"].startswith("Using the numbers")


def test_countdown_from_the_public_dataset_format(tmp_path):
    rows = [
        {"target": 65, "nums": [19, 36, 55, 7]},
        {"target": 3, "nums": [1, 2]},
        {"target": 10, "nums": [5, 5]},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "cd.parquet")
    run(
        "prepare_countdown.py",
        "--out",
        str(tmp_path / "out"),
        "--from",
        str(tmp_path / "cd.parquet"),
        "--test",
        "1",
    )
    out = read(tmp_path / "out/train.jsonl") + read(tmp_path / "out/test.jsonl")
    assert sorted(r["target"] for r in out) == [3, 10, 65]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"nums": "x", "target": 1}) + "\n")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "datasets/prepare_countdown.py"),
            "--out",
            str(tmp_path / "o"),
            "--from",
            str(tmp_path / "bad.jsonl"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "row 0" in proc.stderr


def test_checked_in_countdown_test_set_is_solvable():
    rows = read(ROOT / "datasets/eval/countdown_test.jsonl")
    assert len(rows) == 512
    from latr_sglang.tasks.countdown import solvable

    assert all(solvable(r["numbers"], r["target"]) for r in rows[:100])


def test_math_eval_and_train(tmp_path):
    out = run("prepare_math.py", "eval", "--out", str(tmp_path / "eval"))
    assert "500 problems" in out
    amc = read(tmp_path / "eval/amc23.jsonl")
    assert len(amc) == 40 and "Answer: $Answer" in amc[0]["prompt"] and amc[0]["label"] == "27"
    dapo = [
        {
            "prompt": [{"role": "user", "content": "Solve the following...\n\nWhat is 1+1?\n\nRemember..."}],
            "reward_model": {"ground_truth": "2"},
        },
        {"problem": "What is 2+2?", "solution": "It is \\boxed{4}."},
        {"problem": "no answer here", "solution": "none"},
    ]
    pq.write_table(pa.Table.from_pylist(dapo[:1]), tmp_path / "dapo.parquet")
    (tmp_path / "math.jsonl").write_text("\n".join(json.dumps(r) for r in dapo[1:]) + "\n")
    run("prepare_math.py", "train", "--source", str(tmp_path / "dapo.parquet"), "--out", str(tmp_path / "a"))
    row = read(tmp_path / "a/train.jsonl")[0]
    assert row["label"] == "2" and "What is 1+1?" in row["prompt"] and row["prompt"].count("Answer:") == 2
    out = run(
        "prepare_math.py", "train", "--source", str(tmp_path / "math.jsonl"), "--out", str(tmp_path / "b")
    )
    assert "1 rows without an answer skipped" in out
    assert read(tmp_path / "b/train.jsonl")[0]["label"] == "4"


def test_generated_solutions_score_through_the_prompt_format(tmp_path):
    run("prepare_countdown.py", "--out", str(tmp_path), "--train", "10", "--test", "1")
    for r in read(tmp_path / "train.jsonl"):
        assert (
            score("<answer>" + "+".join(map(str, r["numbers"])) + "</answer>", r["numbers"], r["target"])[0]
            >= 0.1
        )
    assert CORRECT == 1.0
