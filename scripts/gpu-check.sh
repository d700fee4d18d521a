#!/usr/bin/env bash
# What the CPU machine cannot measure, in one command on one GPU (BUDGET_S: 480 s): the torch engine on CUDA vs
# Hugging Face generate, LATR vs stochastic rollouts, the reference per-token loop vs our driver, one
# shared-prefix update vs the unshared one (time and peak GPU memory), and, where the SGLang runtime is
# installed, a launched SGLang server driven by our HTTP engine. Writes $OUT/gpu-check.json and
# $OUT/gpu-check.md (a table to paste into BENCHMARKS.md).
#
#   scripts/gpu-check.sh                 # OUT=outputs/gpu-check MODEL=<embedded SmolLM2> DEVICE=cuda
#   DRY_RUN=1 scripts/gpu-check.sh       # CPU dry path: the same steps on a tiny model, seconds each
#
# Each step runs under a limit of its own (150 s on a GPU), and the whole run under BUDGET_S: a step starts
# only with 30 s of the budget left and gets at most what is left, so the run ends within the budget (plus
# the table) whatever hangs; a step that did not run says so in the table.
set -euo pipefail
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-${REPO_DIR}/.venv/bin/python}"
[[ -x "${PY}" ]] || PY="$(command -v python)"
OUT="${OUT:-${REPO_DIR}/outputs/gpu-check}"
DRY_RUN="${DRY_RUN:-0}"
if [[ "${DRY_RUN}" == 1 ]]; then BUDGET_S="${BUDGET_S:-1200}"; else BUDGET_S="${BUDGET_S:-480}"; fi
if [[ ! "${BUDGET_S}" =~ ^[1-9][0-9]*$ ]]; then echo "gpu-check: BUDGET_S=${BUDGET_S}: expected seconds" >&2; exit 2; fi
deadline=$(( $(date +%s) + BUDGET_S ))
mkdir -p "${OUT}"
cd "${REPO_DIR}"

if [[ "${DRY_RUN}" == 1 ]]; then
  DEVICE="${DEVICE:-cpu}"; MODEL="${MODEL:-tiny}"
  engine_args=(--models tiny --batch 2 --new-tokens 4 --chunk-total 8 --chunk 4)
  rollout_args=(--model tiny --num-prompts 2 --n 2 --max-new-tokens 8)
  reference_args=(--model tiny --num-prompts 2 --n 2 --max-new-tokens 8)
  shared_args=(--model tiny --groups 2 --n 2 --repeats 1)
  limit=600
else
  DEVICE="${DEVICE:-cuda}"; MODEL="${MODEL:-smollm2}"
  "${PY}" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check: no CUDA device (DRY_RUN=1 for the CPU path)')"
  engine_args=(--models "${MODEL}" --batch 64 --new-tokens 128)
  rollout_args=(--model "${MODEL}" --num-prompts 64 --n 8 --max-new-tokens 512 --prompts-per-batch 32)
  reference_args=(--model "${MODEL}" --num-prompts 32 --n 8 --max-new-tokens 256 --prompts-per-batch 32)
  shared_args=(--model "${MODEL}" --groups 32 --n 8 --response-tokens 256 --task countdown --repeats 3)
  limit=150  # seconds per step at most; BUDGET_S bounds them all
fi
export LATR_BENCH_DEVICE="${DEVICE}"
echo "gpu-check: device ${DEVICE}, model ${MODEL}, output ${OUT}"

step() {  # step NAME MODULE ARGS...: runs one benchmark with a time limit, its JSON into $OUT/NAME.json
  local name="$1" module="$2"; shift 2
  local left=$(( deadline - $(date +%s) ))
  if (( left < 30 )); then
    echo "== ${name}: not run (${left} s of BUDGET_S=${BUDGET_S} left)"
    echo "{\"skipped\": \"out of time: ${left} s of BUDGET_S=${BUDGET_S} left\"}" >"${OUT}/${name}.json"
    return
  fi
  local this_limit=$(( left < limit ? left : limit ))
  echo "== ${name}: python -m ${module} $* (limit ${this_limit} s)"
  if timeout "${this_limit}" "${PY}" -m "${module}" "$@" --json "${OUT}/${name}.json" >"${OUT}/${name}.log" 2>&1; then
    tail -n 12 "${OUT}/${name}.log"
  else
    echo "   ${name} failed or ran past ${this_limit} s (log: ${OUT}/${name}.log)"; tail -n 5 "${OUT}/${name}.log" || true
    echo "{\"failed\": true, \"log\": \"${OUT}/${name}.log\"}" >"${OUT}/${name}.json"
  fi
}

step engine latr_sglang.bench.engine "${engine_args[@]}"
step rollout latr_sglang.bench.rollout "${rollout_args[@]}"
step reference latr_sglang.bench.reference "${reference_args[@]}"
step shared_prefix latr_sglang.bench.shared_prefix "${shared_args[@]}"
if "${PY}" -c "import sglang.srt.entrypoints.http_server" >/dev/null 2>&1 && [[ "${DRY_RUN}" != 1 ]]; then
  # tree-phase requests streamed in parts (the default) and as whole requests: which is faster on SGLang
  step sglang latr_sglang.bench.rollout "${rollout_args[@]}" --launch-sglang
  step sglang_whole latr_sglang.bench.rollout "${rollout_args[@]}" --launch-sglang --config tree_part_interval=0
else
  echo "== sglang: runtime not installed (or dry run): skipped"
  for name in sglang sglang_whole; do
    echo '{"skipped": "the SGLang runtime is not installed here"}' >"${OUT}/${name}.json"
  done
  # the same HTTP client and streamed parts against `latr-sglang serve` (the torch engine behind SGLang's API)
  [[ "${DRY_RUN}" == 1 ]] && step http latr_sglang.bench.rollout "${rollout_args[@]}" --serve-http
fi

"${PY}" - "${OUT}" "${DEVICE}" "${MODEL}" <<'EOF'
import json, pathlib, sys
out, device, model = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
parts = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if p.stem != "gpu-check"}
def get(name, *keys):
    value = parts.get(name, {})
    for k in keys:
        value = value.get(k) if isinstance(value, dict) else None
    return value
def fmt(v):
    return "-" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))
first = next(iter(get("engine", "models") or {"": {}}))
rows = [
    ("torch engine / HF generate, throughput", get("engine", "models", first, "speedup")),
    ("chunked continuations / one request", get("engine", "models", first, "chunked_ratio")),
    ("LATR / stochastic, wall time", get("rollout", "wall_ratio")),
    ("LATR / stochastic, per delivered token", get("rollout", "per_token_ratio")),
    ("ours / reference loop, throughput", get("reference", "throughput_ratio")),
    ("ours / reference loop, peak memory", get("reference", "memory_ratio")),
    ("shared / unshared prompt, update speed-up", get("shared_prefix", "update_speedup")),
    ("SGLang server: LATR / stochastic, wall time", get("sglang", "wall_ratio")),
    ("SGLang server: LATR / stochastic, per delivered token, streamed parts", get("sglang", "per_token_ratio")),
    ("SGLang server: the same, whole requests", get("sglang_whole", "per_token_ratio")),
    ("latr-sglang serve over HTTP (dry run): LATR / stochastic per token", get("http", "per_token_ratio")),
]
(out / "gpu-check.json").write_text(json.dumps({"device": device, "model": model, "parts": parts}, indent=2))
lines = [f"gpu-check on {device}, model {model}", "", "| figure | value |", "|---|---|"]
lines += [f"| {name} | {fmt(v)} |" for name, v in rows]
failed = [k for k, v in parts.items() if isinstance(v, dict) and v.get("failed")]
if failed:
    lines += ["", f"failed: {', '.join(failed)} (logs in {out})"]
late = [k for k, v in parts.items() if isinstance(v, dict) and str(v.get("skipped", "")).startswith("out of time")]
if late:
    lines += ["", f"not run, out of time: {', '.join(late)} (BUDGET_S)"]
(out / "gpu-check.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
