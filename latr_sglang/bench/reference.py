"""Our LATR driver vs a plain per-token tree loop run the way the reference runs it, per delivered token.

    python -m latr_sglang.bench.reference        # SmolLM2-135M, 32 countdown prompts x 8, 256 tokens
    python -m latr_sglang.bench.reference --model tiny --num-prompts 4 --n 4 --max-new-tokens 32

The reference LATR (docs/ALGORITHM.md) decodes one token at a time for a batch with a Hugging Face forward per
step; a fork copies its parent's KV into a new batch row; there is no prefix cache. `reference_rollout` is
that loop, written here from the spec (it shares only the pure decision functions of latr_sglang.algorithm):
greedy tree phase with top-m forks under the capacity k_latr, lookahead pruning with descendants, the exit
rule, then the completion phase sampled at T = 1 in the same batch; fills continue the root's prefix (fresh
samples from the prompt, in a second per-token loop, when the root has finished).

`--batching` says which rows a forward carries:
- `reference` (default): every row of the batch, finished ones included (fed a pad token), until every row
  has finished, as the reference's Hugging Face loop does (a stopped row keeps its place in the batch; only
  pruned rows leave it). The reference hands the completion phase to vLLM on GPUs; on a CPU there is none,
  and the same loop decodes to the end.
- `compact`: a finished row leaves the batch at once (its KV rows are dropped), a stronger baseline than
  the reference: what a continuous-batching engine would do in the completion phase.

Each arm runs in its own child process, one after the other, so that each peak RSS (ru_maxrss) is its own.
Printed and written (`--json`): delivered tokens per second of both, `throughput_ratio` (ours / reference),
`peak_rss_mb` of both and `memory_ratio` (ours / reference), and the decode ceiling: the model's batched
forward alone at the whole batch (`decode_ceiling_tokens_per_s`), the most any loop over that forward can
deliver here, with `ceiling_over_reference` (the largest throughput ratio this machine allows against the
reference loop) and each arm's `ceiling_fraction`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from latr_sglang.algorithm import effective_size, fork_tokens, group_split, leave_tree_phase, should_prune
from latr_sglang.argtypes import (
    bench_parser,
    check_output_flags,
    device_argument,
    positive_int,
    seed_int,
    unit_float,
)
from latr_sglang.bench.rollout import (
    add_workload_arguments,
    bench_device,
    peak_gpu_mb,
    peak_rss_mb,
    write_json,
)
from latr_sglang.config import LATRConfig

BATCHING = ("reference", "compact")


@dataclass
class _Row:
    prompt: int
    origin: str  # tree | fill | stochastic
    tokens: list[int]  # response tokens so far; the last one has no KV yet (it is fed next)
    tree: bool  # greedy + forks (tree phase) or sampled at T = 1 (completion)
    branch_id: int | None = None
    parent: int | None = None
    birth: int | None = None
    finished: bool = False
    pruned: bool = False
    pruned_at: int | None = None
    tree_tokens: list[int] = field(default_factory=list)


@dataclass
class _Prompt:
    ids: list[int]
    k_latr: int
    in_tree: bool
    branches: list[_Row] = field(default_factory=list)  # every tree branch (pruned included), by branch_id
    fills: list[_Row] = field(default_factory=list)  # continuations of the root's prefix
    stochastic: list[_Row] = field(default_factory=list)
    fresh_fills: int = 0  # fills sampled from the prompt (the root had finished)
    exit_step: int | None = None


@torch.inference_mode()
def reference_rollout(
    model: Any,
    prompts: list[list[int]],
    n: int,
    eta: float,
    cfg: LATRConfig,
    max_new_tokens: int,
    eos_ids: frozenset[int],
    token_text: Any,
    pad_id: int,
    seed: int = 0,
    trees: list | None = None,
    batching: str = "reference",
    stats: dict[str, int] | None = None,
) -> list[list[list[int]]]:
    """Per prompt, its n responses (token ids), by a per-token HF loop with KV copies per fork.

    trees: if a list, gets per prompt (exit step, [(branch id, parent, birth step, pruned at, tree tokens)]),
    in the layout of the driver's BranchRecord, for comparing trees.
    batching: `reference` (finished rows stay in the batch until all have finished) or `compact` (they leave
    it at once); the module docstring says more. Same algorithm, same trees; only the cost differs.
    stats: if a dict, gets `forwards` (the main loop's decode forwards; fresh fills are sampled in a loop
    of their own, not counted) and `row_forwards` (the rows they carried).
    """
    if batching not in BATCHING:
        raise ValueError(f"batching={batching!r}: expected one of {', '.join(BATCHING)}")
    k_latr, k_sto = group_split(n, eta)
    dev = next(model.parameters()).device
    prompt_masks, out = _left_padded_prefill(model, prompts, pad_id, dev)
    prompt_cache, prompt_logits = out.past_key_values, out.logits[:, -1].float()
    state = [_Prompt(list(p), k_latr, in_tree=k_latr > 0) for p in prompts]
    rows: list[_Row] = []
    for i, st in enumerate(state):
        if k_latr:
            root = _Row(i, "tree", [], True, branch_id=0)
            st.branches.append(root)
            rows.append(root)
        st.stochastic = [_Row(i, "stochastic", [], False) for _ in range(k_sto)]
        rows += st.stochastic
    generator = torch.Generator(dev).manual_seed(seed)  # one stream for the batch, as a batched sampler has
    cache = prompt_cache
    cache.batch_select_indices(
        torch.tensor([r.prompt for r in rows], dtype=torch.long, device=dev)
    )  # a KV copy per row
    logits = prompt_logits[[r.prompt for r in rows]]
    scopes = [[i] for i in range(len(prompts))] if cfg.exit_scope == "prompt" else [list(range(len(prompts)))]
    t = 0
    while rows:
        # ---- one token for every unfinished row, from logits at response position t -----------------------
        logprobs = torch.log_softmax(logits, dim=-1)  # [R, vocab], raw (T = 1)
        top_vals, top_idx = logprobs.topk(cfg.max_branch_per_token, dim=-1)
        to_sample = [k for k, r in enumerate(rows) if not r.tree and not r.finished]
        sampled = dict.fromkeys(to_sample, 0)
        if to_sample:
            probs = logprobs[to_sample].double().exp()
            sampled = dict(zip(to_sample, torch.multinomial(probs, 1, generator=generator)[:, 0].tolist()))
        forks: list[tuple[_Row, int]] = []  # (new row, the row whose KV it copies)
        room = {i: st.k_latr - sum(not b.pruned for b in st.branches) for i, st in enumerate(state)}
        for index, row in enumerate(rows):
            if row.finished:
                continue
            if row.tree:
                token = int(top_idx[index, 0])
                top = list(zip(top_idx[index].tolist(), top_vals[index].tolist()))
                for alt in fork_tokens(top, cfg, chosen=token):
                    if room[row.prompt] == 0:
                        break
                    st = state[row.prompt]
                    child = _Row(
                        row.prompt, "tree", [*row.tokens, alt], True, len(st.branches), row.branch_id, t
                    )
                    child.finished = alt in eos_ids or t + 1 >= max_new_tokens
                    st.branches.append(child)
                    forks.append((child, index))  # the child starts from a copy of its parent's KV
                    room[row.prompt] -= 1
            else:
                token = sampled[index]
            row.tokens.append(token)
            row.finished = token in eos_ids or t + 1 >= max_new_tokens
        t += 1
        # ---- lookahead pruning, with descendants ---
        for st in state:
            if not st.in_tree:
                continue
            doomed = set()
            for c in st.branches:
                if c.pruned or c.birth is None or (t - c.birth) not in cfg.lookahead_steps:
                    continue
                p = st.branches[c.parent]
                window = slice(c.birth, t)
                parent_text = token_text(p.tokens[c.birth])
                if should_prune(c.tokens[window], p.tokens[window], parent_text, eos_ids, cfg):
                    doomed.add(c.branch_id)
            grew = bool(doomed)
            while grew:
                grew = False
                for b in st.branches:
                    if b.parent in doomed and b.branch_id not in doomed:
                        doomed.add(b.branch_id)
                        grew = True
            for b in st.branches:
                if b.branch_id in doomed and not b.pruned:
                    b.pruned, b.pruned_at = True, t - 1
        # ---- exit rule: a scope whose trees are settled moves to the completion phase ---
        for scope in scopes:
            if not any(state[i].in_tree for i in scope):
                continue
            effs, branches, all_done = [], [], True
            for i in scope:
                live = [b for b in state[i].branches if not b.pruned]
                effs.append(effective_size(k_latr, len(live), all(b.finished for b in live)))
                all_done &= all(b.finished for b in live)
                branches += [(b.birth, b.finished) for b in live]
            # checked after token s = t - 1 (0-based): every branch, root and finished ones included, counts
            if not (
                all_done or leave_tree_phase(effs, k_latr * len(scope), branches, t - 1, max_new_tokens, cfg)
            ):
                continue
            for i in scope:
                st = state[i]
                st.in_tree, st.exit_step = False, t
                for b in st.branches:  # the tree as the tree phase left it
                    b.tree_tokens = list(b.tokens[: t if b.pruned_at is None else b.pruned_at + 1])
                live = [b for b in st.branches if not b.pruned]
                for b in live:
                    b.tree = False
                root = st.branches[0]
                n_fill = k_latr - len(live)
                if root.finished or root.pruned:
                    st.fresh_fills = n_fill
                    continue
                root_index = next(k for k, r in enumerate(rows) if r is root)
                for _ in range(n_fill):
                    fill = _Row(i, "fill", list(root.tokens), False)
                    st.fills.append(fill)
                    forks.append((fill, root_index))
        # ---- the batch for the next step: drop pruned (and, compact, finished) rows, copy KV for forks ---
        keep = [
            index
            for index, r in enumerate(rows)
            if not r.pruned
            and (batching == "reference" or not (r.finished and not (r.tree and state[r.prompt].in_tree)))
        ]
        forks = [(r, src) for r, src in forks if not r.pruned]  # a child of a branch pruned at this step
        next_rows = [rows[i] for i in keep] + [r for r, _ in forks]
        order = keep + [src for _, src in forks]
        if order != list(range(len(rows))):
            cache.batch_select_indices(
                torch.tensor(order, dtype=torch.long, device=dev)
            )  # index_select: copies the KV
        rows = next_rows
        alive = [r for r in rows if not r.finished]
        if not alive:
            break
        feed = torch.tensor([[pad_id if r.finished else r.tokens[-1]] for r in rows], device=dev)
        ones = torch.ones(len(rows), t, dtype=torch.long, device=dev)
        mask = torch.cat([prompt_masks[[r.prompt for r in rows]], ones], 1)
        pos = torch.tensor([[len(prompts[r.prompt]) + t - 1] for r in rows], device=dev)
        out = model(
            input_ids=feed, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True
        )
        cache, logits = out.past_key_values, out.logits[:, -1].float()
        if stats is not None:
            stats["forwards"] = stats.get("forwards", 0) + 1
            stats["row_forwards"] = stats.get("row_forwards", 0) + len(rows)
    del cache
    if trees is not None:
        for st in state:
            records = [(b.branch_id, b.parent, b.birth, b.pruned_at, b.tree_tokens) for b in st.branches]
            trees.append((st.exit_step, records))
    fresh = [(i, j) for i, st in enumerate(state) for j in range(st.fresh_fills)]
    fresh_out = _sample_from_prompts(
        model, prompts, [i for i, _ in fresh], max_new_tokens, eos_ids, pad_id, seed
    )
    results: list[list[list[int]]] = []
    for i, st in enumerate(state):  # the driver's order: tree leaves, fills, stochastic samples
        group = [b.tokens for b in st.branches if not b.pruned] + [f.tokens for f in st.fills]
        group += [toks for (p, _), toks in zip(fresh, fresh_out) if p == i]
        results.append(group + [r.tokens for r in st.stochastic])
    return results


def _left_padded_prefill(
    model: Any, prompts: list[list[int]], pad_id: int, dev: torch.device
) -> tuple[torch.Tensor, Any]:
    """One forward over the prompts, left-padded so that every row's response starts at the same cache
    position: (attention mask, the model's whole output). The whole output, not only its cache and last
    logits, so that the caller holds the logits of every position as long as the loop always has: they
    count in the peak memory this benchmark reports."""
    width = max(map(len, prompts))
    masks = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=dev)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=dev)
    positions = (masks.cumsum(-1) - 1).clamp_min(0)
    return masks, model(input_ids=ids, attention_mask=masks, position_ids=positions, use_cache=True)


@torch.inference_mode()
def _sample_from_prompts(model, prompts, which, max_new_tokens, eos_ids, pad_id, seed) -> list[list[int]]:
    """Plain per-token sampling at T = 1 of one response per entry of `which` (prompt indices)."""
    if not which:
        return []
    sel = [prompts[i] for i in which]
    dev = next(model.parameters()).device
    masks, out = _left_padded_prefill(model, sel, pad_id, dev)
    cache, logits = out.past_key_values, out.logits[:, -1].float()
    generator = torch.Generator(dev).manual_seed(seed + 1)
    tokens: list[list[int]] = [[] for _ in which]
    done = [False] * len(which)
    for t in range(max_new_tokens):
        picked = torch.multinomial(torch.softmax(logits.double(), dim=-1), 1, generator=generator)[:, 0]
        for k, tok in enumerate(picked.tolist()):
            if not done[k]:
                tokens[k].append(tok)
                done[k] = tok in eos_ids or t + 1 >= max_new_tokens
        if all(done):
            break
        feed = torch.tensor([[pad_id if d else ts[-1]] for d, ts in zip(done, tokens)], device=dev)
        mask = torch.cat([masks, torch.ones(len(which), t + 1, dtype=torch.long, device=dev)], 1)
        pos = torch.tensor([[len(p) + t] for p in sel], device=dev)
        out = model(
            input_ids=feed, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True
        )
        cache, logits = out.past_key_values, out.logits[:, -1].float()
    return tokens


@torch.inference_mode()
def decode_ceiling(model: Any, rows: int, context: int, steps: int = 6) -> float:
    """Tokens per second of the model's batched decode forward alone: `rows` rows on a cache of `context`
    positions, no sampling, no bookkeeping, nothing copied. What any loop decoding with this forward at this
    batch can at best reach on this machine, so that both arms' throughputs can be read against it."""
    dev = next(model.parameters()).device
    vocab = int(model.config.vocab_size)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (rows, context), generator=gen).to(dev)
    cache = model(input_ids=ids, use_cache=True, logits_to_keep=1).past_key_values
    feed = torch.randint(0, vocab, (rows, 1), generator=gen).to(dev)
    cache = model(input_ids=feed, past_key_values=cache, use_cache=True).past_key_values  # warm-up
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        cache = model(input_ids=feed, past_key_values=cache, use_cache=True).past_key_values
    _sync(dev)
    return rows * steps / (time.perf_counter() - t0)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# ---- the two arms, each in its own process ---------------------------------------------------------------
def _model_path(name: str) -> str:
    from latr_sglang.tiny import make_tiny_model

    return make_tiny_model(tempfile.mkdtemp(prefix="latr-tiny-")) if name == "tiny" else name


def _prompts(tokenizer: Any, count: int, seed: int) -> list[list[int]]:
    from latr_sglang.compare import builtin_countdown_prompts, encode_prompts

    return [list(p) for p in encode_prompts(tokenizer, builtin_countdown_prompts(count, seed), chat=True)]


def run_arm_in_process(args: argparse.Namespace) -> dict[str, Any]:
    """Runs one arm here; returns delivered tokens, wall time and this process's peak RSS."""
    from latr_sglang.models import load_model_and_tokenizer

    torch.manual_seed(args.seed)
    cfg = LATRConfig.preset(args.preset)
    path = _model_path(args.model)
    result: dict[str, Any] = {"arm": args.arm}
    from latr_sglang.engines.torch_engine import TorchEngine

    if args.arm == "reference":
        model, tok, _ = load_model_and_tokenizer(path, device=args.device)
        model.eval()
        prompts = _prompts(tok, args.num_prompts, args.seed)
        eos = TorchEngine._eos_ids(model, tok)  # the same stop set as our engine
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        with torch.inference_mode():  # warm-up: the first forward imports and initializes lazily
            model(input_ids=torch.tensor([prompts[0][:4]]), use_cache=True)
        result["rss_after_load_mb"] = peak_rss_mb()
        delivered, t0, stats = 0, time.perf_counter(), {}
        for start in range(0, len(prompts), args.prompts_per_batch):
            batch = prompts[start : start + args.prompts_per_batch]
            groups = reference_rollout(
                model,
                batch,
                args.n,
                args.eta,
                cfg,
                args.max_new_tokens,
                eos,
                lambda t: tok.decode([t]),
                pad,
                seed=args.seed + start,
                batching=args.batching,
                stats=stats,
            )
            assert all(len(g) == args.n for g in groups), [len(g) for g in groups]
            delivered += sum(len(r) for g in groups for r in g)
        result["wall_s"] = time.perf_counter() - t0
        result["peak_rss_mb"] = peak_rss_mb()  # before the ceiling below, which is not part of the loop
        result["batching"] = args.batching
        result["forwards"], result["row_forwards"] = stats.get("forwards", 0), stats.get("row_forwards", 0)
        # after the loop, so that its figures are untouched; the whole batch of rows, mid-length context
        rows = args.n * min(args.prompts_per_batch, len(prompts))
        context = max(map(len, prompts)) + args.max_new_tokens // 2
        result["decode_ceiling"] = {
            "rows": rows,
            "context": context,
            "tokens_per_s": decode_ceiling(model, rows, context),
        }
    else:
        from latr_sglang.compare import run_arm
        from latr_sglang.driver import LATRSampler
        from latr_sglang.engines.base import GenerateRequest, SamplingParams

        engine = TorchEngine.from_pretrained(path, max_batch_size=args.max_batch_size, device=args.device)
        tok = engine.tokenizer
        prompts = _prompts(tok, args.num_prompts, args.seed)
        engine.generate_sync(
            [GenerateRequest(tuple(prompts[0][:4]), SamplingParams(max_new_tokens=1))]
        )  # warm-up
        engine.flush_cache_sync()
        result["rss_after_load_mb"] = peak_rss_mb()
        result["engine_memory_budget"] = getattr(engine, "memory_budget", None)
        sampler = LATRSampler(
            engine,
            cfg,
            SamplingParams(max_new_tokens=args.max_new_tokens),
            engine.eos_ids,
            lambda t: tok.decode([t]),
        )
        arm = run_arm("ours", sampler, prompts, args.n, args.eta, args.seed, args.prompts_per_batch)
        engine.close_sync()
        delivered = arm.delivered
        result["wall_s"] = arm.wall_s
        result["engine_requests"] = arm.requests
    result["delivered_tokens"] = delivered
    result["tokens_per_s"] = delivered / result["wall_s"]
    result.setdefault("peak_rss_mb", peak_rss_mb())
    result["peak_gpu_mb"] = peak_gpu_mb()
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = bench_parser(__doc__)
    add_workload_arguments(ap)
    ap.add_argument("--eta", type=unit_float, default=1.0, help="share of each group from the tree (1 = all)")
    ap.add_argument("--preset", default="countdown")
    ap.add_argument(
        "--prompts-per-batch", type=positive_int, default=8, help="prompts decoded together (both arms)"
    )
    ap.add_argument(
        "--batching",
        choices=BATCHING,
        default="reference",
        help="the reference loop's batch: 'reference' keeps finished rows until all have finished (as the "
        "authors' loop does), 'compact' drops them at once (a stronger baseline)",
    )
    ap.add_argument("--max-batch-size", type=positive_int, default=64, help="our engine's batch limit")
    ap.add_argument("--seed", type=seed_int, default=0)
    ap.add_argument("--arm", choices=["both", "reference", "ours"], default="both")
    ap.add_argument(
        "--repeats",
        type=positive_int,
        default=1,
        help="rounds of both arms, order alternating; the ratio is the median",
    )
    ap.add_argument("--json", default=None, help="write the figures here (JSON)")
    ap.add_argument(
        "--device", type=device_argument, default=None, help="cpu or cuda ($LATR_BENCH_DEVICE, else cpu)"
    )
    args = ap.parse_args(argv)
    check_output_flags(ap, json=args.json)
    if args.device is None:
        args.device = bench_device()
    if args.arm != "both":
        result = run_arm_in_process(args)
        if args.json:
            write_json(args.json, result)
        return result

    passthrough = _without(_without(list(argv if argv is not None else sys.argv[1:]), "--json"), "--repeats")
    rounds: list[dict[str, dict[str, Any]]] = []
    for r in range(args.repeats):  # the arms alternate in order, so that a drift in machine speed evens out
        arms: dict[str, dict[str, Any]] = {}
        for arm in ("reference", "ours") if r % 2 == 0 else ("ours", "reference"):
            arms[arm] = _run_arm_subprocess(passthrough, arm)
        rounds.append(arms)
    ratios = [a["ours"]["tokens_per_s"] / a["reference"]["tokens_per_s"] for a in rounds]
    arms = rounds[0]
    ref, ours = arms["reference"], arms["ours"]
    summary = {
        "model": args.model,
        "num_prompts": args.num_prompts,
        "n": args.n,
        "max_new_tokens": args.max_new_tokens,
        "eta": args.eta,
        "prompts_per_batch": args.prompts_per_batch,
        "reference_batching": args.batching,
        "arms": arms,
        "throughput_ratio": statistics.median(ratios),
        "throughput_ratio_by_round": ratios,
        "rounds": rounds[1:],  # the first round's arms are `arms`
        "memory_ratio": ours["peak_rss_mb"] / ref["peak_rss_mb"],
        "gpu_memory_ratio": ours["peak_gpu_mb"] / ref["peak_gpu_mb"] if ref.get("peak_gpu_mb") else None,
        "peak_rss_mb": {"reference": ref["peak_rss_mb"], "ours": ours["peak_rss_mb"]},
    }
    print(
        f"\n{args.model}: {args.num_prompts} countdown prompts x n={args.n}, "
        f"<= {args.max_new_tokens} tokens, eta {args.eta}, {args.prompts_per_batch} prompts per batch, "
        f"reference batching {args.batching}\n"
        f"| | reference per-token loop | our driver + torch engine | ours / reference |\n|---|---|---|---|\n"
        f"| delivered tokens | {ref['delivered_tokens']} | {ours['delivered_tokens']} | |\n"
        f"| wall time (s) | {ref['wall_s']:.1f} | {ours['wall_s']:.1f} | |\n"
        f"| delivered tok/s | {ref['tokens_per_s']:.1f} | {ours['tokens_per_s']:.1f} | "
        f"**{ratios[0]:.2f}x** |\n"
        f"| RSS after loading (MB) | {ref['rss_after_load_mb']:.0f} | {ours['rss_after_load_mb']:.0f} | |\n"
        f"| peak RSS (MB) | {ref['peak_rss_mb']:.0f} | {ours['peak_rss_mb']:.0f} | "
        f"**{summary['memory_ratio']:.2f}x** |"
    )
    if len(ratios) > 1:
        print(
            f"throughput ratio by round (arm order alternating): {', '.join(f'{x:.2f}' for x in ratios)}; "
            f"median **{summary['throughput_ratio']:.2f}x**"
        )
    ceiling = ref.get("decode_ceiling")
    if ceiling:
        summary["decode_ceiling_tokens_per_s"] = ceiling["tokens_per_s"]
        summary["ceiling_over_reference"] = ceiling["tokens_per_s"] / ref["tokens_per_s"]
        summary["ceiling_fraction"] = {
            arm: arms[arm]["tokens_per_s"] / ceiling["tokens_per_s"] for arm in ("reference", "ours")
        }
        print(
            f"decode ceiling (the HF forward alone, {ceiling['rows']} rows on {ceiling['context']} cached "
            f"positions): {ceiling['tokens_per_s']:.1f} tok/s = {summary['ceiling_over_reference']:.2f}x the "
            f"reference loop; reference at {summary['ceiling_fraction']['reference']:.0%} of it, ours at "
            f"{summary['ceiling_fraction']['ours']:.0%} (delivered tokens)"
        )
    if ref.get("forwards"):
        print(
            f"reference loop ({args.batching} batching): {ref['forwards']} decode forwards carrying "
            f"{ref['row_forwards']} rows, {ref['row_forwards'] / ref['forwards']:.1f} per forward"
        )
    if ours.get("engine_memory_budget"):
        print(f"engine memory budget: {ours['engine_memory_budget']}")
    if args.json:
        write_json(args.json, summary)
    return summary


def _run_arm_subprocess(passthrough: list[str], arm: str) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [sys.executable, "-m", "latr_sglang.bench.reference", *passthrough, "--arm", arm, "--json", out]
    subprocess.run(cmd, check=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    with open(out) as f:
        result = json.load(f)
    os.unlink(out)
    return result


def _without(argv: list[str], flag: str) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(flag + "="):
            out.append(a)
    return out


if __name__ == "__main__":
    main()
