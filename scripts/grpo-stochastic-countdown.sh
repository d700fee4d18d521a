#!/usr/bin/env bash
# GRPO with stochastic sampling on countdown: the paper's released hyperparameters (see _train.sh).
#   MODEL=... NUM_GPUS=8 OUTPUT_DIR=runs WANDB_PROJECT=... scripts/grpo-stochastic-countdown.sh [extra latr-train flags]
ALGO=grpo SAMPLER=stochastic DATASET=countdown exec "$(dirname "$0")/_train.sh" "$@"
