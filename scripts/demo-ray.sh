#!/usr/bin/env bash
# The main job (scripts/demo-cpu.sh: DAPO + LATR, countdown with two numbers and the few-shot prompt, the
# embedded SmolLM2-135M-Instruct) through OpenRLHF's own Ray trainer on the CPU (`--trainer.device cpu`):
# real Ray actors, DeepSpeed (ZeRO-2, CPU accelerator, gloo), the reference model colocated with the actor,
# one LATR torch-engine actor, OpenRLHF's weight broadcast after every step. A debugging/CI run of the
# distributed path, smaller than `make demo`: a dataset of PROMPTS prompts, PROMPTS_PER_STEP prompts x 8 per step;
# OpenRLHF trains through the dataset once, so the step count is what the prompts make after DAPO's dynamic
# sampling has dropped tied groups and drawn replacements. Prints OpenRLHF's per-step metrics and a summary.
# Settings of its own, where the main job's differ: KL loss 0, dynamic sampling on the shaped reward, no
# learning-rate warm-up, no overlong filtering (ray mode's default), no stop at the newline (OpenRLHF's
# engines stop at EOS only, so responses run to 14 tokens and the reward reads the first answer line; the
# prompts end with the main job's prefill, which demo_ray_reward.py scores with the response).
# Measured on 2 idle cores (BENCHMARKS.md): 211-268 s in four runs, 7-9 steps of 2 x 8 at 20.6-26.9 s per
# step, ~45 s start-up.
#
#   scripts/demo-ray.sh [extra latr-train flags]      # OUT=outputs/demo-ray PROMPTS=18 PROMPTS_PER_STEP=2
# OUT is deleted and made anew on every run.
set -euo pipefail
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-${REPO_DIR}/.venv/bin}"
OUT="${OUT:-${REPO_DIR}/outputs/demo-ray}"
PROMPTS="${PROMPTS:-18}"
PROMPTS_PER_STEP="${PROMPTS_PER_STEP:-2}"
N=8
SAMPLER="${SAMPLER:-latr}"
sampler=(--rollout.sampler "${SAMPLER}")
if [[ "${SAMPLER}" == latr ]]; then
  sampler+=(--latr.preset small)  # the main job's preset (scripts/demo-cpu.sh)
fi

rm -rf "${OUT}" && mkdir -p "${OUT}"
MODEL="$("${BIN}/python" -c 'from latr_sglang.models import embedded_model_dir as d; print(d())')"
# the prompts: the main job's task, with the assistant's prefill at the end (OpenRLHF has no prefill;
# scripts/demo_ray_reward.py scores the response with it)
"${BIN}/python" - "${OUT}/prompts.jsonl" "${PROMPTS}" <<'PY'
import json, sys
from latr_sglang.tasks.countdown_fewshot import RESPONSE_PREFIX
from latr_sglang.tasks.prompts import task_problems
with open(sys.argv[1], "w") as f:
    for prompt, label in task_problems("countdown-fewshot", int(sys.argv[2]), seed=1):
        f.write(json.dumps({"prompt": prompt + RESPONSE_PREFIX, "label": label}) + "\n")
PY

start=$(date +%s)
# One optimizer update per rollout, as the released runs: --train.batch_size counts samples (prompts x 8).
"${BIN}/latr-train" --trainer.device cpu --rollout.backend torch --vllm.num_engines 1 \
  --actor.model_name_or_path "${MODEL}" --reward.remote_url "${REPO_DIR}/scripts/demo_ray_reward.py" \
  --actor.num_gpus_per_node 1 --ref.num_gpus_per_node 1 --train.colocate_actor_ref \
  --data.prompt_dataset "${OUT}/prompts.jsonl" --data.input_key prompt --data.label_key label \
  --data.max_samples "${PROMPTS}" --data.max_len 512 \
  --rollout.batch_size "${PROMPTS_PER_STEP}" --rollout.n_samples_per_prompt "${N}" --rollout.max_new_tokens 14 \
  --rollout.micro_batch_size 8 --train.batch_size "$(( PROMPTS_PER_STEP * N ))" --train.micro_batch_size 8 \
  --algo.advantage.estimator group_norm --algo.kl.init_coef 0 \
  --algo.dynamic_filtering_enable --dapo.dynamic_filtering_metric reward --dapo.max_sampling_rounds 3 \
  "${sampler[@]}" \
  --actor.adam.lr 3e-5 --actor.lr_warmup_ratio 0 --actor.eps_clip_low_high 0.2 0.28 \
  --ds.zero_stage 2 --ds.attn_implementation sdpa --train.seed 42 \
  --ckpt.output_dir "${OUT}/policy" --ckpt.path "${OUT}/ckpt" \
  --logger.logging_steps 1 --logger.tensorboard_dir "${OUT}/tensorboard" "$@" 2>&1 | tee "${OUT}/train.log" \
  | grep --line-buffered -E "Global step|dynamic sampling|Error" || true
status=${PIPESTATUS[0]}
elapsed=$(( $(date +%s) - start ))
"${BIN}/python" - "${OUT}" "${elapsed}" "${status}" <<'PY'
import json, sys
from pathlib import Path
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
out, elapsed, status = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
steps = {}
for events in out.joinpath("tensorboard").rglob("events.out.tfevents.*"):
    acc = EventAccumulator(str(events)); acc.Reload()
    for tag in acc.Tags()["scalars"]:
        for ev in acc.Scalars(tag):
            steps.setdefault(ev.step, {})[tag.removeprefix("train/")] = ev.value
cols = ["reward", "score", "dynamic_filtering_pass_rate", "policy_loss", "latr/branches_created",
        "timing/generation", "timing/make_experience", "timing/ppo_train", "timing/broadcast", "timing/step_total"]
print("step " + " ".join(f"{c.split('/')[-1][:12]:>12}" for c in cols))
for s in sorted(steps):
    print(f"{s:4d} " + " ".join(f"{steps[s].get(c, float('nan')):12.4f}" for c in cols))
summary = {"exit_status": status, "wall_s": elapsed, "steps": len(steps),
           "reward_first": steps[min(steps)].get("reward") if steps else None,
           "reward_last": steps[max(steps)].get("reward") if steps else None,
           "step_time_mean_s": (sum(m.get("timing/step_total", 0) for m in steps.values()) / len(steps)) if steps else None}
out.joinpath("summary.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary))
if status == 0 and not steps:
    print(f"error: no training step was logged (see {out / 'train.log'})", file=sys.stderr)
    sys.exit(3)
PY
exit "${status}"
