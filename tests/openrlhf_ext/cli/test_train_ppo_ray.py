"""`latr-train` command line: OpenRLHF's flags unchanged, ours added, conflicts named, --dry-run."""

import json
import re
from pathlib import Path

import pytest

import latr_sglang.tasks.reward_func as reward_module
from latr_sglang.config import LATRConfig
from openrlhf_ext.cli.train_ppo_ray import build_parser, main, parse
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
    (["--sglang.server_urls", "http://a:1"], ["lists 1 URLs for 2 engines"]),
    (["--train.partial_rollout_enable"], ["OpenRLHF rejects", "async_enable"]),
]


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
    (["--local.countdown_numbers", "3,2"], ["countdown_numbers=(3, 2)"]),
    (["--actor.adam.lr", "-1"], ["learning_rate=-1.0"]),
    (["--local.device", "tpu"], ["device='tpu'"]),
    (["--eval.dataset", "nope"], ["eval_dataset='nope'"]),
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
