"""The data scripts in datasets/, run as a user runs them."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

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
    proc = refused(
        "prepare_countdown.py", "--out", str(tmp_path / "o"), "--from", str(tmp_path / "bad.jsonl")
    )
    assert "bad.jsonl:1: nums='x': expected a non-empty list of integers" in proc.stderr
    # integer strings and integral floats are integers; a parquet row is named by its number
    rows = [{"target": 8.0, "nums": [3.0, 5.0]}, {"target": 1.0, "nums": [1.0]}]
    rows.append({"target": 2.5, "nums": [1.0]})
    pq.write_table(pa.Table.from_pylist(rows[:2]), tmp_path / "ok.parquet")
    run(
        "prepare_countdown.py",
        "--out",
        str(tmp_path / "ok"),
        "--from",
        str(tmp_path / "ok.parquet"),
        "--test",
        "1",
    )
    out = read(tmp_path / "ok/train.jsonl") + read(tmp_path / "ok/test.jsonl")
    assert sorted((r["numbers"], r["target"]) for r in out) == [([1], 1), ([3, 5], 8)]
    (tmp_path / "f.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    proc = refused("prepare_countdown.py", "--out", str(tmp_path / "f"), "--from", str(tmp_path / "f.jsonl"))
    assert "f.jsonl:3: target=2.5: must be an integer" in proc.stderr
    (tmp_path / "s.jsonl").write_text(json.dumps({"nums": ["3", 5.0], "target": " 8"}) + "\n{}\n")
    proc = refused("prepare_countdown.py", "--out", str(tmp_path / "s"), "--from", str(tmp_path / "s.jsonl"))
    assert "s.jsonl:2: no 'nums' (or 'numbers')" in proc.stderr  # row 1 converted; row 2 has no numbers


def refused(script, *args):
    """Runs a script that must refuse its input: exit 2, one line naming the problem, no traceback."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "datasets" / script), *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and proc.stderr.strip().splitlines()[-1].startswith(script), (
        proc.stderr
    )
    return proc


COUNTDOWN_ROWS = [
    # (file content, the message's needle)
    ('{"nums": [3, 5], "target": 8}\n{bad\n', "cd.jsonl:2: not valid JSON"),
    (b'{"nums": [3, 5], "target": 8, "x": "\xff"}\n', "cd.jsonl:1: not valid UTF-8 (byte 0xff"),
    ("[1, 2]\n", "cd.jsonl:1: expected a JSON object"),
    ('{"nums": ["3", "x"], "target": 8}\n', "cd.jsonl:1: nums[1]='x': must be an integer"),
    (
        '{"nums": [3.7, 5.2], "target": 8}\n',
        "cd.jsonl:1: nums[0]=3.7: must be an integer",
    ),  # was truncated to 3
    ('{"nums": [3, 5], "target": true}\n', "cd.jsonl:1: target=True: must be an integer"),
    ('{"nums": [], "target": 8}\n', "cd.jsonl:1: nums=[]: expected a non-empty list"),
    ('{"numbers": [3, 5]}\n', "cd.jsonl:1: target=None: must be an integer"),
    ("\n", "--from {path}: no rows"),
    (
        '{"nums": [3, 5], "target": 8}\n' * 3,
        "has 3 problems and --test takes 512: no training problem is left",
    ),
]


@pytest.mark.parametrize(("content", "needle"), COUNTDOWN_ROWS)
def test_countdown_from_a_bad_file_is_refused_by_file_and_line(tmp_path, content, needle):
    path = tmp_path / "cd.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    proc = refused("prepare_countdown.py", "--out", str(tmp_path / "out"), "--from", str(path))
    assert needle.format(path=path) in proc.stderr, proc.stderr
    assert not (tmp_path / "out" / "train.jsonl").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--train", "-5", "--test", "3"], "--train -5: need at least 1 training problem"),
        (["--train", "0"], "--train 0: need at least 1"),
        (["--train", "5", "--test", "-1"], "--test -1: must be >= 0"),
        (["--from", "{tmp}/nope.jsonl"], "--from {tmp}/nope.jsonl: no such file"),
        (["--from", "{tmp}"], "is a directory"),
    ],
)
def test_countdown_bad_arguments_are_refused(tmp_path, args, needle):
    args = [a.format(tmp=tmp_path) for a in args]
    proc = refused("prepare_countdown.py", "--out", str(tmp_path / "out"), *args)
    assert needle.format(tmp=tmp_path) in proc.stderr, proc.stderr


def test_an_out_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "afile").write_text("keep")
    proc = refused("prepare_countdown.py", "--out", str(tmp_path / "afile"), "--train", "3", "--test", "1")
    assert f"--out {tmp_path / 'afile'}: is a file, expected a folder" in proc.stderr
    proc = refused("prepare_math.py", "eval", "--out", str(tmp_path / "afile"))
    assert "is a file, expected a folder" in proc.stderr and (tmp_path / "afile").read_text() == "keep"


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


MATH_ROWS = [
    ('{"problem": "p", "answer": "1"}\n{bad\n', "m.jsonl:2: not valid JSON"),
    (b'{"problem": "\xff", "answer": "1"}\n', "m.jsonl:1: not valid UTF-8"),
    ('["p", "1"]\n', "m.jsonl:1: expected a JSON object"),
    (
        '{"problem": 5, "answer": "5"}\n',
        "m.jsonl:1: problem=5: must be a non-empty string",
    ),  # was the text "5"
    ('{"problem": null, "answer": "3"}\n', "m.jsonl:1: problem=None: must be a non-empty string"),
    ('{"problem": "p", "answer": ["a", "b"]}\n', "m.jsonl:1: answer=['a', 'b']: must be a non-empty string"),
    ('{"problem": "p", "answer": NaN}\n', "m.jsonl:1: answer=nan: must be a non-empty string"),
    (
        '{"problem": "a\\ud800", "answer": "1"}\n',
        "m.jsonl:1: problem is not valid Unicode (lone surrogate at 1)",
    ),
    ('{"problem": "p", "solution": 7}\n', "m.jsonl:1: solution=7: must be a non-empty string"),
    (
        '{"prompt": "x", "reward_model": "oops"}\n',
        "m.jsonl:1: reward_model='oops': expected {'ground_truth': ...}",
    ),
    (
        '{"prompt": [1, 2], "reward_model": {"ground_truth": "3"}}\n',
        "m.jsonl:1: prompt=[1, 2]: expected a string",
    ),
    ('{"prompt": "q", "reward_model": {"ground_truth": [3]}}\n', "reward_model.ground_truth=[3]: must be"),
    ('{"problem": "p", "solution": "no box"}\n', "none of its 1 rows has an answer"),  # was 'wrote 0' exit 0
]


@pytest.mark.parametrize(("content", "needle"), MATH_ROWS)
def test_math_from_a_bad_file_is_refused_by_file_and_line(tmp_path, content, needle):
    path = tmp_path / "m.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    proc = refused("prepare_math.py", "train", "--source", str(path), "--out", str(tmp_path / "out"))
    assert needle in proc.stderr, proc.stderr
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_math_sources_that_are_meant_as_files_are_not_looked_up_on_a_hub(tmp_path):
    proc = refused(
        "prepare_math.py", "train", "--source", str(tmp_path / "nope.parquet"), "--out", str(tmp_path)
    )
    assert f"--source {tmp_path / 'nope.parquet'}: no such file" in proc.stderr
    proc = refused("prepare_math.py", "train", "--out", str(tmp_path))
    assert "train needs --source" in proc.stderr
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    proc = refused(
        "prepare_math.py", "train", "--source", str(tmp_path / "broken.parquet"), "--out", str(tmp_path)
    )
    assert "not a readable parquet file" in proc.stderr


def test_math_numeric_answers_are_kept_as_their_text(tmp_path):
    rows = [{"problem": "a", "answer": 5}, {"problem": "b", "answer": 0.5}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    run("prepare_math.py", "train", "--source", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "o"))
    assert [r["label"] for r in read(tmp_path / "o/train.jsonl")] == ["5", "0.5"]


def test_generated_solutions_score_through_the_prompt_format(tmp_path):
    run("prepare_countdown.py", "--out", str(tmp_path), "--train", "10", "--test", "1")
    for r in read(tmp_path / "train.jsonl"):
        assert (
            score("<answer>" + "+".join(map(str, r["numbers"])) + "</answer>", r["numbers"], r["target"])[0]
            >= 0.1
        )
    assert CORRECT == 1.0


def test_a_hub_name_offline_is_refused_at_once_not_after_the_hubs_retries(tmp_path, monkeypatch):
    import time

    args = ("prepare_math.py", "train", "--source", "org/some-set", "--out", str(tmp_path))
    start = time.monotonic()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "HF_HUB_OFFLINE is set" in refused(*args).stderr
    # an unreachable endpoint: one quick request, then the same advice
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    line = refused(*args).stderr.strip().splitlines()[-1]
    for needle in ("--source org/some-set", "cannot be reached from here", "pass its path"):
        assert needle in line, line
    assert time.monotonic() - start < 60
