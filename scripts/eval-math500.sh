#!/usr/bin/env bash
# Evaluate a checkpoint on math500 (see _eval.sh):  scripts/eval-math500.sh CHECKPOINT [extra latr-sglang eval flags]
DATASET=math500 exec "$(dirname "$0")/_eval.sh" "$@"
