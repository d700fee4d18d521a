#!/usr/bin/env bash
# DAPO with LATR tree rollouts on math: the paper's released hyperparameters (see _train.sh).
#   MODEL=... NUM_GPUS=8 OUTPUT_DIR=runs WANDB_PROJECT=... scripts/dapo-latr-math.sh [extra latr-train flags]
ALGO=dapo SAMPLER=latr DATASET=math exec "$(dirname "$0")/_train.sh" "$@"
