#!/usr/bin/env bash
# GRPO with LATR tree rollouts on math: the paper's released hyperparameters (see _train.sh).
#   MODEL=... NUM_GPUS=8 OUTPUT_DIR=runs WANDB_PROJECT=... scripts/grpo-latr-math.sh [extra latr-train flags]
ALGO=grpo SAMPLER=latr DATASET=math exec "$(dirname "$0")/_train.sh" "$@"
