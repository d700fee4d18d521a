#!/usr/bin/env bash
# Shared body of eval-{dataset}.sh: evaluate CHECKPOINT (a HF folder, or 'smollm2': the embedded model) on
# DATASET with the
# reference's validation sampling (n = 8, T = 0.6, top-p 0.95, top-k 20): pass@1, unbiased pass@k, mean@k,
# response length, distinct answers. Writes RESULTS_DIR/<run>-<dataset>.json and a .log next to it, where
# <run> names the training run (runs/dapo-latr-countdown/final -> dapo-latr-countdown-final; RUN_NAME=...
# overrides), so that two runs' final/ folders do not overwrite each other.
# Prompts: as the run was trained when the checkpoint sits in a local training run's folder (config.json
# beside it: chat template, response prefix, newline stop, and for countdown the run's own held-out
# problems; EVAL_SET=bundled uses the bundled set instead); otherwise raw prompts as datasets/prepare_*.py write
# them and scripts/_train.sh trains on them (CHAT_TEMPLATE=1 for the chat template, as with _train.sh).
# Engine: SERVER=http://host:port (a running SGLang server), else an SGLang server launched here when a GPU
# and sglang's runtime are present, else the torch engine on the CPU.
set -euo pipefail
: "${DATASET:?set DATASET}"
CHECKPOINT="${1:?usage: $0 CHECKPOINT [extra latr-sglang eval flags]}"; shift
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS_DIR="${RESULTS_DIR:-${REPO_DIR}/outputs/eval}"
# the command: $LATR_SGLANG, else latr-sglang on PATH (an activated venv, an image), else this checkout's .venv
if [[ -z "${LATR_SGLANG:-}" ]]; then
  LATR_SGLANG="$(command -v latr-sglang || echo "${REPO_DIR}/.venv/bin/latr-sglang")"
fi
N="${N:-8}"; MAX_NEW="${MAX_NEW:-$([[ "${DATASET}" == countdown ]] && echo 1024 || echo 8192)}"
CKPT_DIR="${CHECKPOINT%/}"
NAME="$(basename "${CKPT_DIR}")"
case "${NAME}" in  # a generic checkpoint folder name: prefix the run's folder name
  final|policy|latest|hf|checkpoint*|global_step*|step*) NAME="$(basename "$(dirname "${CKPT_DIR}")")-${NAME}" ;;
esac
NAME="${RUN_NAME:-${NAME}}"
RUN_DIR=""
for candidate in "${CKPT_DIR}" "$(dirname "${CKPT_DIR}")"; do
  if [[ -f "${candidate}/config.json" ]] && grep -q '"train"' "${candidate}/config.json"; then RUN_DIR="${candidate}"; break; fi
done
OUT="${RESULTS_DIR}/${NAME}-${DATASET}.json"
mkdir -p "${RESULTS_DIR}"

engine=()
if [[ -n "${SERVER:-}" ]]; then
  engine=(--server "${SERVER}")
elif command -v nvidia-smi >/dev/null 2>&1 && python -c "import sglang.srt.entrypoints.http_server" 2>/dev/null; then
  PORT="${PORT:-30123}"
  # 'smollm2' is the embedded model's converted folder for SGLang; folders and hub ids go to SGLang as given
  model_path="$(python -c 'import sys; from latr_sglang import models as m
print(m.embedded_model_dir() if m.names_default_model(sys.argv[1]) else sys.argv[1])' "${CHECKPOINT}")"
  python -m sglang.launch_server --model-path "${model_path}" --host 127.0.0.1 --port "${PORT}" \
    >"${OUT%.json}.server.log" 2>&1 &
  SERVER_PID=$!
  trap 'kill ${SERVER_PID} 2>/dev/null || true' EXIT
  for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:${PORT}/health" >/dev/null && break; sleep 1; done
  engine=(--server "http://127.0.0.1:${PORT}")
else
  engine=(--model "${CHECKPOINT}")
fi

dataset=(--dataset "${DATASET}")
if [[ -n "${RUN_DIR}" ]]; then
  template=(--run "${RUN_DIR}")  # the run's own prompt template, response prefix and stop
  if [[ "${DATASET}" == countdown && "${EVAL_SET:-}" != bundled ]]; then dataset=(); fi  # its held-out problems
else
  template=(--no-chat-template)  # base models (the paper's), as _train.sh; CHAT_TEMPLATE=1 for chat models
  if [[ -n "${CHAT_TEMPLATE:-}" ]]; then template=(); fi
fi

"${LATR_SGLANG}" eval "${engine[@]}" "${template[@]}" "${dataset[@]}" --n "${N}" \
  --temperature 0.6 --top-p 0.95 --top-k 20 --max-new-tokens "${MAX_NEW}" --output "${OUT}" "$@" \
  2>&1 | tee "${OUT%.json}.log"
