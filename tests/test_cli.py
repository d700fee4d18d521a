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
        (["--max-new-tokens", "-4"], "--max-new-tokens"),
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


def test_sample_refuses_to_write_over_its_prompts_and_checks_labels_before_loading(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        '{"prompt": "a", "label": "4"}\n{"prompt": "b", "label": {"numbers": "x", "target": 3}}\n'
    )
    before = prompts.read_text()
    # no model is loaded for either: the model path does not even exist
    proc = run_cli(
        "sample", "--model", str(tmp_path / "none"), "--prompts", str(prompts), "--output", str(prompts)
    )
    assert (
        proc.returncode == 2
        and "the same file as --prompts" in proc.stderr
        and "Traceback" not in proc.stderr
    )
    assert prompts.read_text() == before
    proc = run_cli(
        "eval", "--model", str(tmp_path / "none"), "--dataset", str(prompts), "--output", str(prompts)
    )
    assert (
        proc.returncode == 2 and "the same file as --dataset" in proc.stderr and prompts.read_text() == before
    )
    proc = run_cli("sample", "--model", str(tmp_path / "none"), "--prompts", str(prompts), "--output", "")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"--prompts {prompts}: row 2: label: label.numbers='x'" in proc.stderr


def test_sample_warns_when_its_prompts_leave_it_little_to_report(tiny_model_dir, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "What is 1+1?", "label": "2"}\n{"prompt": "Name a colour"}\n')
    proc = run_cli(
        "sample", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--num-prompts", "5", "--n", "4",
        "--eta", "0.1", "--max-new-tokens", "4", "--output", "",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"--num-prompts 5: --prompts {prompts} has only 2 rows" in proc.stderr
    assert "1 of 2 rows have no 'label' (--label-key); no task reward is reported" in proc.stderr
    assert "task reward" not in proc.stdout
    assert "--eta 0.1 x --n 4 rounds to no tree samples per prompt" in proc.stderr


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


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        # inf and nan: an OverflowError traceback after the model loaded, or a message without the flag
        (["sample", "--prefix-cache-mb", "inf"], ["--prefix-cache-mb", "'inf'", "finite"]),
        (["sample", "--prefix-cache-mb", "nan"], ["--prefix-cache-mb", "'nan'", "finite"]),
        (["serve", "--max-body-mb", "inf"], ["--max-body-mb", "'inf'", "finite"]),
        (["eval", "--temperature", "inf"], ["--temperature", "'inf'", "finite"]),
        # more top log-probs than the engine returns: was a RuntimeError traceback from the tree phase
        (
            ["sample", "--latr.max_branch_per_token", "101"],
            ["--latr.max_branch_per_token 101", "at most 100 top log-probs"],
        ),
        # as sample refuses it: all-zero metrics otherwise
        (["eval", "--max-new-tokens", "0"], ["--max-new-tokens", "0 must be at least 1"]),
        # an output the run could not write at its end: refused before it starts
        (
            ["sample", "--output", "/nonexistent-dir/t.jsonl"],
            ["--output /nonexistent-dir/t.jsonl", "not exist"],
        ),
    ],
)
def test_bad_numbers_and_outputs_are_refused_before_anything_loads(args, needles):
    line = _one_line_error(run_cli(*args, timeout=120))
    for needle in needles:
        assert needle in line, line


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("lookahead_steps: 20\n", "LATRConfig.lookahead_steps=20: must be a list of positive integers"),
        ("preset: nope\n", "unknown LATR preset 'nope'; known: countdown, math, small"),
        ("exempt_chars: 5\n", "LATRConfig.exempt_chars=5: must be a string"),
    ],
)
def test_a_config_file_of_the_wrong_shape_is_named(tmp_path, text, needle):
    path = tmp_path / "latr.yaml"
    path.write_text(text)
    line = _one_line_error(run_cli("sample", "--latr.config", str(path)))
    assert f"--latr.config {path}: {needle}" in line, line


def test_eval_output_under_a_file_is_refused_before_the_run(tmp_path):
    (tmp_path / "file").write_text("")
    target = tmp_path / "file" / "r.json"
    line = _one_line_error(run_cli("eval", "--output", str(target)))
    assert f"--output {target}" in line and "not a folder" in line, line


def test_a_prompt_longer_than_the_context_is_one_line(tiny_model_dir, tmp_path):
    proc = run_cli(
        "sample", "--model", str(tiny_model_dir), "--num-prompts", "1", "--n", "2", "--context-length", "8",
        "--output", str(tmp_path / "t.jsonl"),
    )  # fmt: skip
    # the model loads first (the prompt's tokens need its tokenizer): its progress bar may come before
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("latr-sglang: error: built-in prompt: prompt 1 has"), line
    assert "context length is 8" in line, line


def test_eval_names_a_prompt_longer_than_the_context_before_it_samples(tiny_model_dir, tmp_path):
    rows = tmp_path / "eval.jsonl"
    rows.write_text(
        '{"prompt": "1+1?", "label": "2"}\n' + json.dumps({"prompt": "x " * 50, "label": "1"}) + "\n"
    )
    proc = run_cli(
        "eval", "--model", str(tiny_model_dir), "--dataset", str(rows), "--context-length", "40", "--n", "1",
        "--max-new-tokens", "2", "--no-chat-template",
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"latr-sglang: error: --dataset {rows}: prompt 2 has"), line
    assert "context length is 40" in line, line


def test_an_engine_refusal_in_the_tree_phase_stays_a_request_error(tiny_engine):
    # main() prints a RequestError (a ValueError) in one line; a RuntimeError wrapper became a traceback
    from latr_sglang.driver import LATRSampler
    from latr_sglang.engines.base import RequestError, SamplingParams

    sampler = LATRSampler(
        tiny_engine,
        LATRConfig(lookahead_steps=(2,)),
        SamplingParams(max_new_tokens=4),
        tiny_engine.eos_ids,
        str,
    )
    too_long = [5] * (tiny_engine.context_length + 1)
    with pytest.raises(RequestError, match="a tree-phase engine request failed: input_ids has"):
        sampler.sample_sync([too_long], 2, eta=1.0)


def test_a_context_length_past_the_trained_one_warns(tiny_model_dir, capsys):
    from latr_sglang.cli import _engine_args, _make_engine

    parser = argparse.ArgumentParser()
    _engine_args(parser)
    trained = json.loads((tiny_model_dir / "config.json").read_text())["max_position_embeddings"]
    args = parser.parse_args(["--model", str(tiny_model_dir), "--context-length", str(trained * 2)])
    engine = _make_engine(args)
    try:
        assert engine.context_length == trained * 2  # still used: rotary positions run past it
    finally:
        engine.close_sync()
    err = capsys.readouterr().err
    assert f"--context-length {trained * 2} is beyond the model's max_position_embeddings {trained}" in err


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["sample", "--eta", "2"], ["--eta", "'2'", "[0, 1]"]),
        (["sample", "--max-new-tokens", "0"], ["--max-new-tokens", "at least 1"]),
        (["sample", "--max-new-tokens", "-1"], ["--max-new-tokens", "at least 1"]),
        (["eval", "--api-key", "k"], ["--api-key", "--server"]),
        (["sample", "--num", "3"], ["--num (did you mean --num-prompts?)"]),  # an abbreviation
        (["sample", "--log-level", "debug"], ["--log-level", "before the subcommand"]),
        (["sample", "--latr.tau_abs", "2"], ["--latr.tau_abs 2.0: must be"]),  # the flag, not the field
        (["sample", "--latr.lookahead_steps", "abc"], ["--latr.lookahead_steps", "integers", "'abc'"]),
        (["sample", "--latr.mix_ratio_schedule", "0:1,10:x"], ["--latr.mix_ratio_schedule", "STEP:VALUE"]),
    ],
)
def test_sampling_flags_are_checked_when_parsed_before_any_model_loads(args, needles):
    line = _one_line_error(run_cli(*args, timeout=120))
    for needle in needles:
        assert needle in line, line


def test_eval_against_a_server_with_an_api_key_sends_it(tiny_engine):
    from latr_sglang.server import ServerThread

    server = ServerThread(tiny_engine, api_key="sekret").start()
    try:
        common = ["eval", "--server", server.url, "--limit", "1", "--n", "1", "--max-new-tokens", "2"]
        line = _one_line_error(run_cli(*common, timeout=120))
        assert "HTTP 401" in line and "needs an API key (--api-key" in line
        assert "refused this API key" in _one_line_error(run_cli(*common, "--api-key", "wrong", timeout=120))
        proc = run_cli(*common, "--api-key", "sekret", timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads(proc.stdout)["n"] == 1
    finally:
        server.stop()


def test_eval_of_a_run_evaluates_its_trained_policy_unless_told(tiny_model_dir, tmp_path):
    import dataclasses
    import shutil

    from openrlhf_ext.local.config import LocalTrainConfig

    run = tmp_path / "run"
    run.mkdir()
    cfg = LocalTrainConfig(model=str(tiny_model_dir), eval_prompts=2, output_dir=str(run))
    (run / "config.json").write_text(json.dumps({"train": dataclasses.asdict(cfg), "latr": {}}, default=str))
    common = ["eval", "--run", str(run), "--limit", "1", "--n", "1", "--max-new-tokens", "2"]

    def evaluated(*extra):
        proc = run_cli(*common, *extra)
        assert proc.returncode == 0, proc.stderr[-2000:]
        header = next(line for line in proc.stderr.splitlines() if line.startswith("model "))
        return json.loads(proc.stdout[: proc.stdout.rindex("}") + 1])["model"], header

    model, header = evaluated()  # no policy saved yet: the run's base model, said so
    assert model == str(tiny_model_dir) and "the run has saved no policy/ yet" in header
    shutil.copytree(tiny_model_dir, run / "policy")
    model, header = evaluated()
    assert model == str(run / "policy") and "(the run's trained policy)" in header
    model, header = evaluated("--model", str(tiny_model_dir))  # --model given: that one
    assert model == str(tiny_model_dir) and "trained policy" not in header
