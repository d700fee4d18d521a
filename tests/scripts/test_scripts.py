"""scripts/: every script parses (bash -n), every training script's flags pass `latr-train --dry-run`, and the
eval script runs for real on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "scripts").glob("*.sh"))
TRAIN = [p for p in SCRIPTS if p.name.startswith(("grpo-", "dapo-"))]
BIN = Path(sys.executable).parent


def env(**extra):
    return {
        **os.environ,
        "LATR_TRAIN": str(BIN / "latr-train"),
        "LATR_SGLANG": str(BIN / "latr-sglang"),
        **extra,
    }


@pytest.fixture
def data_dir(tmp_path):
    """The files the training scripts read, as `datasets/prepare_*.py` name them (one row each)."""
    row = json.dumps({"prompt": "p", "label": "1"}) + "\n"
    for name in ("countdown/train.jsonl", "countdown/test.jsonl", "math/train.jsonl", "math/math500.jsonl"):
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / name).write_text(row)
    return tmp_path / "data"


def test_the_script_matrix_is_complete():
    names = {p.stem for p in TRAIN}
    assert names == {
        f"{a}-{r}-{d}"
        for a in ("grpo", "dapo")
        for r in ("latr", "stochastic")
        for d in ("countdown", "math")
    }
    assert {p.stem for p in SCRIPTS if p.name.startswith("eval-")} == {
        f"eval-{d}" for d in ("countdown", "math500", "amc23", "aime24", "olympiadbench")
    }


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_parses(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert os.access(script, os.X_OK), f"{script.name} is not executable"


@pytest.mark.parametrize("script", TRAIN, ids=lambda p: p.name)
def test_training_script_flags_resolve(script, tmp_path, data_dir):
    algo, sampler, dataset = script.stem.split("-")
    proc = subprocess.run(
        [str(script)],
        env=env(DRY_RUN="1", OUTPUT_DIR=str(tmp_path), DATA_DIR=str(data_dir)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    resolved = json.loads(proc.stdout)
    assert resolved["rollout"] == {"backend": "sglang", "sampler": sampler}
    openrlhf = resolved["openrlhf"]
    assert openrlhf["rollout"]["n_samples_per_prompt"] == 8 and openrlhf["actor"]["adam"]["lr"] == 1e-6
    assert openrlhf["algo"]["dynamic_filtering_enable"] == (algo == "dapo")
    assert openrlhf["actor"]["eps_clip_low_high"] == ([0.2, 0.28] if algo == "dapo" else [0.2, 0.2])
    assert openrlhf["rollout"]["max_new_tokens"] == (1024 if dataset == "countdown" else 8192)
    if sampler == "latr":
        from latr_sglang.config import LATRConfig

        assert resolved["latr"] == json.loads(json.dumps(LATRConfig.preset(dataset).to_dict()))
    else:
        assert resolved["latr"] is None


def test_training_script_overrides_from_the_environment_and_arguments(tmp_path, data_dir):
    proc = subprocess.run(
        [str(REPO / "scripts/dapo-latr-countdown.sh"), "--latr.tau_abs", "0.3"],
        env=env(
            DRY_RUN="1", MODEL="my/model", NUM_GPUS="4", OUTPUT_DIR=str(tmp_path), WANDB_PROJECT="p",
            DATA_DIR=str(data_dir),
        ),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    resolved = json.loads(proc.stdout)
    assert resolved["openrlhf"]["actor"]["model_name_or_path"] == "my/model"
    assert (
        resolved["openrlhf"]["actor"]["num_gpus_per_node"] == 2
        and resolved["openrlhf"]["vllm"]["num_engines"] == 2
    )
    assert resolved["openrlhf"]["logger"]["wandb"]["project"] == "p"
    assert resolved["latr"]["tau_abs"] == 0.3


@pytest.mark.parametrize("rules", ["ours", "reference", "bogus"])
def test_latr_rules_select_the_released_codes_fork_exemption_and_fill_rules(tmp_path, data_dir, rules):
    proc = subprocess.run(
        [str(REPO / "scripts/grpo-latr-countdown.sh")],
        env=env(DRY_RUN="1", OUTPUT_DIR=str(tmp_path), DATA_DIR=str(data_dir), LATR_RULES=rules),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if rules == "bogus":
        assert proc.returncode == 2 and "LATR_RULES=bogus: expected ours or reference" in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr[-2000:]
    latr = json.loads(proc.stdout)["latr"]
    expected = ("released", "reference", "copy") if rules == "reference" else ("paper", "chars", "sample")
    assert (latr["rel_rule"], latr["exempt_rule"], latr["fill_after_finished_root"]) == expected
    assert latr["tau_abs"] == 0.25 and latr["lookahead_steps"] == [20, 30, 50]  # the preset either way


@pytest.mark.parametrize("dataset", ["countdown", "math"])
def test_missing_data_and_model_are_named_with_how_to_prepare_them(tmp_path, dataset):
    proc = subprocess.run(
        [str(REPO / f"scripts/dapo-latr-{dataset}.sh")],
        env=env(DRY_RUN="1", DATA_DIR=str(tmp_path / "none"), MODEL=str(tmp_path / "no-model")),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"{tmp_path}/none/{dataset}/train.jsonl" in proc.stderr
    assert f"datasets/prepare_{dataset}.py" in proc.stderr
    assert "no-model" in proc.stderr and "config.json" in proc.stderr


def test_bad_script_settings_fail_naming_them():
    proc = subprocess.run(
        ["bash", str(REPO / "scripts/_train.sh")],
        env=env(ALGO="ppo", SAMPLER="latr", DATASET="countdown", DRY_RUN="1"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "ALGO=ppo" in proc.stderr


def test_eval_script_runs_on_the_cpu(tmp_path, tiny_model_dir):
    proc = subprocess.run(
        [str(REPO / "scripts/eval-countdown.sh"), str(tiny_model_dir), "--limit", "2"],
        env=env(RESULTS_DIR=str(tmp_path), N="2", MAX_NEW="4", PATH=f"{BIN}:{os.environ['PATH']}"),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / f"{tiny_model_dir.name}-countdown.json").read_text())
    assert result["prompts"] == 2 and result["n"] == 2 and "pass@2" in result
    assert (tmp_path / f"{tiny_model_dir.name}-countdown.log").stat().st_size > 0
