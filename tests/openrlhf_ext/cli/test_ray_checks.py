"""Ray-mode inputs refused before Ray starts (openrlhf_ext/cli/ray_checks.py), each as one line naming the
flag and the value: in a run they failed 20-70 s later inside a Ray actor, with a deep traceback, or not at
all (a new run writing into another run's checkpoints; a GPU command on a machine without one waited
forever). Also the exit status of a ray-mode run that trained nothing (nothing_trained_problem)."""

import json
import types

import pytest

import latr_sglang.tasks.reward_func as reward_module
from openrlhf_ext.cli.train_ppo_ray import main, nothing_trained_problem, parse

RAY_BASE = [
    "--actor.model_name_or_path", "some/model",
    "--reward.remote_url", reward_module.__file__,
    "--vllm.num_engines", "1",
    "--rollout.batch_size", "2",
    "--rollout.n_samples_per_prompt", "4",
    "--algo.advantage.estimator", "group_norm",
]  # fmt: skip
CPU = ["--trainer.device", "cpu", "--rollout.backend", "torch"]


def dry_run(argv, capsys):
    code = main([*RAY_BASE, *argv, "--dry-run"])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(argv, capsys) -> str:
    code, _, err = dry_run(argv, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("latr-train: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ('{"question": "q", "answer": "1"}\n', "its rows have no field 'prompt' (--data.input_key prompt)"),
        ('{"prompt": "q"}\n', "its rows have no field 'label' (--data.label_key label)"),
        ("prompt,label\nq,1\n", "not JSON (Expecting value at line 1 column 1)"),
        ("", "the file is empty"),
        ("\n\n  \n", "the file holds only blank lines"),
        ('["q", "1"]\n', "line 1 is a JSON list, not an object of fields"),
        (b"\x80\x81{}".decode("latin-1"), "not UTF-8 text"),
    ],
)
@pytest.mark.parametrize("flag", ["--data.prompt_dataset", "--eval.dataset"])
def test_a_prompts_file_ray_mode_cannot_read_is_named(tmp_path, capsys, content, named, flag):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(content, encoding="latin-1")
    keys = ["--data.input_key", "prompt", "--data.label_key", "label"]
    line = one_line_error([flag, str(rows), *keys], capsys)
    assert f"{flag} {rows}: {named}" in line, line


def test_the_fields_the_file_has_are_listed_and_readable_files_pass(tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('\n{"question": "q", "answer": "1"}\n')
    line = one_line_error(["--data.prompt_dataset", str(rows)], capsys)  # OpenRLHF's default key: input
    assert "no field 'input' (--data.input_key input); the first row's fields: answer, question" in line
    array = tmp_path / "rows.json"
    array.write_text(json.dumps([{"question": "q", "answer": "1"}]))
    for path in (rows, array):
        code, _, err = dry_run(["--data.prompt_dataset", str(path), "--data.input_key", "question"], capsys)
        assert code == 0, err


def test_a_model_folder_that_is_not_one_is_named_and_a_hub_id_is_left_to_openrlhf(tmp_path, capsys):
    for model in (str(tmp_path / "no-model"), "./no-model"):
        line = one_line_error(["--actor.model_name_or_path", model], capsys)
        assert f"--actor.model_name_or_path {model}: model " in line and "not a local Hugging Face" in line
    assert dry_run(["--actor.model_name_or_path", "Qwen/Qwen2.5-3B"], capsys)[0] == 0


def test_a_new_run_may_not_save_into_another_runs_checkpoints(tmp_path, capsys):
    (tmp_path / "ckpt" / "_actor" / "global_step4").mkdir(parents=True)
    ckpt = ["--ckpt.path", str(tmp_path / "ckpt")]
    line = one_line_error([*ckpt, "--ckpt.save_steps", "2"], capsys)
    assert f"--ckpt.path {tmp_path / 'ckpt'} holds another run's checkpoints (global_step4)" in line
    assert "--ckpt.load_enable resumes it" in line
    assert dry_run([*ckpt, "--ckpt.save_steps", "2", "--ckpt.load_enable"], capsys)[0] == 0  # a resume
    assert dry_run(ckpt, capsys)[0] == 0  # a run that saves no checkpoints writes nothing there


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--ds.zero_stage", "5"], "--ds.zero_stage 5: DeepSpeed's ZeRO stages are 0, 1, 2 and 3"),
        ([*CPU, "--ds.zero_stage", "3"], "--ds.zero_stage 3 does not run in --trainer.device cpu mode"),
        (["--train.async_enable"], "--train.async_enable is not supported with --rollout.backend sglang"),
        ([*CPU, "--vllm.tensor_parallel_size", "2"], "--vllm.tensor_parallel_size 2: the torch engine runs"),
        ([*CPU, "--train.colocate_all", "--vllm.sync_backend", "gloo"], "over either --vllm.sync_backend"),
    ],
)
def test_settings_our_engines_or_cpu_mode_cannot_serve_are_refused(argv, named, capsys):
    assert named in one_line_error(argv, capsys)


def test_vllm_engine_flags_the_torch_engine_ignores_are_warned_about(capsys):
    code, out, err = dry_run([*CPU, "--vllm.enforce_eager", "--vllm.gpu_memory_utilization", "0.5"], capsys)
    assert code == 0 and json.loads(out)
    assert err == (
        "latr-train: warning: --vllm.gpu_memory_utilization, --vllm.enforce_eager have no effect with "
        "--rollout.backend torch (vLLM's engine settings; the SGLang backend maps them)\n"
    )
    assert dry_run(["--vllm.enforce_eager"], capsys)[2] == ""  # the SGLang backend: no warning


def test_a_gpu_run_on_a_machine_without_one_stops_at_once(monkeypatch, capsys):
    """Before: Ray's autoscaler printed "No available node types can fulfill resource request {'GPU': 1.0}"
    every 35 s, forever. Now one line, before Ray starts."""
    import ray
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(RAY_BASE) == 2
    err = capsys.readouterr().err
    assert err.startswith("latr-train: error: no CUDA GPU on this machine; ") and err.count("\n") == 1
    assert "--trainer.device cpu --rollout.backend torch" in err
    assert not ray.is_initialized()


def record(start_step=0, steps=0, informative_steps=0):
    return {"start_step": start_step, "steps": steps, "informative_steps": informative_steps}


@pytest.mark.parametrize(
    ("argv", "summary", "named"),
    [
        ([], record(), "no training step ran: the prompts made no batch of --rollout.batch_size 2"),
        (
            ["--algo.dynamic_filtering_enable"],
            record(),
            "no training step ran: dynamic sampling never filled a batch of 2 prompts whose rewards differ",
        ),
        ([], record(steps=3), "3 steps ran, but every sample's advantage was 0"),
        ([], record(start_step=4), "nothing left to train: the run resumed at step 4 with its data used up"),
        ([], record(steps=3, informative_steps=1), None),
        ([], record(start_step=4, steps=1, informative_steps=1), None),
    ],
)
def test_a_ray_run_that_trained_nothing_says_why(argv, summary, named):
    problem = nothing_trained_problem(summary, parse([*RAY_BASE, *argv]))
    if named is None:
        assert problem is None
    else:
        assert problem.startswith(named), problem


def test_informative_samples_counts_the_samples_with_a_nonzero_advantage():
    import torch

    from openrlhf_ext.ray_patches import informative_samples

    tied = types.SimpleNamespace(advantages=torch.zeros(4, 6))
    mixed = types.SimpleNamespace(advantages=torch.tensor([[0.0, 0.5], [0.0, 0.0], [-1.0, -1.0]]))
    assert informative_samples([tied]) == 0
    assert informative_samples([tied, mixed, types.SimpleNamespace(advantages=None)]) == 2
