#!/usr/bin/env bash
# Evaluate a checkpoint on aime24 (see _eval.sh):  scripts/eval-aime24.sh CHECKPOINT [extra latr-sglang eval flags]
DATASET=aime24 exec "$(dirname "$0")/_eval.sh" "$@"
