#!/usr/bin/env bash
# LATR vs plain stochastic sampling, side by side over seeds: the main job (scripts/demo-cpu.sh: same task,
# prompts, budget and evaluation) once with LATR and once with `--rollout.sampler stochastic` per seed, then one
# table and one plot (latr_sglang.bench.experiment): held-out pass@1 / pass@8 over steps (mean and spread over
# seeds), steps to a fixed pass@1, the share of groups with non-tied rewards per step, within-group diversity,
# response length, wall clock per step and in total.
#
#   scripts/experiment-cpu.sh [extra latr-train flags]     # SEEDS="1 2 3" STEPS=... OUT=outputs/experiment
#   SMOKE=1 scripts/experiment-cpu.sh                      # 2 seeds x 2 steps, 2 prompts x 4 per step, 4
#                                                          # held-out problems: checks the pipeline (~10 min
#                                                          # on 2 cores), numbers meaningless
#
# A full run is 2 x len(SEEDS) main jobs (each 8-11 min on 2 idle cores): about an hour (56 min for 3 seeds). Runs alternate arms
# seed by seed, so a stopped experiment stays balanced, and a run whose eval_after.json exists is kept, so
# rerunning the script continues where it stopped (FRESH=1 starts over). Held-out pass@1 is also evaluated
# every EVAL_EVERY steps when the trainer has that option (EVAL_EVERY=0: before and after only). Environment
# that demo-cpu.sh reads passes through, e.g. LATR_PRESET=countdown (default small), STEPS, EVAL_PROMPTS.
set -euo pipefail
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-${REPO_DIR}/.venv/bin}"
OUT="${OUT:-${REPO_DIR}/outputs/experiment}"
SEEDS="${SEEDS:-1 2 3}"
SAMPLERS="${SAMPLERS:-latr stochastic}"
TARGET_PASS1="${TARGET_PASS1:-0.25}"
EVAL_EVERY="${EVAL_EVERY:-4}"
EVAL_FLAG="${EVAL_FLAG:---eval.steps}"  # the latr-train flag of the held-out evaluation interval
extra=()
if [[ "${SMOKE:-0}" == 1 ]]; then
  # the embedded model (a tiny random one never earns a reward, and a run that trains nothing fails by design)
  SEEDS="${SMOKE_SEEDS:-1 2}"
  export STEPS="${STEPS:-2}" EVAL_PROMPTS="${EVAL_PROMPTS:-4}"
  EVAL_EVERY="${EVAL_EVERY_SMOKE:-1}"
  extra+=(--rollout.n_samples_per_prompt 4 --rollout.batch_size 2)
fi
if [[ "${EVAL_EVERY}" != 0 ]]; then
  # only when local mode maps the flag (an unmapped OpenRLHF flag is refused in local mode)
  if "${BIN}/python" -c "import sys; from openrlhf_ext.cli.train_ppo_ray import LOCAL_FLAGS as f; \
sys.exit(0 if sys.argv[1].lstrip('-') in f else 1)" "${EVAL_FLAG}" 2>/dev/null; then
    extra+=("${EVAL_FLAG}" "${EVAL_EVERY}")
  else
    echo "note: local mode has no ${EVAL_FLAG}; held-out pass@1 is evaluated before and after training only" >&2
  fi
fi
[[ "${FRESH:-0}" == 1 ]] && rm -rf "${OUT}"
mkdir -p "${OUT}"
start=$(date +%s)
for seed in ${SEEDS}; do
  for sampler in ${SAMPLERS}; do
    run="${OUT}/${sampler}-seed${seed}"
    if [[ -f "${run}/eval_after.json" ]]; then
      echo "== ${sampler} seed ${seed}: done before, kept (${run})"
      continue
    fi
    echo "== ${sampler} seed ${seed} -> ${run} ($(date -u +%H:%M:%S) UTC)"
    SAMPLER="${sampler}" OUT="${run}" "${REPO_DIR}/scripts/demo-cpu.sh" --train.seed "${seed}" \
      "${extra[@]}" "$@" >"${run}.log" 2>&1 || {
      echo "run ${sampler} seed ${seed} exited non-zero; its log: ${run}.log (last lines below)" >&2
      tail -5 "${run}.log" >&2
      # training and evaluation finished (only the run's own plots failed): keep it, else stop here
      [[ -f "${run}/eval_after.json" ]] || exit 1
    }
    tail -3 "${run}.log"
  done
done
"${BIN}/python" -m latr_sglang.bench.experiment "${OUT}" --target-pass1 "${TARGET_PASS1}"
echo "experiment finished in $(( $(date +%s) - start )) s: ${OUT}/experiment.{md,json,png}"
