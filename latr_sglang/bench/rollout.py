"""LATR vs stochastic sampling on the same engine, prompts and n, side by side in one process.

    python -m latr_sglang.bench.rollout          # SmolLM2-135M, 32 countdown prompts, n=8, 256 tokens
    python -m latr_sglang.bench.rollout --model tiny --num-prompts 8

Reports the wall-time ratio, decoded tokens per delivered token, engine requests, the driver's CPU time as a
share of the wall time (the thread running the driver's event loop; the engine computes on its own thread),
and the diversity figures of both samplers.
"""

from __future__ import annotations

import argparse
import json
import tempfile

from tqdm import tqdm

from latr_sglang.compare import builtin_countdown_prompts, comparison_table, encode_prompts, run_arm
from latr_sglang.config import LATRConfig
from latr_sglang.driver import LATRSampler
from latr_sglang.engines.base import SamplingParams
from latr_sglang.engines.torch_engine import TorchEngine
from latr_sglang.tiny import make_tiny_model


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="'smollm2', 'tiny' or a local folder")
    ap.add_argument("--num-prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--preset", default="countdown")
    ap.add_argument("--prompts-per-batch", type=int, default=8)
    ap.add_argument("--max-batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args(argv)

    path = make_tiny_model(tempfile.mkdtemp(prefix="latr-tiny-")) if args.model == "tiny" else args.model
    engine = TorchEngine.from_pretrained(path, max_batch_size=args.max_batch_size)
    tok = engine.tokenizer
    prompts = encode_prompts(tok, builtin_countdown_prompts(args.num_prompts, args.seed), chat=True)
    cfg = LATRConfig.preset(args.preset)
    sampler = LATRSampler(
        engine,
        cfg,
        SamplingParams(max_new_tokens=args.max_new_tokens),
        engine.eos_ids,
        lambda t: tok.decode([t]),
    )
    arms = []
    # stochastic first, then LATR; each starts from an empty prefix cache
    for name, eta in (("stochastic", 0.0), ("latr", 1.0)):
        engine.flush_cache_sync()
        with tqdm(total=len(prompts), desc=name, unit="prompt") as bar:
            arms.append(run_arm(name, sampler, prompts, args.n, eta, args.seed, args.prompts_per_batch, bar))
    engine.close_sync()
    arms.reverse()  # print LATR first: the ratios read LATR / stochastic
    table, columns = comparison_table(arms)
    print(
        f"\n{args.model}: {len(prompts)} countdown prompts x n={args.n}, "
        f"<= {args.max_new_tokens} new tokens, preset {args.preset}, eta 1.0 vs 0.0, "
        f"one engine (max batch {args.max_batch_size})"
    )
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(columns, f, indent=2)


if __name__ == "__main__":
    main()
