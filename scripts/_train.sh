#!/usr/bin/env bash
# Shared body of the {algo}-{rollout}-{dataset}.sh training scripts: the paper's released hyperparameters
# (docs/ALGORITHM.md: Qwen2.5-3B base, 8 GPUs, 500 steps) as `latr-train` flags. Callers set ALGO (grpo|dapo),
# SAMPLER (latr|stochastic) and DATASET (countdown|math); everything below can be overridden from the
# environment, and extra arguments are passed to latr-train last (so they win).
# LATR takes the dataset's preset (the released thresholds, ages and schedule) with this project's rule
# defaults (`rel_rule paper`, `exempt_rule chars`, `fill_after_finished_root sample`; docs/ALGORITHM.md says
# why). LATR_RULES=reference uses the released code's rules instead (its inverted relative fork test, its
# exemption rule and its fills), which is how the published runs forked.
#
#   MODEL=Qwen/Qwen2.5-3B NUM_GPUS=8 OUTPUT_DIR=runs WANDB_PROJECT=latr scripts/dapo-latr-countdown.sh
#   LATR_RULES=reference scripts/dapo-latr-countdown.sh   # the released code's fork, exemption and fill rules
#   DRY_RUN=1 scripts/grpo-latr-math.sh          # print the resolved configuration only
set -euo pipefail

: "${ALGO:?set ALGO=grpo|dapo}" "${SAMPLER:?set SAMPLER=latr|stochastic}" "${DATASET:?set DATASET=countdown|math}"
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL="${MODEL:-Qwen/Qwen2.5-3B}"
NUM_GPUS="${NUM_GPUS:-8}"                 # one node: half train (actor + reference), half roll out
NUM_NODES="${NUM_NODES:-1}"
BACKEND="${BACKEND:-sglang}"              # sglang | torch | vllm (vllm: OpenRLHF's engines, stochastic only)
RUN_NAME="${RUN_NAME:-${ALGO}-${SAMPLER}-${DATASET}}"
OUTPUT_DIR="${OUTPUT_DIR:-${REPO_DIR}/runs}/${RUN_NAME}"
WANDB_PROJECT="${WANDB_PROJECT:-latr-sglang}"
DATA_DIR="${DATA_DIR:-${REPO_DIR}/data}"
REWARD="${REWARD:-${REPO_DIR}/latr_sglang/tasks/reward_func.py}"

for var in NUM_GPUS NUM_NODES; do
  if [[ ! "${!var}" =~ ^[1-9][0-9]{0,5}$ ]]; then
    echo "$(basename "$0"): ${var}=${!var}: expected a positive integer" >&2; exit 2
  fi
done
# Each node's GPUs are split: half train (actor + reference, colocated), the rest roll out. One GPU cannot be
# split (it would give the trainer 0 GPUs, which OpenRLHF cannot start); train on one GPU with local mode.
if (( NUM_GPUS < 2 )); then
  echo "$(basename "$0"): NUM_GPUS=${NUM_GPUS}: these scripts give half of each node's GPUs to training and the" \
       "rest to the rollout engines, so they need NUM_GPUS >= 2; on one GPU run latr-train --trainer.mode local" \
       "--trainer.device cuda (README, local mode)" >&2
  exit 2
fi
TRAIN_GPUS=$(( NUM_GPUS / 2 ))                      # per node (>= 1)
ENGINES=$(( (NUM_GPUS - TRAIN_GPUS) * NUM_NODES ))  # in all (>= 1)

# Data: python datasets/prepare_countdown.py --out data/countdown  |  datasets/prepare_math.py train/eval --out data/math
TEMPLATE_FLAG=""; if [[ -n "${CHAT_TEMPLATE:-}" ]]; then TEMPLATE_FLAG="--data.apply_chat_template"; fi
case "${DATASET}" in
  countdown) PROMPTS="${PROMPTS:-${DATA_DIR}/countdown/train.jsonl}"; EVAL_SET="${EVAL_SET:-${DATA_DIR}/countdown/test.jsonl}"
             MAX_NEW=1024; MAX_LEN=1280 ;;
  math)      PROMPTS="${PROMPTS:-${DATA_DIR}/math/train.jsonl}"; EVAL_SET="${EVAL_SET:-${DATA_DIR}/math/math500.jsonl}"
             MAX_NEW=8192; MAX_LEN=9216 ;;
  *) echo "DATASET=${DATASET}: expected countdown or math" >&2; exit 2 ;;
esac

# Batch sizes: the released runs make ONE optimizer update per rollout step: 256 prompts x 8 responses, all
# 2048 samples in one update. OpenRLHF counts --rollout.batch_size in prompts but --train.batch_size in
# samples (its PolicyModelActor makes rollout.batch_size * n_samples_per_prompt / train.batch_size updates
# per epoch), so the released schedule is --train.batch_size 256 * 8 = 2048 (256 would give 8 updates).
# The micro batch only sets gradient accumulation (2048 / (4 x actor ranks) micro-steps), not the updates.
PROMPTS_PER_STEP="${PROMPTS_PER_STEP:-256}"
N_SAMPLES="${N_SAMPLES:-8}"
TRAIN_BATCH_SAMPLES=$(( PROMPTS_PER_STEP * N_SAMPLES ))

args=(
  --actor.model_name_or_path "${MODEL}"
  --reward.remote_url "${REWARD}"
  --data.prompt_dataset "${PROMPTS}" --data.input_key prompt --data.label_key label ${TEMPLATE_FLAG}
  --data.max_len "${MAX_LEN}" --rollout.max_new_tokens "${MAX_NEW}"
  --actor.num_nodes "${NUM_NODES}" --actor.num_gpus_per_node "${TRAIN_GPUS}"
  --ref.num_nodes "${NUM_NODES}" --ref.num_gpus_per_node "${TRAIN_GPUS}" --train.colocate_actor_ref
  --vllm.num_engines "${ENGINES}" --vllm.tensor_parallel_size 1 --vllm.gpu_memory_utilization 0.8
  --rollout.backend "${BACKEND}" --rollout.sampler "${SAMPLER}"
  --algo.advantage.estimator group_norm
  --rollout.n_samples_per_prompt "${N_SAMPLES}" --rollout.batch_size "${PROMPTS_PER_STEP}"
  --train.batch_size "${TRAIN_BATCH_SAMPLES}"
  --rollout.micro_batch_size 16 --train.micro_batch_size 4 --train.max_epochs 1 --train.num_episodes 1
  --data.max_samples $(( PROMPTS_PER_STEP * 500 ))
  --rollout.temperature 1.0 --rollout.top_p 1.0
  --actor.adam.lr 1e-6 --actor.max_norm 1.0 --actor.entropy_coef 0 --actor.loss_agg_mode token-mean
  --algo.kl.use_loss --algo.kl.estimator k3 --algo.kl.init_coef 0.01
  --ds.zero_stage 2 --ds.param_dtype bf16 --actor.gradient_checkpointing_enable
  --ds.attn_implementation sdpa
  --eval.dataset "${EVAL_SET}" --eval.steps 20 --eval.n_samples_per_prompt 8 --eval.temperature 0.6
  --train.seed 42
  --ckpt.output_dir "${OUTPUT_DIR}/final" --ckpt.path "${OUTPUT_DIR}/checkpoints" --ckpt.save_steps 50 --ckpt.save_hf
  --logger.logging_steps 1 --logger.tensorboard_dir "${OUTPUT_DIR}/tensorboard"
  --logger.wandb.project "${WANDB_PROJECT}" --logger.wandb.run_name "${RUN_NAME}"
)
if [[ -n "${WANDB_API_KEY:-}" ]]; then args+=(--logger.wandb.key "${WANDB_API_KEY}"); fi
if [[ "${SAMPLER}" == latr ]]; then args+=(--latr.preset "${DATASET}"); fi
case "${LATR_RULES:-ours}" in
  ours) ;;
  reference)  # the released code's choices where our defaults differ (docs/ALGORITHM.md; exit_scope batch
              # cannot take effect in ray mode, where each engine call is one prompt)
    if [[ "${SAMPLER}" == latr ]]; then
      args+=(--latr.rel_rule released --latr.exempt_rule reference --latr.fill_after_finished_root copy)
    fi ;;
  *) echo "$(basename "$0"): LATR_RULES=${LATR_RULES}: expected ours or reference" >&2; exit 2 ;;
esac
case "${ALGO}" in
  grpo) args+=(--actor.eps_clip_low_high 0.2 0.2) ;;
  dapo) args+=(--actor.eps_clip_low_high 0.2 0.28
               --algo.dynamic_filtering_enable --dapo.dynamic_filtering_rule std --dapo.max_sampling_rounds 2
               --dapo.overlong_filtering true) ;;
  *) echo "ALGO=${ALGO}: expected grpo or dapo" >&2; exit 2 ;;
esac
if [[ -n "${DRY_RUN:-}" ]]; then args+=(--dry-run); fi

# Inputs must exist before anything starts (a Ray cluster takes minutes to fail on a missing file). A local
# model path must be a folder; a hub id (org/name) is fetched by transformers on first use.
problems=()
case "${DATASET}" in
  countdown) prepare="python datasets/prepare_countdown.py --out ${DATA_DIR}/countdown" ;;
  math)      prepare="python datasets/prepare_math.py train --source dapo-math-17k.parquet --out ${DATA_DIR}/math && python datasets/prepare_math.py eval --out ${DATA_DIR}/math" ;;
esac
for file in "${PROMPTS}" "${EVAL_SET}"; do
  if [[ ! -s "${file}" ]]; then problems+=("data file ${file} is missing or empty; prepare it with: ${prepare}"); fi
done
if [[ ! -f "${REWARD}" ]]; then problems+=("reward file ${REWARD} does not exist (REWARD=...)"); fi
if [[ -e "${MODEL}" || "${MODEL}" == /* || "${MODEL}" == .* || "${MODEL}" == ~* ]]; then
  if [[ ! -f "${MODEL}/config.json" ]]; then
    problems+=("MODEL=${MODEL} is not a Hugging Face model folder (no config.json); give a folder or a hub id like Qwen/Qwen2.5-3B")
  fi
elif [[ -n "${DRY_RUN:-}" ]]; then
  echo "note: MODEL=${MODEL} is not a local folder: it is read from the Hugging Face cache or hub (HF_HOME)" >&2
fi
if (( ${#problems[@]} )); then
  for p in "${problems[@]}"; do echo "$(basename "$0"): ${p}" >&2; done
  exit 2
fi

if [[ -z "${DRY_RUN:-}" ]]; then mkdir -p "${OUTPUT_DIR}"; fi
# the command: $LATR_TRAIN, else latr-train on PATH (an activated venv, the image), else this checkout's .venv
if [[ -z "${LATR_TRAIN:-}" ]]; then
  LATR_TRAIN="$(command -v latr-train || echo "${REPO_DIR}/.venv/bin/latr-train")"
fi
exec "${LATR_TRAIN}" "${args[@]}" "$@"
