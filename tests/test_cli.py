"""The command line as a user runs it (subprocesses), and the flags generated from LATRConfig."""

import argparse
import json
import subprocess
import sys

import pytest

from latr_sglang.config import ConfigError, LATRConfig, add_latr_arguments, latr_config_from_args


def run_cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "latr_sglang.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_sample_writes_trajectories_and_prints_the_comparison(tiny_model_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "\n".join(json.dumps({"question": q}) for q in ["What is 3 + 4", "The capital of"]) + "\n"
    )
    out = tmp_path / "traj.jsonl"
    proc = run_cli(
        "sample",
        "--model",
        str(tiny_model_dir),
        "--prompts",
        str(prompts),
        "--input-key",
        "question",
        "--n",
        "4",
        "--max-new-tokens",
        "16",
        "--output",
        str(out),
        "--latr.preset",
        "math",
        "--latr.tau_abs",
        "0.05",
        "--latr.tau_rel",
        "0.9",
        "--latr.lookahead_steps",
        "4,8",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wall-time ratio" in proc.stdout and "pairwise edit distance" in proc.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 * 2 * 4  # two samplers x two prompts x n
    assert {r["sampler"] for r in rows} == {"latr", "stochastic"}
    for r in rows:
        assert len(r["token_ids"]) == len(r["logprobs"]) >= 1
        assert r["origin"] in ("tree", "fill", "stochastic")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--latr.tau_abs", "2"], "tau_abs"),
        (["--latr.lookahead_steps", "30,20"], "lookahead_steps"),
        (["--prompts", "/nonexistent/prompts.jsonl"], "prompts.jsonl"),
        (["--max-new-tokens", "-4"], "max_new_tokens"),
    ],
)
def test_sample_bad_input_is_named_without_a_traceback(tiny_model_dir, args, needle):
    proc = run_cli("sample", "--model", str(tiny_model_dir), "--n", "2", *args)
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr


def test_sample_rejects_a_malformed_prompt_file(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{not json}\n')
    proc = run_cli("sample", "--model", str(tiny_model_dir), "--prompts", str(bad))
    assert proc.returncode == 2 and "bad.jsonl:2" in proc.stderr


def test_latr_flags_layer_file_preset_and_flags(tmp_path):
    parser = argparse.ArgumentParser()
    add_latr_arguments(parser)
    path = tmp_path / "latr.yaml"
    LATRConfig.preset("countdown", chunk_size=12).save(path)
    args = parser.parse_args(
        [
            "--latr.config",
            str(path),
            "--latr.tau_abs",
            "0.3",
            "--latr.mix_ratio_schedule",
            "0:1,50:0.5",
            "--latr.prune_edit_distance_below",
            "none",
        ]
    )
    cfg = latr_config_from_args(args)
    assert cfg.chunk_size == 12 and cfg.tau_abs == 0.3 and cfg.tau_rel == 0.15
    assert cfg.mix_ratio_schedule == {0: 1.0, 50: 0.5} and cfg.prune_edit_distance_below is None
    assert latr_config_from_args(parser.parse_args([]), default_preset="math") == LATRConfig.preset("math")
    with pytest.raises(SystemExit):
        parser.parse_args(["--latr.rel_rule", "inverted"])
    with pytest.raises(ConfigError, match="tau_rel"):
        latr_config_from_args(parser.parse_args(["--latr.tau_rel", "1.5"]))
