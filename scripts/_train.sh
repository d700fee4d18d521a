#!/usr/bin/env bash
# Shared body of the {algo}-{rollout}-{dataset}.sh training scripts: the paper's released hyperparameters
# (docs/LATR_SPEC: Qwen2.5-3B base, 8 GPUs, 500 steps) as `latr-train` flags. Callers set ALGO (grpo|dapo),
# SAMPLER (latr|stochastic) and DATASET (countdown|math); everything below can be overridden from the
# environment, and extra arguments are passed to latr-train last (so they win).
#
#   MODEL=Qwen/Qwen2.5-3B NUM_GPUS=8 OUTPUT_DIR=runs WANDB_PROJECT=latr scripts/dapo-latr-countdown.sh
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

TRAIN_GPUS=$(( NUM_GPUS / 2 ))
ENGINES=$(( NUM_GPUS * NUM_NODES - TRAIN_GPUS * NUM_NODES ))

# Data: python datasets/prepare_countdown.py --out data/countdown  |  datasets/prepare_math.py train/eval --out data/math
TEMPLATE_FLAG=""; if [[ -n "${CHAT_TEMPLATE:-}" ]]; then TEMPLATE_FLAG="--data.apply_chat_template"; fi
case "${DATASET}" in
  countdown) PROMPTS="${PROMPTS:-${DATA_DIR}/countdown/train.jsonl}"; EVAL_SET="${EVAL_SET:-${DATA_DIR}/countdown/test.jsonl}"
             MAX_NEW=1024; MAX_LEN=1280 ;;
  math)      PROMPTS="${PROMPTS:-${DATA_DIR}/math/train.jsonl}"; EVAL_SET="${EVAL_SET:-${DATA_DIR}/math/math500.jsonl}"
             MAX_NEW=8192; MAX_LEN=9216 ;;
  *) echo "DATASET=${DATASET}: expected countdown or math" >&2; exit 2 ;;
esac

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
  --rollout.n_samples_per_prompt 8 --rollout.batch_size 256 --train.batch_size 256
  --rollout.micro_batch_size 16 --train.micro_batch_size 4 --train.max_epochs 1 --train.num_episodes 1
  --data.max_samples $(( 256 * 500 ))
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
case "${ALGO}" in
  grpo) args+=(--actor.eps_clip_low_high 0.2 0.2) ;;
  dapo) args+=(--actor.eps_clip_low_high 0.2 0.28
               --algo.dynamic_filtering_enable --dapo.dynamic_filtering_rule std --dapo.max_sampling_rounds 2
               --dapo.overlong_filtering true) ;;
  *) echo "ALGO=${ALGO}: expected grpo or dapo" >&2; exit 2 ;;
esac
if [[ -n "${DRY_RUN:-}" ]]; then args+=(--dry-run); fi

if [[ -z "${DRY_RUN:-}" ]]; then mkdir -p "${OUTPUT_DIR}"; fi
exec "${LATR_TRAIN:-latr-train}" "${args[@]}" "$@"
