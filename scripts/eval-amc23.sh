#!/usr/bin/env bash
# Evaluate a checkpoint on amc23 (see _eval.sh):  scripts/eval-amc23.sh CHECKPOINT [extra latr-sglang eval flags]
DATASET=amc23 exec "$(dirname "$0")/_eval.sh" "$@"
