"""Torch reference engine vs Hugging Face `generate`, side by side in one process.

    python -m latr_sglang.bench.engine                      # SmolLM2-135M (embedded) and a tiny model
    python -m latr_sglang.bench.engine --models tiny --batch 16 --new-tokens 64

Prints, per model: decode throughput of both at the same batch, prompts and lengths (sampling at T=1, EOS
ignored so both produce exactly the same number of tokens) and their ratio; then the prefix-cache effect: one
request of L tokens vs the same L tokens produced as L/K continuation requests of K tokens each.
`--json PATH` writes the figures (speedup, chunked_ratio, peak_rss_mb, ...).
"""

from __future__ import annotations

import tempfile
import time

import torch

from latr_sglang.argtypes import (
    bench_parser,
    check_output_flags,
    device_argument,
    model_argument,
    positive_int,
)
from latr_sglang.bench.rollout import bench_device
from latr_sglang.engines.base import GenerateRequest, SamplingParams
from latr_sglang.engines.torch_engine import TorchEngine
from latr_sglang.models import load_model_and_tokenizer
from latr_sglang.tiny import make_tiny_model

PROMPTS = [
    "Using the numbers [19, 36, 55, 7], create an equation that equals 65.",
    "What is the capital of France? Explain briefly.",
    "Write a short poem about the sea.",
    "Solve step by step: what is 17 * 23 - 4?",
]


def chat_prompts(tokenizer, n: int) -> list[list[int]]:
    out = []
    for i in range(n):
        msgs = [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]
        out.append(
            list(
                tokenizer.apply_chat_template(
                    msgs, add_generation_prompt=True, tokenize=True, return_dict=False
                )
            )
        )
    return out


def bench_hf_generate(hf_model, tokenizer, prompts: list[list[int]], new_tokens: int) -> float:
    """Seconds for HF generate on the left-padded batch, sampling exactly `new_tokens` tokens each."""
    width = max(map(len, prompts))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(hf_model.parameters()).device
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = hf_model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=pad,
        )
    elapsed = time.perf_counter() - t0
    assert out.shape[1] == width + new_tokens
    return elapsed


def bench_engine(engine: TorchEngine, prompts: list[list[int]], new_tokens: int) -> float:
    engine.flush_cache_sync()
    reqs = [
        GenerateRequest(tuple(p), SamplingParams(max_new_tokens=new_tokens, ignore_eos=True, sampling_seed=i))
        for i, p in enumerate(prompts)
    ]
    t0 = time.perf_counter()
    outs = engine.generate_sync(reqs)
    elapsed = time.perf_counter() - t0
    assert all(len(o.output_ids) == new_tokens for o in outs)
    return elapsed


def bench_chunked(engine: TorchEngine, prompt: list[int], total: int, chunk: int) -> tuple[float, float, int]:
    """(seconds for one request of `total` tokens, seconds for total/chunk continuation requests, cached)."""
    greedy = SamplingParams(max_new_tokens=total, temperature=0.0, ignore_eos=True)
    engine.flush_cache_sync()
    t0 = time.perf_counter()
    whole = engine.generate_sync([GenerateRequest(tuple(prompt), greedy)])[0]
    one_shot = time.perf_counter() - t0
    engine.flush_cache_sync()
    ids = list(prompt)
    cached = 0
    t0 = time.perf_counter()
    for _ in range(total // chunk):
        sp = SamplingParams(max_new_tokens=chunk, temperature=0.0, ignore_eos=True)
        out = engine.generate_sync([GenerateRequest(tuple(ids), sp)])[0]
        ids += out.output_ids
        cached += out.cached_tokens
    chunked = time.perf_counter() - t0
    assert ids[len(prompt) :] == whole.output_ids, "chunked greedy continuation diverged from one request"
    return one_shot, chunked, cached


def main(argv: list[str] | None = None) -> None:
    ap = bench_parser(__doc__)
    ap.add_argument(
        "--models",
        nargs="+",
        type=model_argument,
        default=["smollm2", "tiny"],
        help="'smollm2', 'tiny' or local folders",
    )
    ap.add_argument("--batch", type=positive_int, default=16)
    ap.add_argument("--new-tokens", type=positive_int, default=64)
    ap.add_argument("--chunk-total", type=positive_int, default=256)
    ap.add_argument("--chunk", type=positive_int, default=32)
    ap.add_argument("--json", default=None, help="also write the figures here (JSON, one entry per model)")
    ap.add_argument(
        "--device",
        type=device_argument,
        default=bench_device(),
        help="cpu or cuda ($LATR_BENCH_DEVICE, else cpu)",
    )
    args = ap.parse_args(argv)
    check_output_flags(ap, json=args.json)
    rows = []
    for name in args.models:
        if name == "tiny":
            path = make_tiny_model(
                tempfile.mkdtemp(prefix="latr-tiny-"),
                hidden_size=256,
                num_layers=4,
                num_heads=8,
                num_kv_heads=4,
                vocab_size=384,
            )
        else:
            path = name
        hf_model, tokenizer, _ = load_model_and_tokenizer(path, device=args.device)
        n_params = sum(p.numel() for p in hf_model.parameters()) / 1e6
        engine = TorchEngine(hf_model, tokenizer)
        prompts = chat_prompts(tokenizer, args.batch)
        bench_engine(engine, prompts[:2], 4)  # warm-up both
        bench_hf_generate(hf_model, tokenizer, prompts[:2], 4)
        hf_s = bench_hf_generate(hf_model, tokenizer, prompts, args.new_tokens)
        ours_s = bench_engine(engine, prompts, args.new_tokens)
        produced = args.batch * args.new_tokens
        one, chunked, cached = bench_chunked(engine, prompts[0], args.chunk_total, args.chunk)
        engine.close_sync()
        rows.append((name, n_params, produced / hf_s, produced / ours_s, hf_s / ours_s, one, chunked, cached))
        print(
            f"{name} ({n_params:.1f}M params), batch {args.batch}, {args.new_tokens} new tokens:\n"
            f"  HF generate  {produced / hf_s:8.1f} tok/s\n"
            f"  torch engine {produced / ours_s:8.1f} tok/s   ratio {hf_s / ours_s:.2f}x\n"
            f"  {args.chunk_total} tokens in one request {one:.2f}s, as {args.chunk_total // args.chunk} "
            f"continuations of {args.chunk}: {chunked:.2f}s   ratio {chunked / one:.2f}x "
            f"({cached} prompt tokens served from the prefix cache)",
            flush=True,
        )
    if args.json:
        from latr_sglang.bench.rollout import peak_rss_mb, write_json

        write_json(
            args.json,
            {
                "benchmark": "engine",
                "settings": vars(args),
                "models": {
                    name: {
                        "params_m": n_params,
                        "hf_tok_s": hf_tps,
                        "engine_tok_s": ours_tps,
                        "speedup": ratio,
                        "one_shot_s": one,
                        "chunked_s": chunked,
                        "chunked_ratio": chunked / one,
                        "cached_tokens": cached,
                    }
                    for name, n_params, hf_tps, ours_tps, ratio, one, chunked, cached in rows
                },
                "peak_rss_mb": peak_rss_mb(),
            },
        )
    print("\n| model | batch | new tokens | HF generate tok/s | engine tok/s | speed-up | chunked/one-shot |")
    print("|---|---|---|---|---|---|---|")
    for name, n_params, hf_tps, ours_tps, ratio, one, chunked, _ in rows:
        print(
            f"| {name} ({n_params:.1f}M) | {args.batch} | {args.new_tokens} | {hf_tps:.1f} | "
            f"{ours_tps:.1f} | {ratio:.2f}x | {chunked / one:.2f}x |"
        )


if __name__ == "__main__":
    main()
