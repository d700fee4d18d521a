"""LATR from Python on the embedded SmolLM2-135M-Instruct (CPU, no server): n trajectories per prompt.

    python docs/examples/python_api.py

Prints each prompt's group as it completes: how many branches the tree made and kept, and the trajectories.
"""

from __future__ import annotations

import time

from latr_sglang.config import LATRConfig
from latr_sglang.driver import LATRSampler
from latr_sglang.engines.base import SamplingParams
from latr_sglang.engines.torch_engine import TorchEngine  # or SGLangHTTPEngine("http://...")

QUESTIONS = [
    "Using the numbers [3, 5, 7], create an equation that equals 22. Answer in <answer> </answer> tags.",
    "Using the numbers [4, 6], create an equation that equals 24. Answer in <answer> </answer> tags.",
]


def main() -> None:
    start = time.perf_counter()
    engine = TorchEngine.from_pretrained("smollm2")  # first use converts the embedded GGUF once (~35 s)
    tok = engine.tokenizer
    print(f"model loaded in {time.perf_counter() - start:.1f} s")
    config = LATRConfig.preset("countdown", tau_abs=0.1, tau_rel=0.5, lookahead_steps=(8, 16), chunk_size=8)
    sampler = LATRSampler(
        engine,
        config,
        SamplingParams(max_new_tokens=48),  # completion phase: T = 1, as in training
        engine.eos_ids,
        token_text=lambda t: tok.decode([t]),
    )
    for i, question in enumerate(QUESTIONS):
        t0 = time.perf_counter()
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": question}],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
        )
        (group,) = sampler.sample_sync([list(prompt)], n=4, step=1, seed=i)
        made = len(group.branches) - 1  # the root is a branch too
        pruned = sum(b.pruned_at is not None for b in group.branches)
        print(
            f"prompt {i + 1}/{len(QUESTIONS)}: {made} forks, {pruned} pruned, "
            f"{time.perf_counter() - t0:.1f} s"
        )
        for traj in group.trajectories:  # exactly n: tree leaves, fills, stochastic samples
            text = " ".join(tok.decode(traj.token_ids, skip_special_tokens=True).split())
            print(f"  {traj.origin:10} parent={traj.parent} birth={traj.birth_step}: {text[:120]}")
    engine.close_sync()
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
