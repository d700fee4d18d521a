"""The single-process trainer end to end on a tiny model: real OpenRLHF Actor/PolicyLoss, real engine."""

import csv
import subprocess
import sys

import pytest
import torch

from latr_sglang.config import LATRConfig
from openrlhf_ext.local_trainer import LocalTrainConfig, LocalTrainer


def varied_reward(prompt, response, label):
    """A reward the tiny random model can vary on: response length parity (accuracy 1 for even)."""
    accuracy = float(len(response) % 2 == 0)
    return accuracy, accuracy


def read_metrics(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def make(tmp_path, model_dir, **overrides):
    settings = dict(
        model=str(model_dir),
        steps=2,
        prompts_per_step=2,
        n_samples_per_prompt=4,
        max_new_tokens=12,
        learning_rate=1e-2,
        output_dir=str(tmp_path / "run"),
        task="countdown",  # the paper's prompt: long enough for the length-parity reward to vary
    )
    cfg = LocalTrainConfig(**{**settings, **overrides})
    latr = LATRConfig(tau_abs=0.05, tau_rel=0.9, lookahead_steps=(4, 8), chunk_size=4)
    return cfg, latr


def test_grpo_stochastic_updates_the_policy_and_the_engine(tmp_path, tiny_model_dir):
    cfg, latr = make(tmp_path, tiny_model_dir, algo="grpo", sampler="stochastic")
    trainer = LocalTrainer(cfg, latr, reward_fn=varied_reward)
    try:
        before = {k: v.clone() for k, v in trainer.actor.model.state_dict().items()}
        history = trainer.fit()
        after = trainer.actor.model.state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before), "the actor did not change"
        engine_params = dict(trainer.engine.hf_model.named_parameters())
        for name, value in after.items():  # the engine serves exactly the actor's new weights
            if name in engine_params:
                assert torch.equal(engine_params[name], value), name
        # rollout log-probs (engine) and training log-probs (actor) agree: same weights, same tokens
        assert history[0]["logprob_mismatch"] < 1e-3
        assert trainer.reference is not None and history[0]["kl"] >= 0.0
        rows = read_metrics(tmp_path / "run/metrics.csv")
        assert len(rows) == 2
        for key in (
            "rollout/reward_mean",
            "policy_loss",
            "kl",
            "grad_norm",
            "timing/generation",
            "timing/step_total",
            "latr/pairwise_edit_distance",
            "train/global_step",
        ):
            assert key in rows[0], key
        assert (tmp_path / "run/tensorboard").exists() and (tmp_path / "run/config.json").exists()
    finally:
        trainer.close()


def test_dapo_latr_keeps_informative_groups(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg, latr = make(tmp_path, tiny_model_dir, algo="dapo", sampler="latr", use_wandb=True)
    trainer = LocalTrainer(cfg, latr, reward_fn=varied_reward)
    try:
        # DAPO: clip-higher, and the KL loss 0.01 of the released LATR DAPO runs (so a reference model)
        assert trainer.reference is not None and trainer.policy_loss.clip_eps_high == 0.28
        history = trainer.fit()
        assert all(0.0 < m["dynamic_filtering_pass_rate"] <= 1.0 for m in history)
        assert any(m["latr/branches_created"] > 0 for m in history)
        assert any(m["skipped_step"] == 0.0 for m in history)
    finally:
        trainer.close()
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert runs and any(runs[0].glob("*.wandb"))  # the offline wandb log exists


def test_dynamic_sampling_gives_up_after_its_rounds(tmp_path, tiny_model_dir):
    cfg, latr = make(
        tmp_path, tiny_model_dir, algo="dapo", sampler="stochastic", max_sampling_rounds=2, steps=1
    )
    trainer = LocalTrainer(cfg, latr, reward_fn=lambda p, r, label: (0.0, 0.0))  # every group ties
    try:
        before = {k: v.clone() for k, v in trainer.actor.model.state_dict().items()}
        m = trainer.train_step(1)  # (fit() would then stop the run: nothing trained)
        assert m["rollout/sampling_rounds"] == 2 and m["dynamic_filtering_pass_rate"] == 0.0
        assert m["skipped_step"] == 1.0 and m["rollout/num_samples"] == 2 * 2 * 4
        assert all(torch.equal(before[k], v) for k, v in trainer.actor.model.state_dict().items())
    finally:
        trainer.close()


def test_overlong_filtering_masks_truncated_samples(tmp_path, tiny_model_dir):
    # with 3 new tokens most responses of the tiny model are truncated: DAPO drops exactly those from the loss
    for algo in ("dapo", "grpo"):
        cfg, latr = make(tmp_path / algo, tiny_model_dir, algo=algo, sampler="stochastic", max_new_tokens=3)
        trainer = LocalTrainer(cfg, latr, reward_fn=varied_reward)
        try:
            kept, _ = trainer.rollout(step=1)
            assert kept
            truncated = [t.truncated for _, group, _, _ in kept for t in group.trajectories]
            assert any(truncated)
            m = trainer.update(kept)
            expected = sum(truncated) / len(truncated) if algo == "dapo" else 0.0
            assert m["overlong_filtered_fraction"] == pytest.approx(expected)
        finally:
            trainer.close()


@pytest.mark.parametrize(
    ("args", "needle"), [(["--algo", "ppo2"], "algo"), (["--n_samples_per_prompt", "1"], "n_samples")]
)
def test_cli_rejects_bad_values(args, needle):
    proc = subprocess.run(
        [sys.executable, "-m", "openrlhf_ext.local_trainer", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr


def test_a_resumed_run_matches_an_uninterrupted_one(tmp_path, tiny_model_dir):
    def run(out, steps, resume=False):
        cfg, latr = make(
            tmp_path,
            tiny_model_dir,
            algo="dapo",
            sampler="latr",
            steps=steps,
            save_steps=1,
            output_dir=str(tmp_path / out),
            resume=resume,
        )
        trainer = LocalTrainer(cfg, latr, reward_fn=varied_reward)
        try:
            history = trainer.fit()
            return history, {k: v.clone() for k, v in trainer.actor.model.state_dict().items()}
        finally:
            trainer.close()

    straight, weights_straight = run("straight", 3)
    run("interrupted", 2)
    resumed, weights_resumed = run("interrupted", 3, resume=True)
    assert len(resumed) == 1  # only step 3 ran after the resume
    for key in ("rollout/reward_mean", "policy_loss", "grad_norm", "rollout/response_length_mean"):
        assert resumed[0][key] == straight[2][key], key
    assert all(torch.equal(weights_straight[k], weights_resumed[k]) for k in weights_straight)
    assert len(read_metrics(tmp_path / "interrupted/metrics.csv")) == 3


def test_resume_falls_back_from_a_damaged_checkpoint_and_refuses_a_changed_config(tmp_path, tiny_model_dir):
    """Checkpoints are verified on load: a damaged latest gives way to the previous intact one; a resume with
    another seed is refused (exit 2, naming the field) unless --local.force_resume."""
    from openrlhf_ext.local_trainer import train

    def config(**overrides):
        return make(tmp_path, tiny_model_dir, algo="grpo", sampler="stochastic", save_steps=1, **overrides)

    cfg, latr = config(steps=2)
    trainer = LocalTrainer(cfg, latr, reward_fn=varied_reward)
    try:
        trainer.fit()
    finally:
        trainer.close()
    ckpts = tmp_path / "run" / "checkpoints"
    state = ckpts / "step_2" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:-16])  # a torn write of the latest checkpoint

    cfg, latr = config(steps=2, resume=True)
    trainer = LocalTrainer(cfg, latr, reward_fn=varied_reward)
    try:
        assert trainer.load_checkpoint() == 1  # step_2 is damaged: step_1 is the latest intact one
    finally:
        trainer.close()

    cfg, latr = config(steps=2, resume=True, seed=7)
    assert train(cfg, latr) == 2
    cfg, latr = config(steps=1, resume=True, seed=7, force_resume=True)
    assert train(cfg, latr) == 0


def test_prompt_files_are_checked(tmp_path):
    from openrlhf_ext.local_trainer import load_prompts

    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a", "label": "1"}\n{"prompt": "b"}\n')
    with pytest.raises(ValueError, match=r"p\.jsonl:2.*'label'"):
        load_prompts(LocalTrainConfig(prompts=str(path)))
    path.write_text('{"prompt": "a", "label": {"numbers": [1], "target": 1}}\n')
    assert load_prompts(LocalTrainConfig(prompts=str(path))) == [("a", {"numbers": [1], "target": 1})]


def test_dynamic_sampling_filters_on_the_chosen_metric(tmp_path, tiny_model_dir):
    """A shaped reward that varies while accuracy is always 0: the score metric drops every group, the reward
    metric keeps the groups whose advantages are not all zero."""

    def shaped(prompt, response, label):
        return float(len(response) % 2 == 0) * 0.1, 0.0

    for metric, expect_kept in (("score", False), ("reward", True)):
        cfg, latr = make(
            tmp_path / metric,
            tiny_model_dir,
            algo="dapo",
            sampler="stochastic",
            dynamic_filtering_metric=metric,
        )
        trainer = LocalTrainer(cfg, latr, reward_fn=shaped)
        try:
            kept, _ = trainer.rollout(step=1)
            assert bool(kept) == expect_kept, metric
            for _, _, rewards, _ in kept:
                assert rewards.max() > rewards.min()
        finally:
            trainer.close()


def test_latr_train_local_mode_end_to_end_with_eval_and_report(tmp_path, tiny_model_dir):
    """As a user runs it: `latr-train --trainer.mode local` with OpenRLHF flags, a before/after evaluation,
    then `latr-sglang report` on the run directory."""
    out = tmp_path / "run"
    argv = [
        sys.executable, "-m", "openrlhf_ext.cli.train_ppo_ray", "--trainer.mode", "local",
        "--actor.model_name_or_path", str(tiny_model_dir), "--trainer.max_steps", "2",
        "--rollout.batch_size", "2", "--rollout.n_samples_per_prompt", "4", "--rollout.max_new_tokens", "8",
        "--actor.adam.lr", "1e-3", "--algo.dynamic_filtering_enable",
        "--dapo.dynamic_filtering_metric", "reward",
        # the tiny random model never answers; DAPO's soft overlong punishment over the whole length makes
        # its rewards differ with response length (it stops at newlines), so the steps train
        "--reward.overlong_buffer_len", "8",
        "--local.response_prefix", "<answer>", "--local.countdown_numbers", "2,3",
        "--local.eval_prompts", "3",
        "--eval.n_samples_per_prompt", "2", "--latr.lookahead_steps", "4,8", "--latr.chunk_size", "4",
        "--ckpt.output_dir", str(out),
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "eval (before)" in proc.stdout and "eval (after)" in proc.stdout
    import json

    for tag in ("before", "after"):
        result = json.loads((out / f"eval_{tag}.json").read_text())
        assert result["prompts"] == 3 and result["n"] == 2 and "pass@2" in result
    assert len(read_metrics(out / "metrics.csv")) == 2
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["response_prefix"] == "<answer>" and config["train"]["algo"] == "dapo"
    assert config["train"]["overlong_buffer_len"] == 8
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"] == 3 and summary["trained_steps"] >= 1 and "pass@1_ci95" in summary["before"]
    assert "==== summary: 3 held-out problems x 2 samples" in proc.stdout

    report_dir = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "latr_sglang.cli", "report", str(out), "--output", str(report_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("metrics_combined.csv", "reward.png", "tree.png", "eval.png"):
        assert (report_dir / name).stat().st_size > 0, name


def test_kl_zero_loads_no_reference(tmp_path, tiny_model_dir):
    cfg, latr = make(tmp_path, tiny_model_dir, algo="dapo", sampler="stochastic", kl_coef=0.0)
    trainer = LocalTrainer(cfg, latr, reward_fn=varied_reward)
    try:
        assert trainer.reference is None
    finally:
        trainer.close()


def test_a_run_that_trains_nothing_exits_nonzero_and_says_which_flags_help(tmp_path, tiny_model_dir, capsys):
    from openrlhf_ext.local_trainer import train

    # the tiny random model never solves countdown: every group ties on accuracy, every step is skipped
    cfg, latr = make(tmp_path, tiny_model_dir, algo="dapo", sampler="stochastic", max_sampling_rounds=1)
    assert train(cfg, latr) == 3
    err = capsys.readouterr().err
    assert "nothing trained: all 2 steps were skipped" in err and "no group had rewards that differ" in err
    assert "--rollout.n_samples_per_prompt" in err and "--dapo.dynamic_filtering_metric reward" in err
    assert not (tmp_path / "run" / "policy").exists()  # an unchanged policy is not passed off as trained


def test_a_non_finite_loss_skips_the_step_and_never_reaches_the_weights(tmp_path, tiny_model_dir):
    from openrlhf_ext.local_trainer import NothingTrained

    cfg, latr = make(tmp_path, tiny_model_dir, algo="grpo", sampler="stochastic", steps=1)
    trainer = LocalTrainer(cfg, latr, reward_fn=varied_reward)
    score_groups = trainer.rollouts.score_groups

    def nan_rewards(problems, groups):  # a reward_fn's NaN is refused; this one reaches the update
        return [
            g._replace(rewards=torch.full_like(g.rewards, float("nan")))
            for g in score_groups(problems, groups)
        ]

    trainer.rollouts.score_groups = nan_rewards
    try:
        before = {k: v.clone() for k, v in trainer.actor.model.state_dict().items()}
        with pytest.raises(NothingTrained, match="not finite"):
            trainer.fit()
        assert all(torch.equal(before[k], v) for k, v in trainer.actor.model.state_dict().items())
        rows = read_metrics(tmp_path / "run/metrics.csv")
        assert rows[0]["skipped_step"] == "1.0" and rows[0]["nonfinite_step"] == "1.0"
    finally:
        trainer.close()


def test_fewshot_task_holds_out_its_eval_problems(tmp_path):
    import json

    from openrlhf_ext.local_trainer import load_problems

    train, held_out = load_problems(LocalTrainConfig(eval_prompts=64, output_dir=str(tmp_path)))
    assert len(held_out) == 64

    def key(label):
        p = json.loads(label)
        return tuple(sorted(p["numbers"])), p["target"]

    held = {key(lab) for _, lab in held_out}
    assert len(held) == 64 and not held & {key(lab) for _, lab in train}
    assert all(p.startswith("Write an equation") and p.endswith("Answer:") for p, _ in held_out)


def test_latr_train_local_maps_every_written_flag_and_chooses_the_algorithm():
    from openrlhf_ext.cli.train_ppo_ray import local_config, parse

    # each of these equals OpenRLHF's default, and differs from the local trainer's own default
    argv = ["--trainer.mode", "local", "--train.seed", "42", "--ckpt.output_dir", "./ckpt"]
    argv += ["--rollout.n_samples_per_prompt", "1", "--algo.kl.init_coef", "0.0"]
    cfg = None
    with pytest.raises(Exception, match="n_samples_per_prompt"):  # 1 is mapped, then refused by name
        local_config(parse(argv))
    argv[argv.index("1")] = "2"
    cfg = local_config(parse(argv))
    assert (cfg.seed, cfg.output_dir, cfg.n_samples_per_prompt, cfg.kl_coef) == (42, "./ckpt", 2, 0.0)
    assert cfg.algo == "grpo" and cfg.clip_high == 0.2  # no dynamic filtering: GRPO
    cfg = local_config(parse([*argv, "--algo.dynamic_filtering_enable", "--reward.overlong_buffer_len", "4"]))
    assert cfg.algo == "dapo" and cfg.clip_high == 0.28 and cfg.overlong_buffer_len == 4


def test_eval_every_and_a_resume_that_only_evaluates_the_checkpoint(tmp_path, tiny_model_dir):
    import json

    settings = dict(algo="grpo", sampler="stochastic", eval_prompts=2, eval_n=2, save_steps=1)
    cfg, latr = make(tmp_path, tiny_model_dir, steps=2, eval_every=1, **settings)
    trainer = LocalTrainer(cfg, latr, reward_fn=varied_reward)
    try:
        trainer.fit()
    finally:
        trainer.close()
    run = tmp_path / "run"
    assert {p.name for p in run.glob("eval_*.json")} == {
        "eval_before.json",
        "eval_step1.json",
        "eval_after.json",
    }
    # resuming at the last checkpoint with no step left: the checkpointed policy is evaluated against the
    # stored starting evaluation, and the summary counts the steps the first invocation ran
    cfg, latr = make(tmp_path, tiny_model_dir, steps=2, resume=True, eval_before=False, **settings)
    trainer = LocalTrainer(cfg, latr, reward_fn=varied_reward)
    try:
        assert trainer.fit() == []
    finally:
        trainer.close()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["problems"] == 2 and "gain" in summary
    assert len(read_metrics(run / "metrics.csv")) == 2


def test_a_run_that_diverges_exits_nonzero_names_the_cause_and_saves_no_policy(
    tmp_path, tiny_model_dir, capsys
):
    """lr 1e30: step 1 trains and breaks the weights, then every loss is non-finite. Stopped at the second
    such step (exit 4), no policy saved, and the message names the learning rate, not flags that are fine."""
    from openrlhf_ext.local_trainer import train

    cfg, latr = make(
        tmp_path,
        tiny_model_dir,
        algo="grpo",
        sampler="stochastic",
        steps=4,
        learning_rate=1e30,
        max_new_tokens=8,
        task="countdown-fewshot",  # stops at newlines: response lengths differ
        overlong_buffer_len=6,  # and so do the rewards: step 1 trains
        temperature=2.0,
    )
    assert train(cfg, latr) == 4
    err = capsys.readouterr().err
    assert "error: training diverged at step 2: step 1 trained" in err
    assert "--actor.adam.lr 1e+30" in err and "grad_clip" not in err
    rows = read_metrics(tmp_path / "run/metrics.csv")
    assert [r["skipped_step"] for r in rows] == ["0.0", "1.0", "1.0"]  # step 4 never ran
    assert not (tmp_path / "run" / "policy").exists()


def test_a_custom_reward_that_raises_on_some_responses_trains_and_counts_them(tmp_path, tiny_model_dir):
    calls = []

    def fragile_reward(prompt, response, label):
        calls.append(response)
        if len(calls) % 3 == 0:
            raise KeyError("the user's parser")
        return varied_reward(prompt, response, label)

    cfg, latr = make(tmp_path, tiny_model_dir, algo="grpo", sampler="stochastic", steps=1)
    trainer = LocalTrainer(cfg, latr, reward_fn=fragile_reward)
    try:
        trainer.fit()
    finally:
        trainer.close()
    (row,) = read_metrics(tmp_path / "run/metrics.csv")
    assert float(row["rollout/reward_errors"]) == len(calls) // 3 > 0
    assert float(row["rollout/reward_timeouts"]) == 0.0
