#!/usr/bin/env bash
# The README's main job, on a CPU (2 cores, under 20 minutes): DAPO + LATR on countdown with the embedded
# SmolLM2-135M-Instruct, in one process (`latr-train --trainer.mode local`), then an evaluation of the policy
# before vs after on held-out problems and PNG plots of the run.
#
# Why these settings: SmolLM2-135M almost never writes a well-formed answer to countdown (about 1 in 7 with
# the tag opened for it, never a correct one; see BENCHMARKS.md), and with DAPO's accuracy filter every group
# would tie and no step would train. So the assistant's turn starts with "<answer>" (a prefill the reward
# sees), problems use 2-3 numbers, dynamic sampling keeps groups whose *shaped* reward differs (0.1 for a
# well-formed equation, 1 for a correct one), answers are capped at 24 tokens, and the learning rate is
# 3e-5. What moves in 20 minutes is mostly the format; the printed numbers say how much, and whether any
# problem got solved.
#
#   scripts/demo-cpu.sh [extra latr-train flags]      # OUT=outputs/demo STEPS=12 EVAL_PROMPTS=16
#   SAMPLER=stochastic OUT=outputs/demo-stochastic scripts/demo-cpu.sh   # the same run without LATR
set -euo pipefail
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-${REPO_DIR}/.venv/bin}"
OUT="${OUT:-${REPO_DIR}/outputs/demo}"
STEPS="${STEPS:-12}"
EVAL_PROMPTS="${EVAL_PROMPTS:-16}"
SAMPLER="${SAMPLER:-latr}"
sampler=(--rollout.sampler "${SAMPLER}")
if [[ "${SAMPLER}" == latr ]]; then
  sampler+=(--latr.preset countdown --latr.lookahead_steps 8,16 --latr.chunk_size 8)
fi

rm -rf "${OUT}"
start=$(date +%s)
"${BIN}/latr-train" --trainer.mode local \
  --trainer.max_steps "${STEPS}" \
  --algo.dynamic_filtering_enable --dapo.dynamic_filtering_metric reward --dapo.max_sampling_rounds 3 \
  "${sampler[@]}" \
  --rollout.batch_size 4 --rollout.n_samples_per_prompt 8 --rollout.max_new_tokens 24 \
  --actor.adam.lr 3e-5 --actor.eps_clip_low_high 0.2 0.28 \
  --local.response_prefix "<answer>" --local.countdown_numbers 2,3 \
  --local.eval_prompts "${EVAL_PROMPTS}" --eval.n_samples_per_prompt 8 \
  --ckpt.output_dir "${OUT}" "$@"
"${BIN}/latr-sglang" report "${OUT}" --output "${OUT}/report"
echo "demo finished in $(( $(date +%s) - start )) s: metrics ${OUT}/metrics.csv, plots ${OUT}/report/*.png, policy ${OUT}/policy"
