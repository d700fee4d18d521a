"""OpenRLHF's own Ray trainer, for real, on this CPU-only machine (`latr-train --trainer.device cpu`): real
Ray, DeepSpeed on its CPU accelerator over gloo, PolicyModelActor + ReferenceModelActor (colocated), our LATR
engine actors with the torch engine, OpenRLHF's weight broadcast to them; a tiny random model. Only CUDA is
stood in for (openrlhf_ext/cpu_mode.py). Three launches are shared by all assertions (each ~1-2 min on 2
cores): GRPO + LATR for 3 steps with a checkpoint at step 2, its resume from that checkpoint, and DAPO with
dynamic sampling + stochastic sampling. One more runs the GPU topology's wire path: the engines behind
SGLang's HTTP API (`--rollout.backend sglang --sglang.server_urls`, served by `latr-sglang serve`), the
weights through /init_weights_update_group + /update_weights_from_distributed."""

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from server_helpers import free_port, serve_command

from latr_sglang.engines.sglang_launch import ServerProcess
from openrlhf_ext.ray_patches import SYNC_CHECK_ENV, SYNC_CHECK_PROMPT

REWARD = str(Path(__file__).with_name("ray_cpu_reward.py"))
TIMEOUT_S = 600


def write_prompts(path: Path, labels: list[str]) -> Path:
    rows = [{"prompt": f"Using the numbers [1, 2], make {i}.", "label": lab} for i, lab in enumerate(labels)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def base_argv(model: Path, prompts: Path, out: Path) -> list[str]:
    return [
        "--trainer.device", "cpu", "--rollout.backend", "torch", "--vllm.num_engines", "1",
        "--actor.model_name_or_path", str(model), "--reward.remote_url", REWARD,
        "--actor.num_gpus_per_node", "1", "--ref.num_gpus_per_node", "1", "--train.colocate_actor_ref",
        "--rollout.batch_size", "2", "--rollout.n_samples_per_prompt", "4", "--rollout.micro_batch_size", "4",
        "--train.batch_size", "8", "--train.micro_batch_size", "4", "--rollout.max_new_tokens", "8",
        "--data.max_len", "128", "--algo.advantage.estimator", "group_norm",
        "--algo.kl.init_coef", "0.01", "--algo.kl.use_loss",
        "--data.prompt_dataset", str(prompts), "--data.input_key", "prompt", "--data.label_key", "label",
        "--ds.attn_implementation", "sdpa", "--ds.zero_stage", "2",
        "--actor.lr_warmup_ratio", "0", "--actor.adam.lr", "1e-3", "--train.seed", "7",
        "--ckpt.output_dir", str(out / "final"), "--ckpt.path", str(out / "ckpt"),
        "--logger.tensorboard_dir", str(out / "tb"), "--logger.logging_steps", "1",
    ]  # fmt: skip


def run_latr_train(argv: list[str], out: Path) -> subprocess.CompletedProcess:
    """latr-train in a fresh process (its own Ray), its output in out/log.txt."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, SYNC_CHECK_ENV: str(out / "engine_greedy.jsonl"), "RAY_DEDUP_LOGS": "0"}
    cmd = [sys.executable, "-m", "openrlhf_ext.cli.train_ppo_ray", *argv]
    # the run starts its own local Ray, which ends with its driver (no `ray stop`: other Rays may be running)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env, cwd=out)
    (out / "log.txt").write_text(proc.stdout + proc.stderr)
    return proc


def launch(argv: list[str], out: Path) -> dict[int, dict[str, float]]:
    """Runs latr-train, which must exit 0; returns {step: {tag: value}} from its tensorboard."""
    proc = run_latr_train(argv, out)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return read_tensorboard(out / "tb")


def last_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("latr-train: error: ")]
    assert lines, proc.stderr[-3000:]
    return lines[-1]


def read_tensorboard(root: Path) -> dict[int, dict[str, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps: dict[int, dict[str, float]] = {}
    for events in root.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            for ev in acc.Scalars(tag):
                steps.setdefault(ev.step, {})[tag.removeprefix("train/")] = ev.value
    return steps


def greedy_of(model_dir: Path) -> list[int]:
    """The greedy response of a saved policy, decoded the way the engine actor decodes (torch engine)."""
    import asyncio

    from openrlhf_ext.engine_actor import LATRRolloutActor

    actor = LATRRolloutActor(str(model_dir), latr={"preset": "countdown"})
    try:
        return asyncio.run(actor.greedy(SYNC_CHECK_PROMPT, 8))
    finally:
        actor.engine.close_sync()


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v.float() for f in sorted(model_dir.glob("*.safetensors")) for k, v in load_file(f).items()}


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("ray-cpu-grpo")
    prompts = write_prompts(root / "prompts.jsonl", ["mix"] * 6)
    argv = [
        *base_argv(tiny_model_dir, prompts, root / "a"),
        "--ckpt.save_steps", "2", "--ckpt.save_hf",
        "--latr.lookahead_steps", "4,8", "--latr.chunk_size", "4", "--latr.tau_abs", "0.01",
        "--latr.tau_rel", "0.9", "--latr.mix_ratio_schedule", "0:1.0,3:0.5",
    ]  # fmt: skip
    metrics = launch(argv, root / "a")
    return {"root": root, "argv": argv, "metrics": metrics, "prompts": prompts}


def test_grpo_latr_runs_openrlhfs_trainer_with_its_and_our_metrics(grpo_run):
    metrics = grpo_run["metrics"]
    assert sorted(metrics) == [1, 2, 3]
    for step, m in metrics.items():
        for tag in (
            "policy_loss",
            "actor_grad_norm",
            "kl",
            "reward",
            "timing/broadcast",
            "rollout/num_samples",
        ):
            assert tag in m and math.isfinite(m[tag]), (step, tag, sorted(m))
        for tag in ("latr/branches_created", "latr/pairwise_edit_distance", "latr/shared_prefix_len"):
            assert tag in m, (step, tag)
        assert m["rollout/num_samples"] == 8
        assert m["actor_grad_norm"] > 0  # mixed-reward groups: a real policy gradient
    # the eta schedule by OpenRLHF's global step: 1.0 for steps 1-2, 0.5 from step 3
    assert [metrics[s]["latr/eta"] for s in (1, 2, 3)] == [1.0, 1.0, 0.5]
    assert sum(metrics[s]["latr/branches_created"] for s in (1, 2)) > 0  # the tree did branch


def test_weights_change_and_the_engine_decodes_what_the_trained_policy_decodes(grpo_run, tiny_model_dir):
    a = grpo_run["root"] / "a"
    before, step2, final = (
        weights(tiny_model_dir),
        weights(a / "ckpt" / "global_step2_hf"),
        weights(a / "final"),
    )
    assert set(before) <= set(final)
    assert any(not torch.equal(before[k], final[k]) for k in before)
    assert any(not torch.equal(step2[k], final[k]) for k in step2)
    engine = {
        r["step"]: r["tokens"] for r in map(json.loads, (a / "engine_greedy.jsonl").read_text().splitlines())
    }
    assert sorted(engine) == [1, 2, 3]
    # after the broadcast of step s, the engine holds the step-s policy: same greedy response
    assert engine[2] == greedy_of(a / "ckpt" / "global_step2_hf")
    assert engine[3] == greedy_of(a / "final")


def test_resume_from_the_step2_checkpoint_reproduces_step3(grpo_run):
    root, argv = grpo_run["root"], grpo_run["argv"]
    shutil.copytree(root / "a" / "ckpt", root / "b" / "ckpt")
    b_argv = [*argv, "--ckpt.load_enable"]
    for flag, value in (
        ("--ckpt.output_dir", root / "b" / "final"),
        ("--ckpt.path", root / "b" / "ckpt"),
        ("--logger.tensorboard_dir", root / "b" / "tb"),
        ("--ckpt.save_steps", 1),
    ):  # fmt: skip  (b also saves its last step, 3)
        b_argv[b_argv.index(flag) + 1] = str(value)
    resumed = launch(b_argv, root / "b")
    assert sorted(resumed) == [3]  # it started at OpenRLHF's restored global step
    full, again = grpo_run["metrics"][3], resumed[3]
    assert again["latr/eta"] == full["latr/eta"] == 0.5
    # the rollout side of step 3 (restored weights, data position, eta, engine seeds) is reproduced exactly
    for tag in ("reward", "rollout/response_length_mean", "latr/branches_created"):
        assert again[tag] == pytest.approx(full[tag], rel=1e-3, abs=1e-5), tag
    # and so is the update side: the replay buffer holds the groups in dispatch order and its shuffle is
    # seeded from the restored optimizer-step count (openrlhf_ext.ray_patches), so step 3 has the same
    # micro-batches; before that, actor_grad_norm differed by ~1e-4 in every resume and policy_loss (weighted
    # per micro-batch by OpenRLHF's logging) by up to 25% when the responses' lengths differed
    for tag in ("policy_loss", "kl", "actor_grad_norm"):
        assert again[tag] == pytest.approx(full[tag], rel=1e-5, abs=1e-7), (tag, again[tag], full[tag])
    # and a resume of the finished run (from its step-3 checkpoint) has nothing left to train: it says so,
    # exit 3 (it exited 0 before)
    proc = run_latr_train(b_argv, root / "b")
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert last_error_line(proc).startswith(
        "latr-train: error: nothing left to train: the run resumed at step 3 with its data used up"
    )


def test_a_run_whose_groups_all_tie_learns_nothing_and_exits_3(tmp_path, tiny_model_dir):
    """Every group's rewards tie (GRPO, no dynamic sampling): OpenRLHF's trainer runs its step with all
    advantages 0 and saves the starting model; latr-train says that nothing was learned, exit 3."""
    prompts = write_prompts(tmp_path / "prompts.jsonl", ["tie", "tie"])
    argv = [*base_argv(tiny_model_dir, prompts, tmp_path / "run"), "--rollout.sampler", "stochastic"]
    proc = run_latr_train(argv, tmp_path / "run")
    assert proc.returncode == 3, (proc.stdout + proc.stderr)[-6000:]
    line = last_error_line(proc)
    assert line.startswith("latr-train: error: 1 step ran, but every sample's advantage was 0"), line
    assert f"the policy saved in {tmp_path / 'run' / 'final'} is the model it started from" in line


@pytest.fixture(scope="module")
def dapo_run(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("ray-cpu-dapo")
    # half the prompts make groups whose rewards all tie: dynamic sampling must drop and replace them (a "mix"
    # group ties too, by chance, 1 time in 8: 8 of them give 2 full batches of 2 with room to spare)
    prompts = write_prompts(root / "prompts.jsonl", ["tie", "mix"] * 8)
    argv = [
        *base_argv(tiny_model_dir, prompts, root / "c"),
        "--rollout.sampler", "stochastic", "--algo.dynamic_filtering_enable",
        "--dapo.max_sampling_rounds", "2", "--actor.eps_clip_low_high", "0.2", "0.28",
    ]  # fmt: skip
    return {"root": root, "metrics": launch(argv, root / "c")}


def test_dapo_dynamic_sampling_refills_and_keeps_the_batch_shape(dapo_run):
    metrics = dapo_run["metrics"]
    assert len(metrics) >= 2, sorted(metrics)
    for m in metrics.values():
        assert m["rollout/num_samples"] == 8  # a full batch on every trained step, never a short one
        assert math.isfinite(m["policy_loss"]) and m["actor_grad_norm"] > 0
        assert 0 < m["dynamic_filtering_pass_rate"] <= 1  # a fraction of groups, as in local mode
        assert m["dynamic_filtering_pass_rate"] == pytest.approx(
            m["dapo/groups_kept"] / m["dapo/groups_generated"]
        )
        assert "latr/eta" in m and m["latr/eta"] == 0.0  # stochastic sampling
    generated = sum(m["dapo/groups_generated"] for m in metrics.values())
    kept = sum(m["dapo/groups_kept"] for m in metrics.values())
    assert generated > kept  # tied groups were dropped ...
    assert kept >= 2 * len(metrics)  # ... and replaced until every batch was full
    log = (dapo_run["root"] / "c" / "log.txt").read_text()
    assert "dynamic sampling (std): kept" in log


@pytest.mark.slow
def test_dp2_dapo_zero2_with_colocated_reference(tmp_path, tiny_model_dir):
    """2 actor ranks (DP=2), DAPO dynamic sampling, ZeRO-2, the reference colocated with the actor. It guards
    the batch shape: a short batch would hang DP=2 or raise OpenRLHF's "Insufficient batch size"."""
    prompts = write_prompts(tmp_path / "prompts.jsonl", ["tie", "mix", "mix", "tie"] * 3)
    argv = base_argv(tiny_model_dir, prompts, tmp_path / "run")
    for flag in ("--actor.num_gpus_per_node", "--ref.num_gpus_per_node", "--train.micro_batch_size"):
        argv[argv.index(flag) + 1] = "2"
    argv += ["--algo.dynamic_filtering_enable", "--dapo.max_sampling_rounds", "2"]
    metrics = launch(argv, tmp_path / "run")
    assert len(metrics) >= 2, sorted(metrics)
    for m in metrics.values():
        assert m["rollout/num_samples"] == 8 and m["actor_grad_norm"] > 0
        assert 0 < m["dynamic_filtering_pass_rate"] <= 1
    assert sum(m["dapo/groups_generated"] - m["dapo/groups_kept"] for m in metrics.values()) > 0


def sglang_argv(model: Path, prompts: Path, out: Path, url: str) -> list[str]:
    """base_argv with the engines behind SGLang's HTTP API at `url` (one engine)."""
    argv = base_argv(model, prompts, out)
    argv[argv.index("--rollout.backend") + 1] = "sglang"
    return [*argv, "--sglang.server_urls", url]


def test_grpo_latr_over_sglangs_http_api_trains_and_the_server_serves_the_trained_policy(
    tmp_path, tiny_model_dir
):
    """The whole trainer with its engine behind SGLang's HTTP API, as on GPUs with --sglang.server_urls:
    rollouts through /generate (tree-phase parts streamed), the weights of every step broadcast to the server
    over the group it joined with /init_weights_update_group (at Ray's node address, which the server allows
    as this machine's own), the server then decoding what the trained policy decodes."""
    prompts = write_prompts(tmp_path / "prompts.jsonl", ["mix"] * 6)
    port = free_port()
    serve = serve_command(tiny_model_dir, port, "--enable-weight-updates")
    server = ServerProcess(serve, f"http://127.0.0.1:{port}", tmp_path / "serve.log", timeout_s=120)
    try:
        argv = [
            *sglang_argv(tiny_model_dir, prompts, tmp_path / "run", server.url),
            "--latr.lookahead_steps", "4,8", "--latr.chunk_size", "4", "--latr.tau_abs", "0.01",
            "--latr.tau_rel", "0.9",
        ]  # fmt: skip
        metrics = launch(argv, tmp_path / "run")
    finally:
        server.stop()
    assert sorted(metrics) == [1, 2, 3]
    for m in metrics.values():
        assert m["rollout/num_samples"] == 8 and m["actor_grad_norm"] > 0
        assert "latr/branches_created" in m
    log = (tmp_path / "serve.log").read_text()
    assert log.count("POST /init_weights_update_group 200") == 1
    num_tensors = len(weights(tiny_model_dir))
    # OpenRLHF broadcasts after every step (the first one too, before it trains nothing new)
    assert log.count("POST /update_weights_from_distributed 200") >= 3 * num_tensors
    generate = [line for line in log.splitlines() if "POST /generate " in line]
    assert generate and all(" 200 " in line for line in generate), generate[:5]
    final = weights(tmp_path / "run" / "final")
    assert any(not torch.equal(weights(tiny_model_dir)[k], final[k]) for k in final)
    engine = {
        r["step"]: r["tokens"]
        for r in map(json.loads, (tmp_path / "run" / "engine_greedy.jsonl").read_text().splitlines())
    }
    assert engine[3] == greedy_of(tmp_path / "run" / "final")  # the server holds the trained weights


def test_an_engine_that_cannot_join_the_weight_sync_stops_the_run_at_once_naming_why(
    tmp_path, tiny_model_dir
):
    """A server started without --enable-weight-updates refuses /init_weights_update_group. OpenRLHF's trainer
    waited 300 s for it at the group's store and failed with "1/2 clients joined"; now the run stops as soon
    as the engine's answer is in, its error the last line."""
    prompts = write_prompts(tmp_path / "prompts.jsonl", ["mix"] * 2)
    port = free_port()
    server = ServerProcess(
        serve_command(tiny_model_dir, port), f"http://127.0.0.1:{port}", tmp_path / "serve.log", timeout_s=120
    )
    try:
        started = time.monotonic()
        proc = run_latr_train(sglang_argv(tiny_model_dir, prompts, tmp_path / "run", server.url), tmp_path)
        took = time.monotonic() - started
    finally:
        server.stop()
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.rstrip().splitlines()[-1] == (
        f"latr-train: error: RequestError: {server.url}/init_weights_update_group: "
        "/init_weights_update_group is disabled: start the server with --api-key, or with "
        "--enable-weight-updates (loopback callers only)"
    )
    assert took < 200, took  # not the store's 300 s
