"""latr-train refuses numbers a run cannot use, at start-up, with one line naming the flag and the value;
a misspelled flag gets the closest known one."""

import json

import pytest

import latr_sglang.tasks.reward_func as reward_module
from openrlhf_ext.cli.range_checks import model_context_length, suggest_flags
from openrlhf_ext.cli.train_ppo_ray import main

RAY = ["--actor.model_name_or_path", "m", "--reward.remote_url", reward_module.__file__]
RAY += ["--vllm.num_engines", "1"]
RAY += ["--rollout.backend", "torch", "--dry-run"]
LOCAL = ["--trainer.mode", "local", "--dry-run"]


def run(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    ("base", "extra", "named"),
    [
        # gradient clip: NaN (every weight NaN, exit 0), 0, negative, inf; both modes
        (RAY, ["--actor.max_norm", "nan"], "--actor.max_norm nan"),
        (RAY, ["--actor.max_norm", "0"], "--actor.max_norm 0.0"),
        (RAY, ["--actor.max_norm", "-1"], "--actor.max_norm -1.0"),
        (RAY, ["--critic.max_norm", "inf"], "--critic.max_norm inf"),
        (LOCAL, ["--local.grad_clip", "nan"], "--local.grad_clip nan"),
        (LOCAL, ["--local.grad_clip", "0"], "--local.grad_clip 0.0"),
        # KL coefficient and target
        (RAY, ["--algo.kl.init_coef", "-0.1"], "--algo.kl.init_coef -0.1"),
        (RAY, ["--algo.kl.init_coef", "nan"], "--algo.kl.init_coef nan"),
        (LOCAL, ["--algo.kl.init_coef", "inf"], "--algo.kl.init_coef inf"),
        (RAY, ["--algo.kl.target", "0"], "--algo.kl.target 0.0"),
        # clip epsilons
        (RAY, ["--actor.eps_clip", "0"], "--actor.eps_clip 0.0"),
        (RAY, ["--actor.eps_clip", "1.5"], "--actor.eps_clip 1.5"),
        (LOCAL, ["--actor.eps_clip", "nan"], "--actor.eps_clip nan"),
        (RAY, ["--actor.eps_clip_low_high", "0.2", "-0.1"], "--actor.eps_clip_low_high"),
        (LOCAL, ["--actor.eps_clip_low_high", "1.2", "0.28"], "--actor.eps_clip_low_high"),
        (RAY, ["--actor.dual_clip", "0.5"], "--actor.dual_clip 0.5"),
        # save and eval intervals: 0 divides by zero, -2 means nothing
        (RAY, ["--ckpt.save_steps", "0"], "--ckpt.save_steps 0"),
        (LOCAL, ["--ckpt.save_steps", "-2"], "--ckpt.save_steps -2"),
        (RAY, ["--eval.steps", "0"], "--eval.steps 0"),
        # batch sizes and counts of 0 (a hang)
        (RAY, ["--rollout.batch_size", "0"], "--rollout.batch_size 0"),
        (RAY, ["--train.batch_size", "0"], "--train.batch_size 0"),
        (RAY, ["--train.micro_batch_size", "0"], "--train.micro_batch_size 0"),
        (RAY, ["--rollout.micro_batch_size", "0"], "--rollout.micro_batch_size 0"),
        (RAY, ["--rollout.n_samples_per_prompt", "0"], "--rollout.n_samples_per_prompt 0"),
        (LOCAL, ["--rollout.batch_size", "0"], "--rollout.batch_size 0"),
        (LOCAL, ["--train.micro_batch_size", "-1"], "--train.micro_batch_size -1"),
        (RAY, ["--train.max_epochs", "0"], "--train.max_epochs 0"),
        # learning rate, temperature
        (RAY, ["--actor.adam.lr", "nan"], "--actor.adam.lr nan"),
        (RAY, ["--rollout.temperature", "-1"], "--rollout.temperature -1.0"),
        # max new tokens vs the context
        (RAY, ["--rollout.max_new_tokens", "0"], "--rollout.max_new_tokens 0"),
        (RAY, ["--rollout.max_new_tokens", "2048"], "--data.max_len 2048"),
        (RAY, ["--rollout.max_new_tokens", "100", "--data.max_len", "64"], "--data.max_len 64"),
        # learning rates above 1 (1e30 destroyed the weights and the run exited 0) or not positive
        (RAY, ["--actor.adam.lr", "1e30"], "--actor.adam.lr 1e+30: must be a number in (0, 1]"),
        (RAY, ["--actor.adam.lr", "0"], "--actor.adam.lr 0.0"),
        (RAY, ["--critic.adam.lr", "2"], "--critic.adam.lr 2.0"),
        (RAY, ["--actor.muon.lr", "inf"], "--actor.muon.lr inf"),
        (LOCAL, ["--actor.adam.lr", "1e30"], "--actor.adam.lr 1e+30: must be a number in (0, 1]"),
        (LOCAL, ["--actor.adam.lr", "-1"], "--actor.adam.lr -1.0"),
        # seeds and other integers no C long holds ("Overflow when unpacking long long" before)
        (RAY, ["--train.seed", str(2**70)], f"--train.seed {2**70}: must be an integer in [0, 4294967295]"),
        (RAY, ["--train.seed", "-1"], "--train.seed -1: must be an integer in [0, 4294967295]"),
        (LOCAL, ["--train.seed", str(2**70)], f"--train.seed {2**70}: must be an integer in"),
        (RAY, ["--rollout.batch_size", str(2**70)], f"--rollout.batch_size {2**70}: out of range"),
        (RAY, ["--data.max_len", str(-(2**70))], f"--data.max_len {-(2**70)}"),
        (LOCAL, ["--rollout.max_new_tokens", str(2**64)], f"--rollout.max_new_tokens {2**64}: out of range"),
        (LOCAL, ["--local.max_number", str(2**64)], f"--local.max_number {2**64}: out of range"),
        (RAY, ["--sglang.num_engines", str(2**64)], f"--sglang.num_engines {2**64}: out of range"),
        # the reward file's time bound
        (RAY, ["--trainer.reward_timeout_s", "0"], "--trainer.reward_timeout_s 0.0"),
        (RAY, ["--trainer.reward_timeout_s", "nan"], "--trainer.reward_timeout_s nan"),
        (RAY, ["--trainer.reward_timeout_s", "inf"], "--trainer.reward_timeout_s inf"),
        # LATR asks the engine for m top log-probs per position
        (RAY, ["--latr.max_branch_per_token", "101"], "--latr.max_branch_per_token 101"),
        (LOCAL, ["--latr.max_branch_per_token", "1000"], "--latr.max_branch_per_token 1000"),
    ],
)
def test_out_of_range_numbers_are_one_line_errors_naming_the_flag(base, extra, named, capsys):
    code, err = run([*base, *extra], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("latr-train: error: ") and named in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("base", "extra"),
    [
        (RAY, ["--actor.max_norm", "0.5", "--algo.kl.init_coef", "0", "--ckpt.save_steps", "-1"]),
        (RAY, ["--actor.eps_clip_low_high", "0.2", "0.28", "--rollout.max_new_tokens", "1024"]),
        (RAY, ["--latr.max_branch_per_token", "100", "--eval.steps", "5", "--ckpt.save_steps", "1"]),
        (LOCAL, ["--local.grad_clip", "2.0", "--algo.kl.init_coef", "0", "--ckpt.save_steps", "-1"]),
        (LOCAL, ["--actor.eps_clip_low_high", "0.2", "0.28", "--rollout.temperature", "0.7"]),
        (RAY, ["--actor.adam.lr", "1", "--train.seed", str(2**32 - 1), "--trainer.reward_timeout_s", "1"]),
        (LOCAL, ["--actor.adam.lr", "1e-3", "--train.seed", "-1"]),  # torch takes a negative seed
        (LOCAL, ["--train.seed", str(2**63 - 1)]),
    ],
)
def test_sane_numbers_pass(base, extra, capsys):
    code, err = run([*base, *extra], capsys)
    assert code == 0, err


def test_max_new_tokens_must_fit_a_local_models_context(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 256}))
    assert model_context_length(str(tmp_path)) == 256
    argv = [*LOCAL, "--actor.model_name_or_path", str(tmp_path), "--rollout.max_new_tokens", "256"]
    code, err = run(argv, capsys)
    assert code == 2 and "context of 256 tokens" in err, err
    assert model_context_length("smollm2") is None and model_context_length(str(tmp_path / "nope")) is None


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["--actor.max_nrom", "1"], "--actor.max_nrom: did you mean --actor.max_norm?"),
        (["--rollout.n-samples-per-prompt", "2"], "did you mean --rollout.n_samples_per_prompt?"),
        (
            ["--max_norm", "1"],
            "did you mean --actor.max_norm or --critic.max_norm?",
        ),  # OpenRLHF's old flat form
        (["--latr.tau_ab=1"], "--latr.tau_ab: did you mean --latr.tau_abs"),
        (["--trainer.mdoe", "local"], "did you mean --trainer.mode"),
    ],
)
def test_a_misspelled_flag_suggests_the_closest(argv, hint, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*RAY, *argv])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert len(err.strip().splitlines()) == 1 and hint in err and argv[0].split("=")[0] in err, err


def test_no_suggestion_for_a_flag_like_nothing_known():
    assert suggest_flags("--zzzqqq", ["--actor.max_norm", "--train.seed"]) == []


@pytest.mark.parametrize(
    ("name", "text", "named"),
    [
        (None, None, "no such file"),
        ("dir", None, "is a directory"),
        (
            "la.yaml",
            "lookahead_steps: 20\n",
            "LATRConfig.lookahead_steps=20: must be a list of positive integers",
        ),
        ("p.yaml", "preset: nope\n", "unknown LATR preset 'nope'"),
        ("bad.yaml", "tau_abs: [unclosed\n", "not valid YAML at line 2"),
        ("bad.json", "{nope", "not valid JSON"),
    ],
)
def test_a_bad_latr_config_file_is_one_line_naming_the_file(tmp_path, capsys, name, text, named):
    path = tmp_path / (name or "missing.yaml")
    if name == "dir":
        path.mkdir()
    elif text is not None:
        path.write_text(text)
    code, err = run([*LOCAL, "--latr.config", str(path)], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"latr-train: error: --latr.config {path}: ") and named in err, err


# ---- training ranks and batch sizes (DeepSpeed's and OpenRLHF's asserts, which fire after Ray starts) ----
RANKS = (
    "--actor.num_gpus_per_node 1 --ref.num_gpus_per_node 1 --train.colocate_actor_ref --rollout.batch_size 2"
)
RANKS += (
    " --rollout.n_samples_per_prompt 2 --rollout.micro_batch_size 4 --algo.advantage.estimator group_norm"
)
GPUS4 = "--actor.num_gpus_per_node 4 --ref.num_gpus_per_node 4"
RING2 = "--ds.ring_attn_size 2 --ds.packing_samples"


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        # the audit's case: micro batch 4 on one rank, batch 3 -> DeepSpeed's "Gradient accumulation steps: 0"
        (
            "--train.batch_size 3 --train.micro_batch_size 4",
            "--train.batch_size 3 must be a positive multiple of --train.micro_batch_size 4 x 1 "
            "data-parallel actor ranks (--actor.num_nodes 1 x --actor.num_gpus_per_node 1) = 4",
        ),
        # 4 actor ranks x micro 2 = 8: 12 is not a multiple (DeepSpeed: 12 != 2 * 1 * 4)
        (
            f"--train.batch_size 12 --train.micro_batch_size 2 {GPUS4}",
            "--train.batch_size 12 must be a positive multiple of --train.micro_batch_size 2 x 4 data-par",
        ),
        # ring attention: 4 ranks in groups of 2 are 2 data-parallel ranks
        (
            f"--train.batch_size 6 --train.micro_batch_size 2 {GPUS4} {RING2}",
            "x 2 data-parallel actor ranks (--actor.num_nodes 1 x --actor.num_gpus_per_node 4 / (ring 2",
        ),
        (
            f"--actor.num_gpus_per_node 3 --ref.num_gpus_per_node 3 {RING2}",
            "= 3 ranks: not a multiple of --ds.ring_attn_size 2",
        ),
        # the critic of PPO (gae) has its own ranks
        (
            "--algo.advantage.estimator gae --train.batch_size 4 --train.micro_batch_size 4",
            "x 8 data-parallel critic ranks (the critic --algo.advantage.estimator gae trains) "
            "(--critic.num_nodes 1 x --critic.num_gpus_per_node 8) = 32",
        ),
        # no GPUs for a role OpenRLHF starts (scripts/_train.sh gave 0 with NUM_GPUS=1)
        ("--actor.num_gpus_per_node 0", "--actor.num_gpus_per_node 0: must be an integer >= 1"),
        ("--actor.num_nodes 0", "--actor.num_nodes 0: must be an integer >= 1"),
        ("--ref.num_gpus_per_node 0", "--ref.num_gpus_per_node 0: must be an integer >= 1"),
        # colocations OpenRLHF asserts in train()
        ("--ref.num_gpus_per_node 2", "--train.colocate_actor_ref puts the actor and the reference"),
        (
            "--train.colocate_all --vllm.sync_backend gloo --vllm.num_engines 2",
            "--vllm.num_engines 2 x --vllm.tensor_parallel_size 1 must equal",
        ),
    ],
)
def test_training_ranks_and_batch_sizes_are_checked_before_ray_starts(extra, named, capsys):
    code, err = run([*RAY, *RANKS.split(), *extra.split()], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("latr-train: error: ") and named in lines[0], err


@pytest.mark.parametrize(
    "extra",
    [
        "--train.batch_size 4 --train.micro_batch_size 4",
        f"--train.batch_size 16 --train.micro_batch_size 2 {GPUS4} --rollout.batch_size 8",
        # no reference model without a KL term: its GPU count does not matter
        "--algo.kl.init_coef 0 --ref.num_gpus_per_node 0 --train.batch_size 4 --train.micro_batch_size 4",
        # the CPU mode counts ranks the same way (logical GPUs)
        "--trainer.device cpu --train.batch_size 8 --train.micro_batch_size 4",
    ],
)
def test_consistent_ranks_and_batch_sizes_pass(extra, capsys):
    code, err = run([*RAY, *RANKS.split(), *extra.split()], capsys)
    assert code == 0, err


def test_cpu_mode_refuses_zero_ranks_too(capsys):
    """--trainer.device cpu: openrlhf_ext.cpu_mode asks Ray for num_nodes x num_gpus_per_node logical GPUs,
    one per DeepSpeed rank; 0 would start no rank there either."""
    code, err = run(
        [*RAY, *RANKS.split(), "--trainer.device", "cpu", "--actor.num_gpus_per_node", "0"], capsys
    )
    assert code == 2 and "--actor.num_gpus_per_node 0" in err, err
