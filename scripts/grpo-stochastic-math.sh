#!/usr/bin/env bash
# GRPO with stochastic sampling on math: the paper's released hyperparameters (see _train.sh).
#   MODEL=... NUM_GPUS=8 OUTPUT_DIR=runs WANDB_PROJECT=... scripts/grpo-stochastic-math.sh [extra latr-train flags]
ALGO=grpo SAMPLER=stochastic DATASET=math exec "$(dirname "$0")/_train.sh" "$@"
