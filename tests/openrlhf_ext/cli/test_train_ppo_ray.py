"""`latr-train` command line: OpenRLHF's flags unchanged, ours added, conflicts named, --dry-run."""

import json
import re
from pathlib import Path

import pytest

import latr_sglang.tasks.reward_func as reward_module
from latr_sglang.config import LATRConfig
from openrlhf_ext.cli.train_ppo_ray import build_parser, local_config, main, parse
from openrlhf_ext.openrlhf_args import MODULE

REWARD = reward_module.__file__
RAY_BASE = [
    "--actor.model_name_or_path", "some/model",
    "--reward.remote_url", REWARD,
    "--vllm.num_engines", "2",
    "--rollout.batch_size", "8",
    "--rollout.n_samples_per_prompt", "8",
    "--algo.advantage.estimator", "group_norm",
]  # fmt: skip


def openrlhf_source_flags() -> set[str]:
    """Every literal "--flag" in OpenRLHF's train_ppo_ray.py, read independently of our AST reuse."""
    import importlib.util

    text = Path(importlib.util.find_spec(MODULE).origin).read_text()
    return set(re.findall(r'"(--[a-z_][a-z0-9_.]*)"', text))


def test_every_openrlhf_flag_is_accepted_unchanged():
    parser = build_parser()
    ours = set(parser._option_string_actions)
    flags = openrlhf_source_flags()
    assert len(flags) > 100
    assert flags <= ours, sorted(flags - ours)
    # the f-string optimizer flags built in a loop come along too
    assert {"--actor.adam.lr", "--critic.adam.lr"} <= ours
    # and OpenRLHF's defaults are its own
    assert parser.get_default("rollout.batch_size") == 1024
    assert parser.get_default("algo.kl.init_coef") == 0.01


def run_main(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_dry_run_prints_the_resolved_ray_configuration(capsys):
    argv = [*RAY_BASE, "--latr.preset", "math", "--latr.tau_abs", "0.3", "--dry-run"]
    code, out, _ = run_main(argv, capsys)
    assert code == 0
    resolved = json.loads(out)
    assert resolved["rollout"] == {"backend": "sglang", "sampler": "latr"}
    expected = LATRConfig.preset("math", tau_abs=0.3).to_dict()
    assert resolved["latr"] == json.loads(json.dumps(expected))
    openrlhf = resolved["openrlhf"]
    assert openrlhf["rollout"]["batch_size"] == 8 and openrlhf["actor"]["eps_clip_low_high"] == [0.2, 0.2]
    # OpenRLHF's own derived settings ran (vllm_generate_batch_size defaults to the rollout batch)
    assert openrlhf["rollout"]["vllm_generate_batch_size"] == 8


def test_vllm_backend_means_openrlhfs_own_stochastic_engines():
    inv = parse([*RAY_BASE, "--rollout.backend", "vllm"])
    assert inv.rollout.sampler == "stochastic" and inv.latr is None


def test_parsed_ray_args_carry_the_extension_to_workers():
    inv = parse([*RAY_BASE, "--rollout.backend", "torch", "--algo.dynamic_filtering_enable"])
    ext = inv.openrlhf.latr_ext
    assert ext["rollout"]["backend"] == "torch" and ext["dapo"]["dynamic_filtering_rule"] == "std"
    assert ext["latr"]["tau_abs"] == LATRConfig.preset("countdown").tau_abs


def test_local_mode_maps_openrlhf_flags(capsys):
    argv = [
        "--trainer.mode", "local", "--trainer.max_steps", "3",
        "--rollout.batch_size", "2", "--rollout.n_samples_per_prompt", "4", "--rollout.max_new_tokens", "24",
        "--actor.adam.lr", "2e-5", "--actor.eps_clip_low_high", "0.2", "0.28", "--algo.kl.init_coef", "0",
        "--algo.dynamic_filtering_enable", "--dapo.dynamic_filtering_metric", "reward",
        "--dapo.overlong_filtering", "true", "--rollout.sampler", "stochastic",
        "--local.response_prefix", "<answer>", "--local.countdown_numbers", "2,3",
        "--local.eval_prompts", "4",
        "--ckpt.output_dir", "outputs/x", "--dry-run",
    ]  # fmt: skip
    code, out, err = run_main(argv, capsys)
    assert code == 0, err
    local = json.loads(out)["local"]
    assert local["steps"] == 3 and local["prompts_per_step"] == 2 and local["n_samples_per_prompt"] == 4
    assert local["learning_rate"] == 2e-5 and (local["eps_clip_low"], local["eps_clip_high"]) == (0.2, 0.28)
    assert local["algo"] == "dapo" and local["sampler"] == "stochastic" and local["kl_coef"] == 0
    assert local["dynamic_filtering_metric"] == "reward" and local["overlong_filtering"] is True
    assert local["response_prefix"] == "<answer>" and local["countdown_numbers"] == [2, 3]
    assert local["output_dir"] == "outputs/x" and local["eval_prompts"] == 4


@pytest.mark.parametrize(
    "flags, filters",
    [
        (["--algo.dynamic_filtering_enable"], True),
        ([], False),
        (["--dapo.overlong_filtering", "false"], False),
        (["--algo.dynamic_filtering_enable", "--dapo.overlong_filtering", "false"], False),
    ],
)
def test_local_mode_filters_overlong_samples_as_the_local_trainer_does(flags, filters, capsys):
    """Unless --dapo.overlong_filtering is given, DAPO (dynamic filtering) masks truncated samples and GRPO
    does not: the local trainer's own default, not ray mode's flag default (off) written over it; --dry-run
    prints the value the run uses."""
    assert local_config(parse(["--trainer.mode", "local", *flags])).filter_overlong is filters
    code, out, err = run_main(["--trainer.mode", "local", *flags, "--dry-run"], capsys)
    assert code == 0, err
    printed = json.loads(out)
    assert printed["dapo"]["overlong_filtering"] is filters
    assert printed["local"]["overlong_filtering"] is filters


def test_local_mode_wraps_a_prompt_files_prompts_in_the_chat_template_only_when_asked(tmp_path):
    """As in ray mode (OpenRLHF's store_true flag): a file's prompts are raw unless --data.apply_chat_template
    is given; the built-in tasks keep their own (the paper's countdown prompt is a chat turn)."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": "p", "label": "1"}\n')
    local = ["--trainer.mode", "local"]
    assert local_config(parse([*local, "--data.prompt_dataset", str(rows)])).chat is False
    wrapped = local_config(parse([*local, "--data.prompt_dataset", str(rows), "--data.apply_chat_template"]))
    assert wrapped.chat is True
    assert local_config(parse([*local, "--local.task", "countdown"])).chat is True
    assert local_config(parse(local)).chat is False  # countdown-fewshot: a raw few-shot prompt


CONFLICTS = [
    (["--rollout.backend", "vllm", "--rollout.sampler", "latr"], ["--rollout.sampler latr"]),
    (["--rollout.backend", "vllm", "--latr.tau_abs", "0.1"], ["--latr.tau_abs", "--rollout.backend vllm"]),
    (["--rollout.backend", "torch", "--sglang.mem_fraction_static", "0.5"], ["--sglang.mem_fraction_static"]),
    (["--rollout.sampler", "stochastic", "--latr.chunk_size", "8"], ["--latr.chunk_size"]),
    (["--dapo.dynamic_filtering_rule", "std"], ["--dapo.dynamic_filtering_rule needs"]),
    (
        ["--algo.dynamic_filtering_enable", "--algo.dynamic_filtering_range", "0.1", "0.9"],
        ["--algo.dynamic_filtering_range"],
    ),
    (["--trainer.max_steps", "5"], ["--trainer.max_steps"]),
    (["--local.eval_prompts", "5"], ["--local.eval_prompts"]),
    (["--sglang.server_urls", "http://a:1"], ["lists 1 URL for 2 engines: one per engine"]),
    (["--train.partial_rollout_enable"], ["OpenRLHF rejects", "async_enable"]),
    # weight-sync paths only OpenRLHF's vLLM engines have: refused before anything starts
    (["--vllm.sync_with_ray"], ["--vllm.sync_with_ray is not supported with --rollout.backend sglang"]),
    (["--train.colocate_all"], ["--train.colocate_all with --vllm.sync_backend nccl", "CUDA-IPC"]),
]


def test_colocation_over_gloo_is_not_refused(capsys):
    # colocated, the actor's GPUs are the engines' (OpenRLHF asserts actor ranks = engines x tp)
    gpus = ["--actor.num_gpus_per_node", "2", "--ref.num_gpus_per_node", "2"]
    code, _, err = run_main(
        [*RAY_BASE, *gpus, "--train.colocate_all", "--vllm.sync_backend", "gloo", "--dry-run"], capsys
    )
    assert code == 0, err


@pytest.mark.parametrize(("extra", "named"), CONFLICTS)
def test_conflicting_flags_fail_early_naming_them(extra, named, capsys):
    code, _, err = run_main([*RAY_BASE, *extra, "--dry-run"], capsys)
    assert code == 2
    assert err.startswith("latr-train: error:")
    for piece in named:
        assert piece in err


LOCAL_CONFLICTS = [
    (["--vllm.num_engines", "2"], ["not supported with --trainer.mode local: --vllm.num_engines"]),
    (["--rollout.backend", "sglang"], ["--rollout.backend sglang"]),
    (["--algo.advantage.estimator", "rloo"], ["rloo"]),
    (["--data.prompt_dataset", "some/hub-dataset"], ["some/hub-dataset"]),
    (["--local.countdown_numbers", "3,2"], ["--local.countdown_numbers 3,2: needs 1 <= min <= max"]),
    (["--actor.adam.lr", "-1"], ["--actor.adam.lr -1.0"]),
    (["--trainer.reward_timeout_s", "5"], ["--trainer.reward_timeout_s", "built-in reward"]),
    (["--local.device", "tpu"], ["--local.device tpu: "]),
    (["--eval.dataset", "nope"], ["--eval.dataset nope: neither a bundled set"]),
]


@pytest.mark.parametrize(("extra", "named"), LOCAL_CONFLICTS)
def test_local_mode_rejects_what_it_would_ignore(extra, named, capsys):
    code, _, err = run_main(["--trainer.mode", "local", *extra, "--dry-run"], capsys)
    assert code == 2, err
    for piece in named:
        assert piece in err


def test_ray_mode_requires_model_reward_and_engines(capsys):
    code, _, err = run_main(["--dry-run"], capsys)
    assert code == 2
    for piece in ("--actor.model_name_or_path", "--reward.remote_url", "--vllm.num_engines"):
        assert piece in err


@pytest.mark.parametrize("argv", [["--bogus", "1"], ["--rollout.back", "torch"], ["--latr.tau_abs", "x"]])
def test_unknown_or_malformed_flags_exit_2_naming_them(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        parse([*RAY_BASE, *argv])
    assert exc.value.code == 2
    assert argv[0] in capsys.readouterr().err


DEVICE_CONFLICTS = [
    (
        ["--trainer.device", "cpu"],
        ["--trainer.device cpu", "--rollout.backend sglang", "add --rollout.backend"],
    ),
    (
        ["--trainer.device", "cpu", "--rollout.backend", "vllm"],
        ["--trainer.device cpu", "--rollout.backend vllm", "--sglang.server_urls"],
    ),
    (["--trainer.device", "tpu"], ["--trainer.device tpu"]),
    (
        ["--rollout.backend", "torch", "--trainer.device", "cpu", "--train.colocate_all"],
        ["--train.colocate_all"],
    ),
    (["--latr.exit_scope", "batch"], ["--latr.exit_scope batch", "one prompt at a time"]),
    (["--local.task", "countdown"], ["--local.task needs --trainer.mode local"]),
    (
        ["--local.task", "countdown", "--local.eval_prompts", "4"],
        ["--local.eval_prompts, --local.task need --trainer.mode local"],
    ),
]


@pytest.mark.parametrize(("extra", "named"), DEVICE_CONFLICTS)
def test_ray_mode_refuses_what_cannot_take_effect(extra, named, capsys):
    code, _, err = run_main([*RAY_BASE, *extra, "--dry-run"], capsys)
    assert code == 2, err
    for piece in named:
        assert piece in err


def test_cpu_mode_takes_sglang_servers_the_user_started(capsys):
    """On a CPU the engines may sit behind SGLang's HTTP API (`latr-sglang serve`): only launching SGLang's
    runtime needs a GPU."""
    argv = [*RAY_BASE, "--trainer.device", "cpu", "--sglang.server_urls"]
    argv.append("http://127.0.0.1:30000,http://127.0.0.1:30001")  # RAY_BASE's 2 engines
    code, _, err = run_main([*argv, "--dry-run"], capsys)
    assert code == 0, err


def test_trainer_device_is_one_flag_for_both_modes(capsys):
    local = ["--trainer.mode", "local", "--dry-run"]
    assert parse(local).local_overrides.get("device") is None
    for flag in ("--trainer.device", "--local.device"):  # --local.device: the old spelling, an alias
        code, out, err = run_main([*local, flag, "cpu"], capsys)
        assert code == 0, err
        assert json.loads(out)["local"]["device"] == "cpu"
    code, _, err = run_main([*local, "--trainer.device", "cpu", "--local.device", "cuda"], capsys)
    assert code == 2 and "disagree" in err
    inv = parse([*RAY_BASE, "--rollout.backend", "torch", "--trainer.device", "cpu"])
    assert inv.openrlhf.latr_ext["trainer"]["device"] == "cpu"


def test_the_reward_file_as_openrlhfs_validation_leaves_it_loads_in_the_engine():
    from openrlhf_ext.engine_actor import load_reward_func

    inv = parse([*RAY_BASE, "--rollout.backend", "torch"])
    url = inv.openrlhf.reward.remote_url
    assert isinstance(url, list) and url == [REWARD]  # what create_vllm_engines receives
    assert callable(load_reward_func(url)) and callable(load_reward_func(REWARD))
    with pytest.raises(ValueError, match="one reward file"):
        load_reward_func([REWARD, REWARD])
    with pytest.raises(ValueError, match="http://rm:5000"):
        load_reward_func(["http://rm:5000"])


def test_cpu_mode_asks_ray_for_the_logical_gpus_openrlhfs_placement_groups_need():
    from openrlhf_ext.cpu_mode import ray_init_resources

    flags = ["--rollout.backend", "torch", "--trainer.device", "cpu", "--actor.num_gpus_per_node", "2"]
    colocated = parse([*RAY_BASE, *flags, "--ref.num_gpus_per_node", "2", "--train.colocate_actor_ref"])
    apart = parse([*RAY_BASE, *flags, "--ref.num_gpus_per_node", "1"])
    assert ray_init_resources(colocated.openrlhf, 2)["num_gpus"] == 2  # actor and ref share bundles
    assert ray_init_resources(apart.openrlhf, 2)["num_gpus"] == 3
    assert ray_init_resources(apart.openrlhf, 2)["num_cpus"] >= 3 + 2


def test_weight_sync_backend_is_one_rule_for_both_sides():
    from openrlhf_ext.vllm_shim import sync_backend

    # --vllm.sync_backend nccl (OpenRLHF's default) on CPU tensors, and gloo anywhere: gloo on both sides
    assert sync_backend("nccl", "cpu") == sync_backend("nccl", None) == "gloo"
    assert sync_backend("gloo", "cuda") == sync_backend("gloo", 0) == "gloo"
    if not __import__("torch").cuda.is_available():
        assert sync_backend("nccl", 0) == "gloo"  # no CUDA here: a device index cannot mean a GPU
    with pytest.raises(ValueError, match="mpi"):
        sync_backend("mpi", "cpu")


@pytest.mark.parametrize("algo", ["grpo", "dapo"])
def test_training_scripts_make_one_optimizer_update_per_rollout(algo, tmp_path, tiny_model_dir):
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[3]
    env = {**os.environ, "LATR_TRAIN": str(Path(sys.executable).parent / "latr-train")}
    row = json.dumps(
        {"prompt": "Using the numbers [1, 2], make 3.", "label": '{"numbers": [1, 2], "target": 3}'}
    )
    for name in ("train.jsonl", "test.jsonl"):
        (tmp_path / "countdown").mkdir(exist_ok=True)
        (tmp_path / "countdown" / name).write_text(row + "\n")
    env.update(ALGO=algo, SAMPLER="latr", DATASET="countdown", DRY_RUN="1")
    env.update(DATA_DIR=str(tmp_path), MODEL=str(tiny_model_dir), OUTPUT_DIR=str(tmp_path / "runs"))
    proc = subprocess.run(
        ["bash", str(repo / "scripts/_train.sh")], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    o = json.loads(proc.stdout)["openrlhf"]
    samples = o["rollout"]["batch_size"] * o["rollout"]["n_samples_per_prompt"]  # prompts x responses
    updates = (
        samples // o["train"]["batch_size"] * o["train"]["max_epochs"]
    )  # train.batch_size counts samples
    assert (o["rollout"]["batch_size"], o["rollout"]["n_samples_per_prompt"]) == (256, 8)
    assert updates == 1


def test_latr_train_without_openrlhf_is_one_line(tmp_path):
    """Installed without the [train] extra, latr-train names what to install instead of a traceback."""
    import subprocess
    import sys

    script = tmp_path / "no_openrlhf.py"
    script.write_text(
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'openrlhf' or name.startswith('openrlhf.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from openrlhf_ext.cli.train_ppo_ray import main\n"
        "sys.exit(main(['--trainer.mode', 'local', '--dry-run']))\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "needs OpenRLHF" in proc.stderr and "latr-sglang[train]" in proc.stderr


# ---- inputs checked before Ray starts (they failed 40-45 s later, inside Ray actors) ----------------------
def one_line_error(argv, capsys) -> str:
    code, _, err = run_main([*argv, "--dry-run"], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("latr-train: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("flag", ["--data.prompt_dataset", "--eval.dataset"])
@pytest.mark.parametrize("name", ["/nonexistent.jsonl", "data/missing.parquet", "./nope", "a/b/c", "x.JSON"])
def test_a_missing_local_dataset_is_named_before_ray_starts(flag, name, capsys):
    line = one_line_error([*RAY_BASE, flag, name], capsys)
    assert f"{flag} {name}: no such file or directory" in line and "NAME or ORG/NAME" in line


def test_hub_dataset_names_and_existing_paths_are_accepted(tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": "p", "label": "1"}\n')
    (tmp_path / "saved").mkdir()  # a datasets.save_to_disk folder
    for flag, value in [
        ("--data.prompt_dataset", "openai/gsm8k"),  # hub names: fetched by `datasets` when the run starts
        ("--data.prompt_dataset", "gsm8k"),
        ("--data.prompt_dataset", f"{rows}"),
        ("--data.prompt_dataset", f"{rows}, {tmp_path / 'saved'}@sub,org/name"),
        ("--eval.dataset", str(rows)),
    ]:
        code, _, err = run_main([*RAY_BASE, flag, value, "--data.input_key", "prompt", "--dry-run"], capsys)
        assert code == 0, (value, err)


def test_dataset_lists_and_probabilities_are_checked(tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": "p", "label": "1"}\n')
    line = one_line_error([*RAY_BASE, "--data.prompt_dataset", f"{rows},"], capsys)
    assert "an empty dataset name" in line
    probs = ["--data.prompt_dataset", f"{rows},{rows}", "--data.prompt_probs", "0.5"]
    assert "--data.prompt_probs 0.5: expected 2 comma-separated numbers" in one_line_error(
        [*RAY_BASE, *probs], capsys
    )


REWARD_FILES = [
    (None, "no such file"),
    ("def reward_func(queries, prompts, labels)\n    return {}\n", "SyntaxError at line 1: expected ':'"),
    ("def score(queries, prompts, labels):\n    return {}\n", "defines no top-level reward_func"),
    ("def outer():\n    def reward_func(q, p, l):\n        pass\n", "defines no top-level reward_func"),
    ("async def reward_func(q, p, l):\n    return {}\n", "reward_func is an async function"),
    (b"x = 1\x00\n", "not Python source"),
    (
        "import os\nimport nonexistent_module_xyz.sub\nfrom also_missing_xyz import f\n"
        "def reward_func(q, p, l):\n    return {}\n",
        "imports nonexistent_module_xyz, also_missing_xyz, which this Python",
    ),
]


@pytest.mark.parametrize(("text", "named"), REWARD_FILES)
@pytest.mark.parametrize("backend", ["torch", "vllm"])
def test_a_broken_reward_file_is_named_before_ray_starts_without_running_it(
    tmp_path, backend, text, named, capsys
):
    path = tmp_path / "reward.py"
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    # the file is parsed, never run: a module-level side effect must not happen in the CLI
    marker = tmp_path / "ran"
    if text is not None and not isinstance(text, bytes) and "SyntaxError" not in named:
        path.write_text(f"open({str(marker)!r}, 'w').close()\n" + text)
    argv = [*RAY_BASE, "--reward.remote_url", str(path), "--rollout.backend", backend]
    line = one_line_error(argv, capsys)
    assert f"--reward.remote_url {path}: {named}" in line
    assert not marker.exists()


@pytest.mark.parametrize(
    "source",
    [
        "def reward_func(queries, prompts, labels):\n    return {}\n",
        "from latr_sglang.tasks.reward_func import reward_func\n",
        "import math\ntry:\n    from x import reward_func\nexcept ImportError:\n    reward_func = None\n",
        "class reward_func:\n    def __init__(self, q, p, l):\n        pass\n",
    ],
)
def test_reward_files_that_bind_reward_func_at_top_level_pass(tmp_path, source, capsys):
    path = tmp_path / "r.py"
    path.write_text(source)
    code, _, err = run_main([*RAY_BASE, "--reward.remote_url", str(path), "--dry-run"], capsys)
    assert code == 0, err


def test_reward_url_messages_match_the_engines_loader(tmp_path, capsys):
    """One rule in both places: what latr-train refuses up front is what the engine actor would raise."""
    from openrlhf_ext.engine_actor import load_reward_func

    missing = str(tmp_path / "nope.py")
    for url in ("http://rm:5000", missing, str(tmp_path)):
        line = one_line_error([*RAY_BASE, "--reward.remote_url", url], capsys)
        with pytest.raises(ValueError) as exc:
            load_reward_func([url])
        assert line == f"latr-train: error: {exc.value}"
    assert "not an HTTP reward server" in one_line_error(
        [*RAY_BASE, "--reward.remote_url", "http://rm:5000"], capsys
    )
    # OpenRLHF's own engines take an HTTP reward server; a .py file they load must exist
    code, _, err = run_main(
        [*RAY_BASE, "--rollout.backend", "vllm", "--reward.remote_url", "http://rm:1", "--dry-run"], capsys
    )
    assert code == 0, err
    line = one_line_error([*RAY_BASE, "--rollout.backend", "vllm", "--reward.remote_url", missing], capsys)
    assert f"--reward.remote_url {missing}: no such file" in line
    line = one_line_error([*RAY_BASE, "--rollout.backend", "vllm", "--trainer.reward_timeout_s", "9"], capsys)
    assert "--trainer.reward_timeout_s" in line and "OpenRLHF's own engines" in line


def test_the_reward_time_bound_reaches_the_engines():
    inv = parse([*RAY_BASE, "--rollout.backend", "torch", "--trainer.reward_timeout_s", "12.5"])
    assert inv.ext()["trainer"]["reward_timeout_s"] == 12.5
    assert parse([*RAY_BASE, "--rollout.backend", "torch"]).ext()["trainer"]["reward_timeout_s"] == 300.0


def test_one_gpu_is_refused_by_the_training_scripts(tmp_path, tiny_model_dir):
    """NUM_GPUS=1 gave the trainer 0 GPUs (--actor.num_gpus_per_node 0), which OpenRLHF cannot start."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[3]
    (tmp_path / "countdown").mkdir()
    for name in ("train.jsonl", "test.jsonl"):
        (tmp_path / "countdown" / name).write_text('{"prompt": "p", "label": "1"}\n')
    env = {**os.environ, "LATR_TRAIN": str(Path(sys.executable).parent / "latr-train")}
    env.update(ALGO="grpo", SAMPLER="latr", DATASET="countdown", DRY_RUN="1", DATA_DIR=str(tmp_path))
    env.update(MODEL=str(tiny_model_dir), OUTPUT_DIR=str(tmp_path / "runs"))
    for gpus, named in [
        ("1", "NUM_GPUS=1: "),
        ("0", "NUM_GPUS=0: expected a positive integer"),
        ("two", "NUM_GPUS=two"),
    ]:
        proc = subprocess.run(
            ["bash", str(repo / "scripts/_train.sh")],
            env={**env, "NUM_GPUS": gpus}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 2 and named in proc.stderr and proc.stdout == "", proc.stderr
    proc = subprocess.run(
        ["bash", str(repo / "scripts/_train.sh")],
        env={**env, "NUM_GPUS": "2"}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    o = json.loads(proc.stdout)["openrlhf"]
    assert (o["actor"]["num_gpus_per_node"], o["vllm"]["num_engines"]) == (1, 1)


def test_sglang_num_engines_alone_is_what_openrlhf_creates_engines_by():
    """OpenRLHF's train() creates rollout engines only when --vllm.num_engines > 0."""
    base = list(RAY_BASE)
    i = base.index("--vllm.num_engines")
    del base[i : i + 2]
    inv = parse([*base, "--sglang.num_engines", "2"])
    assert inv.openrlhf.vllm.num_engines == 2
    assert parse([*RAY_BASE, "--sglang.num_engines", "2"]).openrlhf.vllm.num_engines == 2
    with pytest.raises(Exception, match=r"--sglang\.num_engines 3 and --vllm\.num_engines 2 disagree"):
        parse([*RAY_BASE, "--sglang.num_engines", "3"])
