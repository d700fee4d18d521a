"""`latr-sglang` command line: sample (LATR vs stochastic), serve."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

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
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the sampling (and of unseeded engine requests)"
    )


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


def _engine_and_tokenizer(args: argparse.Namespace):
    """An SGLang server's engine (--server URL) or a local torch engine; with its tokenizer and EOS ids."""
    if args.server:
        from latr_sglang.engines.sglang_http import SGLangHTTPEngine
        from latr_sglang.frontend import tokenizer_for_server

        tokenizer = tokenizer_for_server(args.server)
        return SGLangHTTPEngine(args.server), tokenizer, {tokenizer.eos_token_id} - {None}
    engine = _make_engine(args)
    return engine, engine.tokenizer, engine.eos_ids


def cmd_eval(args: argparse.Namespace) -> int:
    """n samples per prompt of a bundled eval set (or a JSONL), scored: pass@k, mean@k, lengths, distinct."""
    from latr_sglang.engines.base import SamplingParams
    from latr_sglang.evaluate import evaluate, load_eval_set, write_results

    items = load_eval_set(args.dataset, args.limit)
    sampling = SamplingParams(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k
    )
    sampling.validate()
    engine, tokenizer, _ = _engine_and_tokenizer(args)
    try:
        metrics = evaluate(
            engine,
            tokenizer,
            items,
            n=args.n,
            sampling=sampling,
            chat=not args.no_chat_template,
            response_prefix=args.response_prefix,
            seed=args.seed,
        )
    finally:
        if not args.server:
            engine.close_sync()
    results = {"model": args.server or args.model, "dataset": args.dataset, **metrics}
    print(json.dumps(results, indent=2))
    if args.output:
        write_results(args.output, results)
        print(f"wrote {args.output}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Training logs of one or more runs -> one CSV and PNG plots, side by side."""
    from latr_sglang.report import report

    combined, images = report(args.run_dirs, args.output)
    print(f"wrote {combined}")
    for image in images:
        print(f"wrote {image}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from latr_sglang.server import create_app

    engine = _make_engine(args)
    print(f"serving {engine.model_path} on http://{args.host}:{args.port} (SGLang /generate API)", flush=True)
    uvicorn.run(create_app(engine), host=args.host, port=args.port, log_level=args.log_level)
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
    engine, tokenizer, eos_ids = _engine_and_tokenizer(args)
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

    evaluation = sub.add_parser("eval", help="evaluate a policy: pass@k, mean@k, lengths, distinct answers")
    _engine_args(evaluation)
    evaluation.add_argument("--server", default=None, help="an SGLang server URL instead of a local engine")
    evaluation.add_argument(
        "--dataset", default="countdown", help="countdown, math500, amc23, aime24, olympiadbench, or a JSONL"
    )
    evaluation.add_argument("--limit", type=int, default=None, help="first N prompts only")
    evaluation.add_argument("--n", type=int, default=8, help="samples per prompt (pass@k for k <= n)")
    evaluation.add_argument("--max-new-tokens", type=int, default=1024)
    evaluation.add_argument("--temperature", type=float, default=1.0)
    evaluation.add_argument("--top-p", type=float, default=1.0)
    evaluation.add_argument("--top-k", type=int, default=-1)
    evaluation.add_argument("--no-chat-template", action="store_true", help="send prompts as raw text")
    evaluation.add_argument("--response-prefix", default="", help="text the assistant's turn starts with")
    evaluation.add_argument("--output", default="", help="results JSON path")
    evaluation.set_defaults(func=cmd_eval)

    reporting = sub.add_parser("report", help="training logs of runs -> one CSV and PNG plots")
    reporting.add_argument("run_dirs", nargs="+", help="run directories (metrics.csv or TensorBoard events)")
    reporting.add_argument("--output", default="outputs/report", help="folder for the CSV and PNGs")
    reporting.set_defaults(func=cmd_report)

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
