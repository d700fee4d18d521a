"""Update (and reference forward) time with and without computing shared tokens once, side by side.

    python -m latr_sglang.bench.shared_prefix                     # main job's settings, LATR's samples
    python -m latr_sglang.bench.shared_prefix --responses random  # no response shares a token with another
    python -m latr_sglang.bench.shared_prefix --model tiny --groups 2 --n 4 --json /tmp/sp.json

One update = forward + backward of a policy-gradient loss (sum of log-probs x advantages) over every group's
n responses; the reference model's pass = the same forward under torch.no_grad(). Both in one micro-batch
(the main job's micro_batch_size 32 = 4 groups x 8). Three arms, alternating for --repeats rounds, the best
time of each compared against "unshared":
  unshared   every row forwards its own prompt + response (the usual update)
  prompts    the prompt tokens rows share are forwarded once, every response in full
  tree       openrlhf_ext.shared_prefix.PrefixTree: prompts and response prefixes shared (the update today)
--responses latr samples the responses with the LATR driver on the torch engine, the main job's way (preset
small, eta 1, its prompt, prefix and length), so branches share their real prefixes and identical answers
their whole response; --responses random draws random tokens of --response-tokens each (nothing shared past
the prompt). Log-probs of all three agree (tests/openrlhf_ext/test_shared_prefix.py: to 1e-5, float64).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from latr_sglang.argtypes import (
    bench_parser,
    check_output_flags,
    device_argument,
    model_argument,
    positive_int,
    seed_int,
)
from latr_sglang.bench.rollout import bench_device, peak_gpu_mb, peak_rss_mb, write_json


def _latr_responses(path: str, prompts: list[list[int]], args: argparse.Namespace) -> list[list[list[int]]]:
    from latr_sglang.config import LATRConfig
    from latr_sglang.driver import LATRSampler
    from latr_sglang.engines.base import SamplingParams
    from latr_sglang.engines.torch_engine import TorchEngine

    engine = TorchEngine.from_pretrained(path, device=args.device)
    sampler = LATRSampler(
        engine,
        LATRConfig.preset(args.preset),
        SamplingParams(max_new_tokens=args.response_tokens),
        engine.eos_ids,
        lambda t: engine.tokenizer.decode([t]),
    )
    groups = sampler.sample_sync(prompts, args.n, eta=1.0, seed=args.seed)
    engine.close_sync()
    forks = sum(max(len(g.branches) - 1, 0) for g in groups) / max(len(groups), 1)
    print(f"sampled with LATR (preset {args.preset}): {forks:.2f} branches created per prompt")
    return [[list(t.token_ids) for t in g.trajectories] for g in groups]


def main(argv: list[str] | None = None) -> dict:
    from latr_sglang.models import load_model_and_tokenizer
    from latr_sglang.tasks.prompts import encode_prompts, task_problems
    from latr_sglang.tiny import make_tiny_model
    from openrlhf_ext.shared_prefix import PrefixTree, shared_prefix_logprobs, unshared_logprobs

    ap = bench_parser(__doc__)
    ap.add_argument(
        "--model", type=model_argument, default="smollm2", help="'smollm2', 'tiny' or a local folder"
    )
    ap.add_argument("--groups", type=positive_int, default=4, help="prompts per step")
    ap.add_argument("--n", type=positive_int, default=8, help="samples per prompt")
    ap.add_argument("--task", default="countdown-fewshot", help="built-in task of the prompts (main job's)")
    ap.add_argument("--responses", choices=("latr", "random"), default="latr", help="see above")
    ap.add_argument("--preset", default="small", help="LATR preset of --responses latr (main job's)")
    ap.add_argument(
        "--response-tokens", type=positive_int, default=14, help="length (random) / max new tokens (latr)"
    )
    ap.add_argument("--response-prefix", default=" <answer>", help="the assistant's prefill (main job)")
    ap.add_argument("--repeats", type=positive_int, default=2)
    ap.add_argument("--seed", type=seed_int, default=0)
    ap.add_argument("--json", default=None, help="also write the figures here (JSON)")
    ap.add_argument(
        "--device",
        type=device_argument,
        default=bench_device(),
        help="cpu or cuda ($LATR_BENCH_DEVICE, else cpu)",
    )
    args = ap.parse_args(argv)
    check_output_flags(ap, json=args.json)

    path = make_tiny_model(tempfile.mkdtemp(prefix="latr-tiny-")) if args.model == "tiny" else args.model
    model, tok, _ = load_model_and_tokenizer(path, device=args.device)
    model.train()
    texts = [p for p, _ in task_problems(args.task, args.groups, seed=args.seed)]
    chat = args.task != "countdown-fewshot"  # the few-shot prompt is raw, as in the main job
    prompts = encode_prompts(tok, texts, chat=chat, response_prefix=args.response_prefix)
    g = torch.Generator().manual_seed(args.seed)
    if args.responses == "latr":
        responses = _latr_responses(path, prompts, args)
    else:
        vocab = model.config.vocab_size
        responses = [
            [torch.randint(0, vocab, (args.response_tokens,), generator=g).tolist() for _ in range(args.n)]
            for _ in prompts
        ]
    advantages = [[float(torch.randn(1, generator=g)) for _ in range(args.n)] for _ in prompts]
    arms = {
        "unshared": unshared_logprobs,
        "prompts": lambda m, p, r: shared_prefix_logprobs(m, p, r, share_responses=False),
        "tree": shared_prefix_logprobs,
    }

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    def update(fn) -> float:
        model.zero_grad(set_to_none=True)
        sync()
        t0 = time.perf_counter()
        logps = fn(model, prompts, responses)
        loss = -sum(lp.sum() * a for lps, ads in zip(logps, advantages) for lp, a in zip(lps, ads))
        loss.backward()
        sync()
        return time.perf_counter() - t0

    def reference_forward(fn) -> float:  # the reference model's pass: forward only, no graph
        sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            fn(model, prompts, responses)
        sync()
        return time.perf_counter() - t0

    update(shared_prefix_logprobs)  # warm-up (lazy imports, allocator)
    times: dict[str, list[float]] = {name: [] for name in arms}
    ref_times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.repeats):
        for name, fn in arms.items():
            times[name].append(update(fn))
            ref_times[name].append(reference_forward(fn))
    best = {k: min(v) for k, v in times.items()}
    ref_best = {k: min(v) for k, v in ref_times.items()}
    rows = [(p, r) for p, rs in zip(prompts, responses) for r in rs]
    row_p, row_r = [p for p, _ in rows], [r for _, r in rows]
    tree = PrefixTree(row_p, row_r)
    tokens = {
        "unshared": tree.row_tokens,
        "prompts": PrefixTree(row_p, row_r, share_responses=False).forwarded_tokens,
        "tree": tree.forwarded_tokens,
    }
    figures = {
        "benchmark": "shared_prefix",
        "settings": vars(args),
        "mean_prompt_tokens": sum(map(len, prompts)) / len(prompts),
        "mean_response_tokens": sum(map(len, row_r)) / len(row_r),
        "update_s": times,
        "tokens_forwarded": tokens,
        "update_speedup": best["unshared"] / best["tree"],
        "update_speedup_prompts_only": best["unshared"] / best["prompts"],
        "reference_forward_s": ref_times,
        "reference_speedup": ref_best["unshared"] / ref_best["tree"],
        "peak_rss_mb": peak_rss_mb(),
        "peak_gpu_mb": peak_gpu_mb(),
    }
    print(
        f"{args.model}: {args.groups} groups x n={args.n}, prompt {figures['mean_prompt_tokens']:.0f} "
        f"tokens, response {figures['mean_response_tokens']:.1f} tokens (mean, {args.responses}); forward + "
        f"backward of the update\n| | unshared | prompts shared | prompts + responses shared (tree) |\n"
        f"|---|---|---|---|\n"
        f"| update time, best of {args.repeats} (s) | {best['unshared']:.2f} | {best['prompts']:.2f} | "
        f"{best['tree']:.2f} |\n"
        f"| reference forward (no grad), best of {args.repeats} (s) | {ref_best['unshared']:.2f} | "
        f"{ref_best['prompts']:.2f} | {ref_best['tree']:.2f} |\n"
        f"| tokens forwarded | {tokens['unshared']} | {tokens['prompts']} | {tokens['tree']} |\n"
        f"| update speed-up vs unshared | 1.00x | {figures['update_speedup_prompts_only']:.2f}x | "
        f"{figures['update_speedup']:.2f}x |\n"
        f"| reference speed-up vs unshared | 1.00x | {ref_best['unshared'] / ref_best['prompts']:.2f}x | "
        f"{figures['reference_speedup']:.2f}x |"
    )
    if args.json:
        write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
