#!/usr/bin/env bash
# Evaluate a checkpoint on countdown (see _eval.sh):  scripts/eval-countdown.sh CHECKPOINT [extra latr-sglang eval flags]
DATASET=countdown exec "$(dirname "$0")/_eval.sh" "$@"
