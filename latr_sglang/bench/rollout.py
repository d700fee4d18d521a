"""LATR vs stochastic sampling on the same engine, prompts and n, side by side in one process.

    python -m latr_sglang.bench.rollout          # SmolLM2-135M, 32 countdown prompts, n=8, 256 tokens
    python -m latr_sglang.bench.rollout --model tiny --num-prompts 8

Reports the wall-time ratio, the ratio per delivered token, decoded tokens per delivered token, engine
requests, the driver's CPU time as a share of the wall time (the thread running the driver's event loop; the
engine computes on its own thread), and the diversity figures of both samplers. `--json PATH` writes them
with `wall_ratio`, `per_token_ratio` (LATR / stochastic seconds per delivered token) and `peak_rss_mb`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

from latr_sglang.argtypes import (
    bench_parser,
    check_output_flags,
    device_argument,
    model_argument,
    non_negative_int,
    positive_int,
    seed_int,
)
from latr_sglang.bench.sweep import build_config, config_setting
from latr_sglang.compare import Arm, builtin_countdown_prompts, comparison_table, encode_prompts, run_arm
from latr_sglang.config import ConfigError
from latr_sglang.driver import LATRSampler
from latr_sglang.engines.base import SamplingParams
from latr_sglang.engines.torch_engine import TorchEngine
from latr_sglang.tiny import make_tiny_model


def add_workload_arguments(ap: argparse.ArgumentParser) -> None:
    """The workload both rollout benchmarks run (this one and bench.reference): model, countdown prompts, n
    and response length, with the same defaults."""
    ap.add_argument(
        "--model", type=model_argument, default="smollm2", help="'smollm2', 'tiny' or a local folder"
    )
    ap.add_argument("--num-prompts", type=positive_int, default=32)
    ap.add_argument("--n", type=positive_int, default=8)
    ap.add_argument("--max-new-tokens", type=positive_int, default=256)


def main(argv: list[str] | None = None) -> None:
    ap = bench_parser(__doc__)
    add_workload_arguments(ap)
    ap.add_argument("--preset", default="countdown")
    ap.add_argument(
        "--config",
        default="",
        help="LATR config overrides on the preset, 'FIELD=V,FIELD=V' as `bench.sweep --config` reads them "
        "(e.g. chunks_end_on_lookahead=false)",
    )
    ap.add_argument(
        "--prompts-per-batch",
        type=non_negative_int,
        default=0,
        help="prompts in flight at once; 0 (default): all, as OpenRLHF dispatches a rollout batch to an "
        "engine and lets its scheduler fill the batch (the runs before 2026-12-01 PM used 8)",
    )
    ap.add_argument(
        "--admission",
        choices=("batch", "window"),
        default="window",
        help="window: a new prompt starts when one finishes (as OpenRLHF drives an engine actor); batch: "
        "prompts-per-batch prompts per call, each batch waiting for its slowest group (the runs before "
        "2026-12-01)",
    )
    ap.add_argument("--max-batch-size", type=positive_int, default=64)
    ap.add_argument("--seed", type=seed_int, default=0)
    ap.add_argument(
        "--repeats",
        type=positive_int,
        default=1,
        help="rounds of both arms (round r samples with seed + r, same prompts; the arms' order alternates); "
        "the ratios are of the totals, each round's is printed too",
    )
    ap.add_argument("--json", default=None, help="also write the figures here (JSON: wall_ratio, ...)")
    ap.add_argument(
        "--device",
        type=device_argument,
        default=bench_device(),
        help="torch engine device ($LATR_BENCH_DEVICE or cpu)",
    )
    over = ap.add_mutually_exclusive_group()
    over.add_argument(
        "--launch-sglang", action="store_true", help="launch an SGLang server (GPU) and drive it over HTTP"
    )
    over.add_argument(
        "--serve-http",
        action="store_true",
        help="run the torch engine as `latr-sglang serve` in its own process and drive it over SGLang's HTTP "
        "API, as an SGLang server is driven (tree-phase requests then stream their parts)",
    )
    args = ap.parse_args(argv)
    check_output_flags(ap, json=args.json)
    # before anything loads: a bad flag, field or value is named at once
    try:
        cfg = build_config(args.preset, config_setting(args.config) if args.config else {})
    except ConfigError as e:
        raise SystemExit(f"--preset {args.preset} --config {args.config!r}: {e}") from None

    path = make_tiny_model(tempfile.mkdtemp(prefix="latr-tiny-")) if args.model == "tiny" else args.model
    server = None
    if args.launch_sglang:
        engine, tok, eos_ids, server = _launch_sglang(path, args.seed)
    elif args.serve_http:
        engine, tok, eos_ids, server = _serve_http(path, args)
    else:
        engine = TorchEngine.from_pretrained(path, max_batch_size=args.max_batch_size, device=args.device)
        tok, eos_ids = engine.tokenizer, engine.eos_ids
    prompts = encode_prompts(tok, builtin_countdown_prompts(args.num_prompts, args.seed), chat=True)
    in_flight = args.prompts_per_batch or len(prompts)
    sampler = LATRSampler(
        engine,
        cfg,
        SamplingParams(max_new_tokens=args.max_new_tokens),
        eos_ids,
        lambda t: tok.decode([t]),
    )
    # untimed warm-up of both arms on one prompt: the first requests pay one-off costs (lazy imports, the
    # allocator, on a GPU its context and kernel loads) that would otherwise fall on whichever arm runs first
    for eta in (0.0, 1.0):
        asyncio.run(_flush(engine, close=server is not None))
        run_arm(
            "warm-up",
            sampler,
            prompts[:1],
            min(args.n, 2),
            eta,
            args.seed,
            1,
            None,
            args.admission,
            engine if server is not None else None,
        )
    runs: dict[str, list[Arm]] = {"latr": [], "stochastic": []}
    per_round: list[float] = []
    for r in range(args.repeats):
        # the order alternates (stochastic first, then LATR first, ...) so that a machine slowing down or
        # speeding up during the run favours neither; each arm starts from an empty prefix cache
        order = (("stochastic", 0.0), ("latr", 1.0))
        for name, eta in order if r % 2 == 0 else order[::-1]:
            asyncio.run(_flush(engine, close=server is not None))
            with tqdm(total=len(prompts), desc=f"{name} (round {r + 1})", unit="prompt") as bar:
                # an HTTP engine's session belongs to the event loop of its arm: closed inside it
                http = engine if server is not None else None
                arm = run_arm(
                    name, sampler, prompts, args.n, eta, args.seed + r, in_flight, bar, args.admission, http
                )
                runs[name].append(arm)
        latr, sto = runs["latr"][-1], runs["stochastic"][-1]
        per_round.append((latr.wall_s / max(latr.delivered, 1)) / (sto.wall_s / max(sto.delivered, 1)))
    asyncio.run(engine.close())
    if server is not None:
        server.stop()
    # print LATR first (the ratios read LATR / stochastic); over several rounds, totals of all of them
    arms = [
        Arm(
            name,
            [g for a in rs for g in a.groups],
            sum(a.wall_s for a in rs),
            sum(a.driver_cpu_s for a in rs),
        )
        for name, rs in runs.items()
    ]
    table, columns = comparison_table(arms)
    print(
        f"\n{args.model}: {len(prompts)} countdown prompts x n={args.n}, "
        f"<= {args.max_new_tokens} new tokens, preset {args.preset}{' + ' * bool(args.config)}{args.config}, "
        f"eta 1.0 vs 0.0, "
        f"one engine (max batch {args.max_batch_size}), {in_flight} prompts in flight ({args.admission})"
    )
    print(table)
    figures = rollout_figures(columns, vars(args))
    figures["per_token_ratio_by_round"] = per_round
    figures["latr_config"] = sampler.cfg.to_dict()
    rounds = f" (rounds: {', '.join(f'{x:.3f}' for x in per_round)})" if len(per_round) > 1 else ""
    print(
        f"per delivered token: LATR / stochastic = {figures['per_token_ratio']:.3f}{rounds}; "
        f"peak RSS {figures['peak_rss_mb']:.0f} MB"
    )
    if args.json:
        write_json(args.json, figures)


def bench_device() -> str:
    import os

    return os.environ.get("LATR_BENCH_DEVICE", "cpu")


async def _flush(engine, close: bool) -> None:
    try:
        await engine.flush_cache()
    finally:
        if close:  # an HTTP engine's session belongs to this event loop
            await engine.close()


def _launch_sglang(path: str, seed: int):
    """An SGLang server on this machine's GPU (scripts/gpu-check.sh), with the flags our launcher sets."""
    from latr_sglang.engines.sglang_launch import SGLANG_SERVER_ENV, sglang_server_command
    from latr_sglang.models import resolve_model_path

    def command(port: int) -> list[str]:
        return sglang_server_command(str(resolve_model_path(path)), port, seed=seed)

    return _over_http(path, command, "latr-sglang-", env=SGLANG_SERVER_ENV)


def _serve_http(path: str, args: argparse.Namespace):
    """`latr-sglang serve` over `path` in a process of its own (the torch engine behind SGLang's HTTP API)."""

    def command(port: int) -> list[str]:
        engine_flags = ["--max-batch-size", str(args.max_batch_size), "--device", args.device]
        serve = [sys.executable, "-m", "latr_sglang", "serve", "--model", str(path), "--port", str(port)]
        return [*serve, *engine_flags, "--seed", str(args.seed)]

    return _over_http(path, command, "latr-serve-", timeout_s=300)


def _over_http(path: str, command, log_prefix: str, **server_kwargs):
    """A server launched by `command(port)` on a free port, and an HTTP engine driving it."""
    import socket

    from transformers import AutoTokenizer

    from latr_sglang.engines.sglang_http import SGLangHTTPEngine, model_eos_ids
    from latr_sglang.engines.sglang_launch import ServerProcess
    from latr_sglang.models import resolve_model_path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = Path(tempfile.mkdtemp(prefix=log_prefix)) / "server.log"
    server = ServerProcess(command(port), f"http://127.0.0.1:{port}", log, **server_kwargs)
    local = str(resolve_model_path(path))
    tok = AutoTokenizer.from_pretrained(local)
    return SGLangHTTPEngine(server.url), tok, model_eos_ids(local, tok), server


def rollout_figures(columns: dict[str, dict[str, float]], settings: dict) -> dict:
    """The figures a script compares across runs: both arms' columns and the LATR / stochastic ratios."""
    latr, sto = columns["latr"], columns["stochastic"]

    def per_token(c: dict[str, float]) -> float:
        return c["wall time (s)"] / max(c["tokens delivered"], 1.0)

    return {
        "benchmark": "rollout",
        "settings": settings,
        "arms": columns,
        "wall_ratio": latr["wall time (s)"] / sto["wall time (s)"],
        "per_token_ratio": per_token(latr) / per_token(sto),
        "requests_ratio": latr["engine requests"] / max(sto["engine requests"], 1.0),
        "decoded_per_delivered": latr["decoded per delivered"],
        "peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_gpu_mb() -> float | None:
    """The peak GPU memory torch allocated in this process, in MB; None without CUDA."""
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def write_json(path: str, figures: dict) -> None:
    with open(path, "w") as f:
        json.dump(figures, f, indent=2, default=str)
        f.write("\n")


if __name__ == "__main__":
    main()
