#!/usr/bin/env bash
# DAPO with LATR tree rollouts on countdown: the paper's released hyperparameters (see _train.sh).
#   MODEL=... NUM_GPUS=8 OUTPUT_DIR=runs WANDB_PROJECT=... scripts/dapo-latr-countdown.sh [extra latr-train flags]
ALGO=dapo SAMPLER=latr DATASET=countdown exec "$(dirname "$0")/_train.sh" "$@"
