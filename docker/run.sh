#!/usr/bin/env bash
# Run a training script inside the GPU image: starts a Ray head in the container and submits the script as a
# Ray job, so OpenRLHF's actors and the SGLang engines share one cluster.
#
#   docker/run.sh scripts/dapo-latr-countdown.sh [extra latr-train flags]
#
# Environment: IMAGE (latr-sglang:gpu), GPUS (all), DATA_DIR (the checkout's data/), RUNS_DIR (the checkout's
# runs/), HF_CACHE (~/.cache/huggingface), MODEL, NUM_GPUS, WANDB_API_KEY / WANDB_PROJECT / WANDB_MODE (passed
# through, never baked in; the image logs wandb offline, and a WANDB_API_KEY without WANDB_MODE logs online),
# DRY_RUN=1 (print the docker command, run nothing).
#
# Multi-node: on the head node run `ROLE=head docker/run.sh scripts/...`; on each worker node run
# `ROLE=worker HEAD_ADDRESS=<head-ip>:6379 docker/run.sh`, which joins the head's Ray cluster and waits.
# Set NUM_NODES (and NUM_GPUS per node) for the script; the containers use the host network so Ray and NCCL
# reach each other.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${IMAGE:-latr-sglang:gpu}"
ROLE="${ROLE:-head}"
DATA_DIR="${DATA_DIR:-${REPO_DIR}/data}"
RUNS_DIR="${RUNS_DIR:-${REPO_DIR}/runs}"
HF_CACHE="${HF_CACHE:-${HOME}/.cache/huggingface}"

docker_args=(
  run --rm --gpus "${GPUS:-all}" --network host --ipc host --shm-size 32g
  --ulimit memlock=-1 --ulimit stack=67108864
  -v "${DATA_DIR}:/workspace/data" -v "${RUNS_DIR}:/workspace/runs" -v "${HF_CACHE}:/home/latr/.cache/huggingface"
  -e DATA_DIR=/workspace/data -e OUTPUT_DIR=/workspace/runs
  -e MODEL -e NUM_GPUS -e NUM_NODES -e WANDB_API_KEY -e WANDB_PROJECT -e HF_TOKEN
)
# The image sets WANDB_MODE=offline (nothing leaves the machine unasked); a key given means: log to wandb.
if [[ -n "${WANDB_MODE:-}" ]]; then
  docker_args+=(-e WANDB_MODE)
elif [[ -n "${WANDB_API_KEY:-}" ]]; then
  docker_args+=(-e WANDB_MODE=online)
  echo "docker/run.sh: WANDB_API_KEY is set, so wandb logs online (WANDB_MODE=offline keeps it local)" >&2
fi

if [[ "${ROLE}" == worker ]]; then
  : "${HEAD_ADDRESS:?ROLE=worker needs HEAD_ADDRESS=<head-ip>:6379}"
  inner="ray start --address='${HEAD_ADDRESS}' --block"
else
  SCRIPT="${1:?usage: docker/run.sh scripts/<algo>-<rollout>-<dataset>.sh [extra latr-train flags]}"; shift
  # the script's path inside the image, where the project lives at /opt/latr-sglang
  script_in_image="/opt/latr-sglang/${SCRIPT#"${REPO_DIR}/"}"
  extra=""; if (( $# )); then extra="$(printf ' %q' "$@")"; fi
  inner="ray start --head --port=6379 --dashboard-host=127.0.0.1 --disable-usage-stats \
&& ray job submit --address=http://127.0.0.1:8265 -- bash ${script_in_image}${extra}; \
status=\$?; ray stop; exit \$status"
fi

if [[ -n "${DRY_RUN:-}" ]]; then  # print what would run, run nothing
  printf 'docker'; printf ' %q' "${docker_args[@]}" "${IMAGE}" bash -lc "${inner}"; printf '\n'
  exit 0
fi
mkdir -p "${DATA_DIR}" "${RUNS_DIR}" "${HF_CACHE}"
exec docker "${docker_args[@]}" "${IMAGE}" bash -lc "${inner}"
