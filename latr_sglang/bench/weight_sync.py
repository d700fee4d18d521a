"""Weight sync into a serving engine over gloo on this CPU: one HTTP call per tensor vs buckets, side by side.

    python -m latr_sglang.bench.weight_sync    # SmolLM2-135M (273 tensors with the tied lm_head, 621 MB fp32)
    python -m latr_sglang.bench.weight_sync --model tiny --json /tmp/ws.json

A torch engine served by `latr-sglang serve`'s app (real HTTP on 127.0.0.1) joins a gloo group with this
process (the trainer). Pushed: the model's state dict, through SGLang's /update_weights_from_distributed with
mode per_tensor (one call per tensor, the old protocol and the fallback) and mode multi (several names per
call: one call per bucket). The flattened_bucket mode (one broadcast per bucket) is timed on the group alone
against per-tensor broadcasts, since our server does not receive that format yet.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import threading
import time

import torch

from latr_sglang.argtypes import (
    bench_parser,
    check_output_flags,
    model_argument,
    positive_float,
    positive_int,
)
from latr_sglang.bench.rollout import peak_rss_mb, write_json


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> dict:
    from latr_sglang.engines.sglang_http import SGLangHTTPEngine
    from latr_sglang.engines.torch_engine import TorchEngine
    from latr_sglang.engines.weight_sync import WeightSyncGroup, flatten_bucket, plan_buckets, push_weights
    from latr_sglang.server import ServerThread
    from latr_sglang.tiny import make_tiny_model

    ap = bench_parser(__doc__)
    ap.add_argument(
        "--model", type=model_argument, default="smollm2", help="'smollm2', 'tiny' or a local folder"
    )
    ap.add_argument("--bucket-mb", type=positive_float, default=256.0)
    ap.add_argument("--repeats", type=positive_int, default=2)
    ap.add_argument("--json", default=None, help="also write the figures here (JSON)")
    args = ap.parse_args(argv)
    check_output_flags(ap, json=args.json)
    path = make_tiny_model(tempfile.mkdtemp(prefix="latr-tiny-")) if args.model == "tiny" else args.model
    engine = TorchEngine.from_pretrained(path)
    named = [(k, v.detach().clone()) for k, v in engine.hf_model.state_dict().items()]
    total_mb = sum(t.numel() * t.element_size() for _, t in named) / 2**20
    times: dict[str, list[float]] = {
        "per_tensor": [],
        "multi": [],
        "broadcast_per_tensor": [],
        "flattened": [],
    }
    calls: dict[str, int] = {}
    with ServerThread(engine, enable_weight_updates=True) as server:
        client = SGLangHTTPEngine(server.url)

        async def http_rounds() -> None:
            port = _port()
            _, trainer = await asyncio.gather(
                client.init_weights_update_group("127.0.0.1", port, 1, 2, "bench", backend="gloo"),
                asyncio.to_thread(WeightSyncGroup, "127.0.0.1", port, 0, 2, "gloo", "bench", timeout_s=120),
            )
            for _ in range(args.repeats):
                for mode in ("per_tensor", "multi"):
                    t0 = time.perf_counter()
                    calls[mode] = await push_weights(
                        trainer, client, named, mode=mode, bucket_mb=args.bucket_mb, group_name="bench"
                    )
                    times[mode].append(time.perf_counter() - t0)
            await client.close()

        asyncio.run(http_rounds())
    engine.close_sync()

    # the broadcast alone: per-tensor broadcasts vs one flattened broadcast per bucket, to a receiving thread
    port = _port()
    box: dict = {}
    joiner = threading.Thread(target=lambda: box.update(g=WeightSyncGroup("127.0.0.1", port, 1, 2, "gloo")))
    joiner.start()
    trainer = WeightSyncGroup("127.0.0.1", port, 0, 2, "gloo")
    joiner.join()
    receiver = box["g"]
    buckets = plan_buckets(named, int(args.bucket_mb * 2**20))

    def receive(mode: str) -> None:
        if mode == "flattened":
            for b in buckets:
                receiver.broadcast(
                    torch.empty(sum(t.numel() * t.element_size() for _, t in b), dtype=torch.uint8)
                )
        else:
            for _, t in named:
                receiver.broadcast(torch.empty_like(t))

    for _ in range(args.repeats):
        for mode in ("broadcast_per_tensor", "flattened"):
            th = threading.Thread(target=receive, args=(mode,))
            th.start()
            t0 = time.perf_counter()
            if mode == "flattened":
                for b in buckets:
                    trainer.broadcast(flatten_bucket(b))
            else:
                for _, t in named:
                    trainer.broadcast(t)
            th.join()
            times[mode].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    figures = {
        "benchmark": "weight_sync",
        "settings": vars(args),
        "tensors": len(named),
        "total_mb": total_mb,
        "calls": calls,
        "seconds": times,
        "http_ratio": best["per_tensor"] / best["multi"],
        "broadcast_ratio": best["broadcast_per_tensor"] / best["flattened"],
        "peak_rss_mb": peak_rss_mb(),
    }
    print(
        f"{args.model}: {len(named)} tensors, {total_mb:.0f} MB, buckets of {args.bucket_mb:g} MB, "
        "gloo on CPU\n"
        f"| protocol | calls | best of {args.repeats} (s) |\n|---|---|---|\n"
        f"| HTTP: one call per tensor | {calls['per_tensor']} | {best['per_tensor']:.2f} |\n"
        f"| HTTP: several names per call | {calls['multi']} | {best['multi']:.2f} |\n"
        f"| broadcasts: one per tensor | - | {best['broadcast_per_tensor']:.2f} |\n"
        f"| broadcasts: one flattened per bucket | - | {best['flattened']:.2f} |\n"
        f"per-tensor / bucketed: HTTP {figures['http_ratio']:.2f}x, "
        f"broadcast {figures['broadcast_ratio']:.2f}x"
    )
    if args.json:
        write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
