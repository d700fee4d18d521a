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


def _one_line_error(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["sample", "--latr.config", "/nonexistent/latr.yaml"], ["--latr.config", "no such file"]),
        (["sample", "--latr.config", "/"], ["--latr.config /", "directory"]),
        (["sample", "--prompts", "/"], ["--prompts /", "directory"]),
        (["sample", "--server", "http://127.0.0.1:9"], ["--server http://127.0.0.1:9", "cannot connect"]),
        (["eval", "--server", "localhost:9"], ["localhost:9", "http"]),
        (["sample", "--dtype", "fp8"], ["--dtype", "fp8"]),
        (["eval", "--device", "gpu"], ["--device", "gpu"]),
        (["sample", "--num-prompts", "0"], ["--num-prompts", "0"]),
        (["eval", "--n", "-1"], ["--n", "-1"]),
        (["sample", "--num-prom", "3"], ["--num-prom", "did you mean --num-prompts"]),  # no abbreviations
        (["sample", "--tau_abs", "0.1"], ["--tau_abs", "did you mean --latr.tau_abs"]),
        (["report", "/nonexistent-run"], ["nonexistent-run"]),
        (["eval", "--run", "/"], ["--run /", "config.json"]),
    ],
)
def test_bad_input_is_one_line_naming_it(args, needles):
    line = _one_line_error(run_cli(*args, timeout=120))
    for needle in needles:
        assert needle in line


def test_a_config_file_that_does_not_parse_is_named(tmp_path):
    bad = tmp_path / "latr.yaml"
    bad.write_text("tau_abs: [unclosed\n")
    line = _one_line_error(run_cli("sample", "--latr.config", str(bad)))
    assert str(bad) in line and "YAML" in line
    bad_json = tmp_path / "latr.json"
    bad_json.write_text("{nope")
    assert "JSON" in _one_line_error(run_cli("sample", "--latr.config", str(bad_json)))


def test_version_from_the_command_and_the_module():
    from latr_sglang import __version__

    for cmd in (
        [sys.executable, "-m", "latr_sglang", "--version"],
        [sys.executable, "-m", "latr_sglang.cli", "-h"],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0
    assert proc.stdout.startswith("usage: latr-sglang")
    out = subprocess.run(
        [sys.executable, "-m", "latr_sglang", "--version"], capture_output=True, text=True, timeout=120
    ).stdout
    assert out.strip() == f"latr-sglang {__version__}"


def test_sample_reports_reward_and_warns_when_the_tree_never_forks(tiny_model_dir, tmp_path):
    # built-in countdown prompts carry labels: the task reward is reported; tau_abs 0.99 never forks
    proc = run_cli(
        "sample", "--model", str(tiny_model_dir), "--num-prompts", "2", "--n", "2", "--max-new-tokens", "6",
        "--latr.tau_abs", "0.99", "--latr.lookahead_steps", "2,4", "--output", str(tmp_path / "t.jsonl"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "task reward (countdown)" in proc.stdout and "pass@1 (accuracy)" in proc.stdout
    assert (
        "LATR made no branches at these settings: try --latr.preset small or lower --latr.tau_abs"
        in proc.stderr
    )
    assert "2/2" in proc.stderr  # the progress bar counts prompts


def test_sample_against_a_server_closes_its_session(tiny_server, tmp_path):
    proc = run_cli(
        "sample", "--server", tiny_server.url, "--num-prompts", "1", "--n", "2", "--max-new-tokens", "4",
        "--latr.lookahead_steps", "2", "--output", str(tmp_path / "t.jsonl"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Unclosed client session" not in proc.stderr and "Unclosed connector" not in proc.stderr
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 2 * 2


def test_countdown_labels_are_read_from_the_builtin_prompts():
    from latr_sglang.cli import countdown_label
    from latr_sglang.compare import builtin_countdown_prompts

    text = builtin_countdown_prompts(1)[0]
    label = countdown_label(text)
    assert label is not None and str(label["numbers"]).replace(" ", "") in text.replace(" ", "")
    assert f"equals {label['target']}" in text
    assert countdown_label("What is 3 + 4") is None
