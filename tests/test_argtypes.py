"""Values checked where the command lines parse them (latr_sglang/argtypes.py)."""

import argparse
import os

import pytest

from latr_sglang.argtypes import (
    UsageError,
    model_argument,
    positive_int,
    same_file,
    seed_int,
    unit_float,
    writable_output,
)


@pytest.mark.parametrize(
    ("parse", "text", "needle"),
    [
        (positive_int, "0", "0 must be at least 1"),
        (positive_int, "2.5", "'2.5' is not an integer"),
        (seed_int, str(2**70), "a seed is an integer in 0..2**63-1"),
        (seed_int, "-1", "a seed is an integer in 0..2**63-1"),
        (unit_float, "nan", "must be a finite number"),
        (unit_float, "1.5", "must be a number in [0, 1]"),
    ],
)
def test_bad_numbers_are_named(parse, text, needle):
    with pytest.raises(argparse.ArgumentTypeError, match=needle.replace("[", r"\[").replace("*", r"\*")):
        parse(text)


def test_an_output_that_is_a_pipe_is_refused_at_once_instead_of_waiting_for_a_reader(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="a pipe or socket"):
        writable_output("--output", str(fifo))  # opening it for writing would wait for a reader forever
    writable_output("--output", os.devnull)  # a character device is fine
    with pytest.raises(UsageError, match="does not exist"):
        writable_output("--json", str(tmp_path / "no" / "x.json"))


def test_same_file_follows_links(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_text("x")
    (tmp_path / "b.jsonl").symlink_to(a)
    assert same_file(str(a), str(tmp_path / "b.jsonl")) and same_file(str(a), str(tmp_path / "." / "a.jsonl"))
    assert not same_file(str(a), str(tmp_path / "missing"))


def test_a_benchmark_model_is_tiny_the_embedded_one_or_a_loadable_folder(tmp_path, tiny_model_dir):
    assert model_argument("tiny") == "tiny" and model_argument("smollm2") == "smollm2"
    assert model_argument(str(tiny_model_dir)) == str(tiny_model_dir)
    with pytest.raises(argparse.ArgumentTypeError, match="no such folder; nothing is downloaded"):
        model_argument("/nonexistent/model")
    with pytest.raises(argparse.ArgumentTypeError, match=r"config\.json"):
        model_argument(str(tmp_path))


def test_a_benchmarks_usage_names_the_command_as_typed():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "latr_sglang.bench.rewards", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m latr_sglang.bench.rewards ")
