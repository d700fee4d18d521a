"""Update time with and without computing each group's shared prompt once, side by side in one process.

    python -m latr_sglang.bench.shared_prefix        # the main job's settings: SmolLM2, 4 x 8, 14 new
    python -m latr_sglang.bench.shared_prefix --model tiny --groups 2 --n 4 --json /tmp/sp.json

One update = forward + backward of a policy-gradient loss (sum of log-probs x advantages) over every group's
n responses. "unshared" forwards n copies of prompt + response (what the update does today); "shared" runs
openrlhf_ext.shared_prefix (one prompt forward per group, its KV repeated to the n responses). Responses are
random tokens of the job's length: the cost of an update does not depend on which tokens they are. The two
alternate for --repeats rounds; the best time of each is compared (`update_speedup`, unshared / shared).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from latr_sglang.bench.rollout import bench_device, peak_gpu_mb, peak_rss_mb, write_json


def main(argv: list[str] | None = None) -> dict:
    from latr_sglang.models import load_model_and_tokenizer
    from latr_sglang.tasks.prompts import encode_prompts
    from latr_sglang.tiny import make_tiny_model
    from openrlhf_ext.shared_prefix import shared_prefix_logprobs, unshared_logprobs

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="'smollm2', 'tiny' or a local folder")
    ap.add_argument("--groups", type=int, default=4, help="prompts per step")
    ap.add_argument("--n", type=int, default=8, help="samples per prompt")
    ap.add_argument("--task", default="countdown-fewshot", help="built-in task of the prompts (main job's)")
    ap.add_argument("--response-tokens", type=int, default=14)
    ap.add_argument("--response-prefix", default=" <answer>", help="the assistant's prefill (main job)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the figures here (JSON)")
    ap.add_argument("--device", default=bench_device(), help="cpu or cuda ($LATR_BENCH_DEVICE, else cpu)")
    args = ap.parse_args(argv)

    from latr_sglang.tasks.prompts import task_problems

    path = make_tiny_model(tempfile.mkdtemp(prefix="latr-tiny-")) if args.model == "tiny" else args.model
    model, tok, _ = load_model_and_tokenizer(path, device=args.device)
    model.train()
    texts = [p for p, _ in task_problems(args.task, args.groups, seed=args.seed)]
    chat = args.task != "countdown-fewshot"  # the few-shot prompt is raw, as in the main job
    prompts = encode_prompts(tok, texts, chat=chat, response_prefix=args.response_prefix)
    g = torch.Generator().manual_seed(args.seed)
    vocab = model.config.vocab_size
    responses = [
        [torch.randint(0, vocab, (args.response_tokens,), generator=g).tolist() for _ in range(args.n)]
        for _ in prompts
    ]
    advantages = [[float(torch.randn(1, generator=g)) for _ in range(args.n)] for _ in prompts]

    def update(fn) -> float:
        model.zero_grad(set_to_none=True)
        sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
        sync()
        t0 = time.perf_counter()
        logps = fn(model, prompts, responses)
        loss = -sum(lp.sum() * a for lps, ads in zip(logps, advantages) for lp, a in zip(lps, ads))
        loss.backward()
        sync()
        return time.perf_counter() - t0

    update(shared_prefix_logprobs)  # warm-up (lazy imports, allocator)
    times: dict[str, list[float]] = {"unshared": [], "shared": []}
    for _ in range(args.repeats):
        times["unshared"].append(update(unshared_logprobs))
        times["shared"].append(update(shared_prefix_logprobs))
    best = {k: min(v) for k, v in times.items()}
    prompt_tokens = sum(map(len, prompts)) / len(prompts)
    figures = {
        "benchmark": "shared_prefix",
        "settings": vars(args),
        "mean_prompt_tokens": prompt_tokens,
        "update_s": times,
        "update_speedup": best["unshared"] / best["shared"],
        "tokens_forwarded": {
            "unshared": args.groups * args.n * (prompt_tokens + args.response_tokens),
            "shared": args.groups * (prompt_tokens + args.n * args.response_tokens),
        },
        "peak_rss_mb": peak_rss_mb(),
        "peak_gpu_mb": peak_gpu_mb(),
    }
    print(
        f"{args.model}: {args.groups} groups x n={args.n}, prompt {prompt_tokens:.0f} tokens (mean), "
        f"{args.response_tokens} response tokens; forward + backward of the update\n"
        f"| | unshared (n copies of the prompt) | shared prompt |\n|---|---|---|\n"
        f"| update time, best of {args.repeats} (s) | {best['unshared']:.2f} | {best['shared']:.2f} |\n"
        f"| tokens forwarded | {figures['tokens_forwarded']['unshared']:.0f} | "
        f"{figures['tokens_forwarded']['shared']:.0f} |\n"
        f"speed-up {figures['update_speedup']:.2f}x"
    )
    if args.json:
        write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
