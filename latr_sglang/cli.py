"""`latr-sglang` command line: sample (LATR vs stochastic), serve, demo."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


from latr_sglang.config import add_latr_arguments


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2", help="local HF folder, or 'smollm2' (embedded default)")
    p.add_argument(
        "--dtype", default="auto", help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, float64"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--max-batch-size", type=int, default=64, help="sequences decoded together per step")
    p.add_argument("--prefix-cache-mb", type=float, default=1024.0, help="memory bound of the prefix cache")
    p.add_argument("--context-length", type=int, default=None, help="override the model's context length")
    p.add_argument("--seed", type=int, default=0, help="seed for requests that carry none")


def _make_engine(args: argparse.Namespace):
    from latr_sglang.engines.torch_engine import TorchEngine

    return TorchEngine.from_pretrained(
        args.model,
        dtype=args.dtype,
        device=args.device,
        max_batch_size=args.max_batch_size,
        prefix_cache_mb=args.prefix_cache_mb,
        context_length=args.context_length,
        seed=args.seed,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from latr_sglang.server import create_app

    engine = _make_engine(args)
    print(f"serving {engine.model_path} on http://{args.host}:{args.port} (SGLang /generate API)", flush=True)
    uvicorn.run(create_app(engine), host=args.host, port=args.port, log_level=args.log_level)
    engine.close_sync()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Rollout demo: n sampled responses per prompt from the embedded default model, with throughput."""
    from tqdm import tqdm

    from latr_sglang.engines.base import GenerateRequest, SamplingParams

    t0 = time.perf_counter()
    engine = _make_engine(args)
    tok = engine.tokenizer
    print(f"loaded {engine.model_path} in {time.perf_counter() - t0:.1f}s", flush=True)
    prompts = args.prompt or [
        "Using the numbers [3, 5, 7], create an equation that equals 22. Put it in <answer></answer> tags.",
        "What is the capital of France?",
    ]
    requests = []
    for p in prompts:
        ids = tok.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        for i in range(args.n):
            sp = SamplingParams(
                max_new_tokens=args.max_new_tokens, temperature=args.temperature, sampling_seed=i
            )
            requests.append(GenerateRequest(tuple(ids), sp))
    outputs = [None] * len(requests)
    bar = tqdm(total=len(requests), desc="sampling", unit="seq")
    t0 = time.perf_counter()

    def collect(i):
        def done(out):
            outputs[i] = out
            bar.update()

        return done

    import threading

    finished = threading.Semaphore(0)
    for i, r in enumerate(requests):
        cb = collect(i)
        engine.submit(r, lambda out, cb=cb: (cb(out), finished.release()))
    for _ in requests:
        finished.acquire()
    bar.close()
    elapsed = time.perf_counter() - t0
    n_tokens = sum(o.completion_tokens for o in outputs)
    for j, p in enumerate(prompts):
        print(f"\n=== {p}")
        for o in outputs[j * args.n : (j + 1) * args.n]:
            text = tok.decode(o.output_ids, skip_special_tokens=True).strip().replace("\n", " ")
            print(f"  [{o.finish_reason.value:6}] {text[:160]}")
    print(
        f"\n{len(outputs)} responses, {n_tokens} tokens in {elapsed:.1f}s ({n_tokens / elapsed:.1f} tok/s); "
        f"prefix cache served {engine.stats['cached_tokens']} prompt tokens"
    )
    engine.close_sync()
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """LATR vs stochastic sampling on the same prompts, n and engine: JSONL out, a table on stdout."""
    from tqdm import tqdm

    from latr_sglang.compare import (
        builtin_countdown_prompts,
        comparison_table,
        encode_prompts,
        load_prompts,
        run_arm,
        write_jsonl,
    )
    from latr_sglang.config import latr_config_from_args
    from latr_sglang.driver import LATRSampler
    from latr_sglang.engines.base import SamplingParams

    cfg = latr_config_from_args(args, default_preset="countdown")
    texts = (
        load_prompts(args.prompts, args.input_key)
        if args.prompts
        else builtin_countdown_prompts(args.num_prompts)
    )
    sampling = SamplingParams(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k
    )
    sampling.validate()
    if args.server:
        from latr_sglang.engines.sglang_http import SGLangHTTPEngine
        from latr_sglang.frontend import _tokenizer_for

        engine = SGLangHTTPEngine(args.server)
        tokenizer = _tokenizer_for(args.server)
        eos_ids = {tokenizer.eos_token_id} - {None}
    else:
        engine = _make_engine(args)
        tokenizer = engine.tokenizer
        eos_ids = engine.eos_ids
    prompts = encode_prompts(tokenizer, texts, chat=not args.no_chat_template)
    sampler = LATRSampler(engine, cfg, sampling, eos_ids, lambda t: tokenizer.decode([t]))
    arms = []
    plan = [("latr", args.eta)] + ([] if args.no_baseline else [("stochastic", 0.0)])
    for name, eta in plan:
        with tqdm(total=len(prompts), desc=f"{name:10}", unit="prompt") as bar:
            arms.append(run_arm(name, sampler, prompts, args.n, eta, args.seed, args.prompts_per_batch, bar))
        if not args.server:
            engine.flush_cache_sync()  # the second arm must not profit from the first one's cache
    table, _ = comparison_table(arms)
    print(f"\n{len(prompts)} prompts x n={args.n}, {args.max_new_tokens} new tokens max, LATR eta={args.eta}")
    print(table)
    if args.output:
        rows = write_jsonl(args.output, arms, texts, tokenizer)
        print(f"wrote {rows} trajectories to {args.output}")
    if not args.server:
        engine.close_sync()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latr-sglang", description="LATR tree rollouts over SGLang")
    parser.add_argument("--log-level", default="warning")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the torch engine with SGLang's HTTP API")
    _engine_args(serve)
    serve.add_argument("--host", default="127.0.0.1", help="bind address (127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=30000)
    serve.set_defaults(func=cmd_serve)

    sample = sub.add_parser("sample", help="LATR vs stochastic sampling, side by side, trajectories to JSONL")
    _engine_args(sample)
    sample.add_argument(
        "--server", default=None, help="an SGLang server URL to use instead of a local engine"
    )
    sample.add_argument(
        "--prompts", default=None, help="JSONL file of prompts (default: built-in countdown set)"
    )
    sample.add_argument("--input-key", default="prompt", help="JSONL key of the prompt text")
    sample.add_argument("--num-prompts", type=int, default=8, help="size of the built-in prompt set")
    sample.add_argument("--no-chat-template", action="store_true", help="send prompts as raw text")
    sample.add_argument("--n", type=int, default=8, help="trajectories per prompt")
    sample.add_argument("--eta", type=float, default=1.0, help="share of the n from the tree (mix ratio)")
    sample.add_argument("--max-new-tokens", type=int, default=256)
    sample.add_argument("--temperature", type=float, default=1.0, help="completion-phase sampling")
    sample.add_argument("--top-p", type=float, default=1.0)
    sample.add_argument("--top-k", type=int, default=-1)
    sample.add_argument("--prompts-per-batch", type=int, default=8, help="prompts sampled together")
    sample.add_argument("--no-baseline", action="store_true", help="skip the stochastic run")
    sample.add_argument("--output", default="trajectories.jsonl", help="JSONL output ('' to skip)")
    add_latr_arguments(sample)
    sample.set_defaults(func=cmd_sample)

    demo = sub.add_parser("demo", help="sample a few responses from the embedded default model")
    _engine_args(demo)
    demo.add_argument("--prompt", action="append", help="a user message (repeatable)")
    demo.add_argument("--n", type=int, default=4, help="responses per prompt")
    demo.add_argument("--max-new-tokens", type=int, default=96)
    demo.add_argument("--temperature", type=float, default=1.0)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as e:  # bad input: a message naming it, no traceback
        print(f"latr-sglang: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
