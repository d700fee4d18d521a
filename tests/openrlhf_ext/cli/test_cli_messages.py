"""What a new user sees from `latr-train` when something is wrong: Ctrl-C, a bad flag value, a bad local-mode
value, conflicting flags, a model or output folder that cannot be used, a missing prompts file. Each is one
line, `latr-train: error: ...` naming the flag as typed (or `latr-train: interrupted ...`), before the
training stack is imported."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from openrlhf_ext.cli import train_ppo_ray
from openrlhf_ext.cli.train_ppo_ray import local_config, main, parse
from openrlhf_ext.local.config import LocalTrainConfig

LOCAL = ["--trainer.mode", "local"]
MEAN_RANGE = [
    "--algo.dynamic_filtering_enable", "--dapo.dynamic_filtering_rule", "mean_range",
    "--algo.dynamic_filtering_range", "0.9", "0.1",
]  # fmt: skip
LATR_TRAIN = str(Path(sys.executable).parent / "latr-train")


def one_line(argv, capsys) -> str:
    """The one stderr line of a latr-train command that fails with a usage error (exit 2)."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors exit from parse_args
        code = e.code
    out = capsys.readouterr()
    assert code == 2, out.err
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.err, out.err
    assert lines[0].startswith("latr-train: error: "), lines[0]
    return lines[0]


def run_cli(argv, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([LATR_TRAIN, *argv], capture_output=True, text=True, env=env, **kwargs)


# ---- 1: Ctrl-C is one line and exit 130 ------------------------------------------------------------------
def tiny_local_run(model, out, steps="1000"):
    return [
        *LOCAL, "--actor.model_name_or_path", str(model), "--trainer.max_steps", steps,
        "--rollout.batch_size", "2", "--rollout.n_samples_per_prompt", "2", "--rollout.max_new_tokens", "8",
        "--algo.kl.init_coef", "0", "--latr.lookahead_steps", "4,8", "--latr.chunk_size", "4",
        "--ckpt.save_steps", "1", "--ckpt.output_dir", str(out),
    ]  # fmt: skip


def test_ctrl_c_during_a_local_run_is_one_line_naming_the_step_and_the_checkpoint(tmp_path, tiny_model_dir):
    """SIGINT (what Ctrl-C sends) to `latr-train --trainer.mode local` mid-run: no KeyboardInterrupt
    traceback, exit 130, one line with the step and how to continue; and that continuation works."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    # SIGINT as a terminal leaves it (a harness may run the tests with SIGINT ignored: a background job,
    # whose children inherit that and rightly keep ignoring Ctrl-C)
    reset = functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL)
    proc = subprocess.Popen(
        [LATR_TRAIN, *tiny_local_run(tiny_model_dir, out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=reset,
    )  # fmt: skip
    try:
        for line in proc.stdout:  # the per-step table: interrupt once step 3 has trained
            if line.startswith("step    3"):
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    ours = [line for line in err.splitlines() if line.startswith("latr-train")]
    assert len(ours) == 1 and err.rstrip().endswith(ours[0]), err[-3000:]
    line = ours[0]
    assert line.startswith("latr-train: interrupted "), line
    where = re.match(r"latr-train: interrupted (at|after) step (\d+);", line)
    assert where and int(where[2]) >= 3, line  # the step fit() was in, or had just finished
    assert "; --ckpt.load_enable continues from the checkpoint of step " in line, line
    saved = int(line.split("checkpoint of step ")[1].split()[0])
    assert saved >= 2 and f"({out / 'checkpoints' / f'step_{saved}'})" in line
    # what the line says works: the same flags with --ckpt.load_enable continue after that step
    resumed = run_cli(
        [*tiny_local_run(tiny_model_dir, out, str(saved + 1)), "--ckpt.load_enable"], timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"step {saved + 1:4d} |" in resumed.stdout and "step    1 |" not in resumed.stdout


def escaped(call, *args):
    """call(*args), a KeyboardInterrupt it lets out failing the test (not ending the test session)."""
    try:
        return call(*args)
    except KeyboardInterrupt:
        pytest.fail(f"KeyboardInterrupt escaped {call.__name__}()")


def test_ctrl_c_in_ray_mode_or_before_the_run_is_one_line(tmp_path, monkeypatch, capsys):
    reward = str(Path(__import__("latr_sglang.tasks.reward_func").tasks.reward_func.__file__))
    ray = ["--actor.model_name_or_path", "m", "--reward.remote_url", reward, "--vllm.num_engines", "1"]

    def interrupted(inv):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_ppo_ray, "run_ray", interrupted)
    assert escaped(main, ray) == 130
    assert capsys.readouterr().err == "latr-train: interrupted\n"
    ckpt = tmp_path / "ckpt"
    (ckpt / "_actor").mkdir(parents=True)
    assert escaped(main, [*ray, "--ckpt.save_steps", "5", "--ckpt.path", str(ckpt)]) == 130
    assert capsys.readouterr().err == (
        f"latr-train: interrupted; --ckpt.load_enable resumes from the checkpoints in {ckpt}\n"
    )
    monkeypatch.setattr(train_ppo_ray, "run_local", interrupted)  # e.g. while importing the trainer
    assert escaped(main, LOCAL) == 130
    assert capsys.readouterr().err == "latr-train: interrupted\n"


# ---- 2: a bad value for an argparse flag: one line and a hint, not ~200 lines of usage --------------------
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--trainer.mode", "locl"],
            "argument --trainer.mode: invalid choice: 'locl' (choose from 'ray', 'local')",
        ),
        (["--rollout.max_new_tokens", "abc"], "argument --rollout.max_new_tokens: invalid int value: 'abc'"),
        (["--bogus", "1"], "unrecognized arguments: --bogus 1"),
    ],
)
def test_a_bad_flag_value_is_one_line_with_a_hint(argv, expected, capsys):
    assert one_line(argv, capsys) == f"latr-train: error: {expected} (see latr-train --help)"


def test_a_bad_flag_value_from_the_shell_is_one_line():
    proc = run_cli(["--trainer.mode", "locl"], timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        "latr-train: error: argument --trainer.mode: invalid choice: 'locl' (choose from 'ray', 'local') "
        "(see latr-train --help)\n"
    )


# ---- 3: local-mode values named by the flag typed, not the LocalTrainConfig field -------------------------
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--trainer.max_steps", "0"], "--trainer.max_steps 0: must be a positive integer"),
        (
            ["--rollout.n_samples_per_prompt", "1"],
            "--rollout.n_samples_per_prompt 1: group advantages need at least 2 samples per prompt",
        ),
        (
            ["--local.task", "gsm8k"],
            "--local.task gsm8k: expected one of countdown-fewshot, countdown (other problems: a JSONL file "
            "as --data.prompt_dataset)",
        ),
        (["--eval.dataset", "nope"], "--eval.dataset nope: neither a bundled set"),
        (["--local.device", "tpu:0"], "--local.device tpu:0: "),
        (["--trainer.device", "tpu:0"], "--trainer.device tpu:0: "),
        (["--local.countdown_numbers", "3,2"], "--local.countdown_numbers 3,2: needs 1 <= min <= max"),
        (MEAN_RANGE, "--algo.dynamic_filtering_range 0.9 0.1: needs low < high"),
        (
            ["--data.label_key", "prompt"],
            "--data.label_key prompt: the same key as --data.input_key prompt: the prompt would be its own "
            "label",
        ),
        (
            ["--reward.overlong_buffer_len", "64", "--rollout.max_new_tokens", "32"],
            "--reward.overlong_buffer_len 64.0: must be <= --rollout.max_new_tokens 32",
        ),
        (
            ["--local.eval_prompts", "300"],
            "--local.eval_prompts 300: the built-in task countdown-fewshot (max_number 12) has only 221 "
            "distinct problems, and training needs some of them: --local.eval_prompts must be below 221",
        ),
    ],
)
def test_local_mode_values_are_named_by_the_flag_given(extra, expected, capsys):
    line = one_line([*LOCAL, *extra, "--dry-run"], capsys)
    assert line.startswith(f"latr-train: error: {expected}"), line
    assert "LocalTrainConfig" not in line


def test_cuda_on_a_machine_without_it_names_the_flag(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for flag in ("--local.device", "--trainer.device"):
        line = one_line([*LOCAL, flag, "cuda", "--dry-run"], capsys)
        assert line == f"latr-train: error: {flag} cuda: CUDA is not available on this machine"


def test_eval_on_a_prompts_file_names_the_flags(tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": "p", "label": "1"}\n')
    line = one_line(
        [*LOCAL, "--data.prompt_dataset", str(rows), "--local.eval_prompts", "4", "--dry-run"], capsys
    )
    assert line == (
        f"latr-train: error: --local.eval_prompts 4: evaluating on a prompts file (--data.prompt_dataset "
        f"{rows}) needs a held-out eval set: --eval.dataset"
    )


def test_the_python_api_keeps_the_field_names():
    """Without a command line there is no flag: LocalTrainConfig names its own fields."""
    with pytest.raises(ValueError, match=r"^LocalTrainConfig\.steps=0: must be a positive integer$"):
        LocalTrainConfig(steps=0)
    with pytest.raises(
        ValueError, match=r"^LocalTrainConfig\.task='gsm8k': expected one of .* as prompts\)$"
    ):
        LocalTrainConfig(task="gsm8k")
    with pytest.raises(
        ValueError, match=r"^LocalTrainConfig\.overlong_buffer_len=64: must be <= max_new_tokens=32 "
    ):
        LocalTrainConfig(overlong_buffer_len=64, max_new_tokens=32)


def test_the_local_trainers_own_command_line_names_its_flags(capsys):
    from openrlhf_ext.local_trainer import main as local_main

    assert local_main(["--steps", "0"]) == 2
    prog = "python -m openrlhf_ext.local_trainer"
    assert capsys.readouterr().err == f"{prog}: error: --steps 0: must be a positive integer\n"
    with pytest.raises(SystemExit) as e:
        local_main(["--algo", "ppo"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{prog}: error: argument --algo: invalid choice: 'ppo'") and err.count("\n") == 1


# ---- 4: the root conflict, not what it implies ------------------------------------------------------------
def test_local_mode_with_vllm_reports_the_backend_alone(capsys):
    line = one_line([*LOCAL, "--rollout.backend", "vllm", "--latr.preset", "small", "--dry-run"], capsys)
    assert line == (
        "latr-train: error: --trainer.mode local runs the in-process torch engine, not --rollout.backend vllm"
    )


def test_vllms_implied_stochastic_sampler_is_not_reported_as_given(capsys):
    reward = str(Path(__import__("latr_sglang.tasks.reward_func").tasks.reward_func.__file__))
    ray = ["--actor.model_name_or_path", "m", "--reward.remote_url", reward, "--vllm.num_engines", "1"]
    line = one_line([*ray, "--rollout.backend", "vllm", "--latr.preset", "small", "--dry-run"], capsys)
    assert line == "latr-train: error: --latr.preset given with --rollout.backend vllm"
    # a sampler the user wrote is still named
    line = one_line([*ray, "--rollout.sampler", "stochastic", "--latr.chunk_size", "8", "--dry-run"], capsys)
    assert line == "latr-train: error: --latr.chunk_size given with --rollout.sampler stochastic"


# ---- 5: one prefix; the model and output folders checked first, and by --dry-run ---------------------------
def test_an_output_dir_with_an_earlier_run_fails_the_dry_run(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    line = one_line([*LOCAL, "--ckpt.output_dir", str(out), "--dry-run"], capsys)
    assert line.startswith(f"latr-train: error: --ckpt.output_dir {out}: holds an earlier run (config.json)")
    assert main([*LOCAL, "--ckpt.output_dir", str(out), "--ckpt.load_enable", "--dry-run"]) == 0  # resumes it
    capsys.readouterr()
    afile = tmp_path / "afile"
    afile.write_text("x")
    line = one_line([*LOCAL, "--ckpt.output_dir", str(afile / "sub"), "--dry-run"], capsys)
    assert line == f"latr-train: error: --ckpt.output_dir {afile / 'sub'}: {afile} is a file, not a directory"
    new = tmp_path / "new" / "run"
    assert main([*LOCAL, "--ckpt.output_dir", str(new), "--dry-run"]) == 0
    assert not (tmp_path / "new").exists()  # a dry run creates nothing


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_missing_model_fails_first_even_in_a_dry_run(tmp_path, dry_run):
    """Before: the dry run said everything was fine, and the run failed after DeepSpeed's import (~8 s)."""
    argv = [*LOCAL, "--actor.model_name_or_path", "/nope", "--ckpt.output_dir", str(tmp_path / "run")]
    proc = run_cli([*argv, "--dry-run"] if dry_run else argv, timeout=120)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.startswith(
        "latr-train: error: --actor.model_name_or_path /nope: model '/nope' is not a local Hugging Face "
    ), proc.stderr
    assert proc.stderr.count("\n") == 1  # no DeepSpeed warning: nothing of the training stack was imported
    assert not (tmp_path / "run").exists()


def test_a_model_folder_missing_its_weights_is_named(tmp_path, tiny_model_dir, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text((Path(tiny_model_dir) / "config.json").read_text())
    line = one_line([*LOCAL, "--actor.model_name_or_path", str(model), "--dry-run"], capsys)
    assert line.startswith(
        f"latr-train: error: --actor.model_name_or_path {model}: model {model}: no weights"
    )
    assert main([*LOCAL, "--actor.model_name_or_path", str(tiny_model_dir), "--dry-run"]) == 0


def test_the_local_trainers_errors_carry_latr_trains_prefix(tmp_path, capsys):
    from latr_sglang.config import LATRConfig
    from openrlhf_ext.local_trainer import train

    afile = tmp_path / "afile"
    afile.write_text("x")
    cfg = LocalTrainConfig(model=str(tmp_path / "no-such-model"), output_dir=str(afile))
    assert train(cfg, LATRConfig(), prog="latr-train") == 2
    assert (
        capsys.readouterr().err
        == f"latr-train: error: --ckpt.output_dir {afile}: is a file, not a directory\n"
    )


# ---- 6: a prompts file that does not exist; the task a prompts file replaces ------------------------------
def test_a_missing_prompts_file_says_so(tmp_path, capsys):
    line = one_line([*LOCAL, "--data.prompt_dataset", "nope.jsonl", "--dry-run"], capsys)
    assert line.startswith("latr-train: error: --data.prompt_dataset nope.jsonl: no such file (")
    line = one_line([*LOCAL, "--data.prompt_dataset", str(tmp_path), "--dry-run"], capsys)
    assert line.startswith(f"latr-train: error: --data.prompt_dataset {tmp_path}: is a directory")


def test_the_dry_run_shows_no_task_when_a_prompts_file_replaces_it(tmp_path, capsys):
    rows = tmp_path / "train.jsonl"
    rows.write_text('{"prompt": "p", "label": "1"}\n')
    assert main([*LOCAL, "--data.prompt_dataset", str(rows), "--dry-run"]) == 0
    local = json.loads(capsys.readouterr().out)["local"]
    assert local["task"] is None and local["prompts"] == str(rows)
    # the config itself is unchanged (a checkpoint's config and the eval's run settings compare it)
    cfg = local_config(parse([*LOCAL, "--data.prompt_dataset", str(rows)]))
    assert cfg.task == "countdown-fewshot" and cfg.builtin_task is None
    assert main([*LOCAL, "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["local"]["task"] == "countdown-fewshot"
    # a built-in task's flags with a prompts file would be ignored: refused, naming them
    line = one_line(
        [*LOCAL, "--data.prompt_dataset", str(rows), "--local.task", "countdown", "--dry-run"], capsys
    )
    assert line.startswith("latr-train: error: --local.task given with --data.prompt_dataset")
