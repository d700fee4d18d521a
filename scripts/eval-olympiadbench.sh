#!/usr/bin/env bash
# Evaluate a checkpoint on olympiadbench (see _eval.sh):  scripts/eval-olympiadbench.sh CHECKPOINT [extra latr-sglang eval flags]
DATASET=olympiadbench exec "$(dirname "$0")/_eval.sh" "$@"
