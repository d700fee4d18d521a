"""`latr-sglang` command line: sample (LATR vs stochastic), serve, eval, report.

Bad input ends in one line naming the value (exit 2), never a traceback: flags are checked by argparse types
here, files before they are read, a server before it is used.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


from latr_sglang import __version__
from latr_sglang.argtypes import (
    OneLineErrorParser,
    UsageError,
    device_argument,
    finite_float,
    non_negative_float,
    positive_int,
    readable_file,
    same_file,
    seed_int,
    unit_float,
    writable_output,
)
from latr_sglang.config import add_latr_arguments

PROG = "latr-sglang"
DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16", "float64")


class _DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that shows each flag's default, where it has one worth showing (not None, False or '')."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        unshown = default is None or default is False or default == "" or default == argparse.SUPPRESS
        if unshown or "default" in text or not action.option_strings:
            return action.help
        return f"{text} (default: %(default)s)"


def _finite_float_flags(parser: argparse.ArgumentParser) -> None:
    """Every plain float flag of every subcommand (serve's flags come from latr_sglang.server.run) takes
    finite numbers only."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                _finite_float_flags(subparser)
        elif action.type is float:
            action.type = finite_float


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2", help="local HF folder, or 'smollm2' (embedded default)")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPES,
        help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, float16, float64",
    )
    p.add_argument("--device", default="cpu", type=device_argument, help="cpu or cuda[:N]")
    p.add_argument(
        "--max-batch-size", type=positive_int, default=64, help="sequences decoded together per step"
    )
    p.add_argument(
        "--prefix-cache-mb",
        type=non_negative_float,
        default=None,
        help="memory bound of the prefix cache in MB (default: sized by the model and the live sequences; "
        "0 turns it off)",
    )
    p.add_argument(
        "--context-length", type=positive_int, default=None, help="override the model's context length"
    )
    p.add_argument(
        "--seed", type=seed_int, default=0, help="seed of the sampling (and of unseeded engine requests)"
    )


def _api_key_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--api-key",
        default=None,
        help="with --server: the key of a server started with --api-key (sent as Authorization: Bearer)",
    )


def _make_engine(args: argparse.Namespace):
    from latr_sglang.engines.torch_engine import TorchEngine

    engine = TorchEngine.from_pretrained(
        args.model,
        dtype=args.dtype,
        device=args.device,
        max_batch_size=args.max_batch_size,
        prefix_cache_mb=args.prefix_cache_mb,
        context_length=args.context_length,
        seed=args.seed,
    )
    trained = getattr(getattr(engine, "hf_model", None), "config", None)
    trained = getattr(trained, "max_position_embeddings", None)
    # a warning, not an error: the engine's models use rotary positions, which run past the trained length
    # (the output degrades there, nothing fails)
    if isinstance(trained, int) and args.context_length and args.context_length > trained:
        print(
            f"{PROG}: warning: --context-length {args.context_length} is beyond the model's "
            f"max_position_embeddings {trained}: positions past {trained} were never trained",
            file=sys.stderr,
        )
    return engine


def _engine_and_tokenizer(args: argparse.Namespace):
    """An SGLang server's engine (--server URL) or a local torch engine; with its tokenizer and EOS ids."""
    if args.api_key is not None and not args.server:
        raise UsageError("--api-key is the key of an SGLang server: give it with --server URL")
    if args.server:
        from latr_sglang.engines.sglang_http import SGLangHTTPEngine
        from latr_sglang.frontend import ServerError, server_eos_ids, tokenizer_for_server

        key = args.api_key
        try:
            tokenizer = tokenizer_for_server(args.server, key)
        except ServerError as e:
            raise UsageError(f"--server {e}") from None
        return (
            SGLangHTTPEngine(args.server, api_key=key),
            tokenizer,
            server_eos_ids(args.server, tokenizer, key),
        )
    engine = _make_engine(args)
    return engine, engine.tokenizer, engine.eos_ids


def cmd_eval(args: argparse.Namespace) -> int:
    """n samples per prompt of a bundled eval set (or a JSONL), scored: pass@k, mean@k, lengths, distinct."""
    import dataclasses

    from latr_sglang.engines.base import SamplingParams
    from latr_sglang.evaluate import evaluate, load_eval_set, write_results
    from latr_sglang.tasks.prompts import newline_token_ids

    run = None
    if args.run:
        try:  # a local training run's settings are read by the trainer's own code
            from openrlhf_ext.local.data import run_settings
        except ImportError as e:
            raise SystemExit(f"--run needs the training package (openrlhf_ext): {e}") from None
        run = run_settings(args.run)
    model_note = ""
    if args.model is None:  # the run's trained policy, else the model it starts from
        if run is not None and run.policy is not None:
            args.model, model_note = run.policy, "the run's trained policy"
        elif run is not None:
            args.model = run.base_model
            model_note = "the run's base model: the run has saved no policy/ yet"
        else:
            args.model = "smollm2"
    chat = not args.no_chat_template if (args.no_chat_template or run is None) else run.chat
    prefix = (
        args.response_prefix if args.response_prefix is not None else (run.response_prefix if run else "")
    )
    dataset = args.dataset or ("run held-out" if run is not None and run.held_out else "countdown")
    if args.output and same_file(args.output, dataset):
        raise UsageError(f"--output {args.output}: the same file as --dataset; it would be overwritten")
    if dataset == "run held-out":
        items = run.held_out[: args.limit] if args.limit else run.held_out
    else:
        if Path(dataset).is_dir():
            raise UsageError(f"--dataset {dataset}: is a directory, expected a bundled name or a JSONL file")
        items = load_eval_set(dataset, args.limit)
    # samples, length and temperature: as given, else as the run evaluated, else eval's defaults
    n, max_new_tokens, temperature = (
        given if given is not None else (getattr(run, name) if run is not None else default)
        for given, name, default in (
            (args.n, "n", 8),
            (args.max_new_tokens, "max_new_tokens", 1024),
            (args.temperature, "temperature", 1.0),
        )
    )
    if run is not None:
        model = args.server or args.model
        print(
            f"model {model}{f' ({model_note})' if model_note and not args.server else ''}; prompts as in "
            f"training run {run.description}; n {n}, max new tokens {max_new_tokens}, "
            f"temperature {temperature}",
            file=sys.stderr,
        )
    sampling = SamplingParams(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=args.top_p, top_k=args.top_k
    )
    sampling.validate()
    if max_new_tokens < 1:  # as sample: a 0-token response scores as a wrong answer, silently
        raise UsageError(f"--max-new-tokens {max_new_tokens}: responses need >= 1 token")
    if args.output:
        writable_output("--output", args.output, make_parents=True)  # write_results creates the folders
    engine, tokenizer, _ = _engine_and_tokenizer(args)
    try:
        context = getattr(engine, "context_length", None)
        if context:  # every prompt as evaluate() will encode it, before any is sampled
            from latr_sglang.tasks.prompts import encode_prompts

            encoded = encode_prompts(tokenizer, [it.prompt for it in items], chat, prefix)
            source = f"--dataset {dataset}" + (f" with --response-prefix {prefix!r}" if prefix else "")
            _check_prompt_lengths(encoded, context, source)
        if run is not None and run.stop_at_newline:  # the run's answers are one line: stop where it stopped
            sampling = dataclasses.replace(sampling, stop_token_ids=newline_token_ids(tokenizer))
        metrics = evaluate(
            engine,
            tokenizer,
            items,
            n=n,
            sampling=sampling,
            chat=chat,
            response_prefix=prefix,
            seed=args.seed,
        )
    finally:
        if not args.server:
            engine.close_sync()
    results = {
        "model": args.server or args.model,
        "dataset": dataset,
        "chat_template": chat,
        "response_prefix": prefix,
        **({"run": str(args.run)} if args.run else {}),
        **metrics,
    }
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
    from latr_sglang.server.run import serve

    return serve(args, _make_engine)


def _latr_config(args: argparse.Namespace, default_preset: str):
    """The LATRConfig of --latr.* flags; a bad --latr.config file is named in one line."""
    from latr_sglang.config import latr_config_from_args

    # a missing, unreadable or malformed file, or a bad value in it: a ConfigError naming the file
    return latr_config_from_args(args, default_preset=default_preset)


def _check_fork_candidates(cfg) -> None:
    """More fork candidates per position than an engine returns top log-probs, refused before a model loads
    (by the driver's own rule), not mid-sampling."""
    from latr_sglang.driver import check_fork_candidates

    try:
        check_fork_candidates(cfg)
    except ValueError as e:
        raise UsageError(f"--latr.max_branch_per_token {cfg.max_branch_per_token}: {e}") from None


def _check_prompt_lengths(prompts: list, context_length: int | None, source: str) -> None:
    """A prompt that leaves no room for a response in the context, named before any sampling."""
    if not context_length:
        return
    for i, ids in enumerate(prompts):
        if len(ids) >= context_length:
            raise UsageError(
                f"{source}: prompt {i + 1} has {len(ids)} tokens, the model's context length is "
                f"{context_length} (--context-length): no room to generate"
            )


_COUNTDOWN_RE = re.compile(r"numbers \[([\d,\s]+)\], create an equation that equals (\d+)")


def countdown_label(prompt: str) -> dict[str, Any] | None:
    """The countdown label of a prompt in the paper's wording (the built-in set), else None."""
    m = _COUNTDOWN_RE.search(prompt)
    if m is None:
        return None
    return {"numbers": [int(x) for x in m.group(1).split(",")], "target": int(m.group(2))}


def _sample_prompts(args: argparse.Namespace) -> tuple[list[str], list[Any] | None]:
    """Prompt texts and their labels (None when the prompts carry none: no reward is reported)."""
    from latr_sglang.compare import builtin_countdown_prompts, read_jsonl

    if not args.prompts:
        texts = builtin_countdown_prompts(args.num_prompts or 8)
        return texts, [countdown_label(t) for t in texts]
    from latr_sglang.tasks.reward_func import check_label

    rows = read_jsonl(readable_file("--prompts", args.prompts), {args.input_key: str})
    texts = [row[args.input_key] for row in rows]
    if args.num_prompts:
        if args.num_prompts > len(rows):
            _warn(
                f"--num-prompts {args.num_prompts}: --prompts {args.prompts} has only {len(rows)} rows; "
                "sampling those"
            )
        texts, rows = texts[: args.num_prompts], rows[: args.num_prompts]
    labels = [row.get(args.label_key) for row in rows]
    unlabelled = sum(label is None for label in labels)
    if unlabelled:
        if unlabelled < len(rows):  # all or none: a reward over some of the prompts would mislead
            _warn(
                f"--prompts {args.prompts}: {unlabelled} of {len(rows)} rows have no {args.label_key!r} "
                "(--label-key); no task reward is reported"
            )
        return texts, None
    for i, label in enumerate(labels):  # as the reward parses them: a bad one would score 0 on every sample
        try:
            check_label(label)
        except ValueError as e:
            raise UsageError(f"--prompts {args.prompts}: row {i + 1}: {args.label_key}: {e}") from None
    return texts, labels


def _warn(message: str) -> None:
    print(f"latr-sglang: warning: {message}", file=sys.stderr)


def reward_summary(arm, texts: list[str], labels: list[Any], tokenizer) -> dict[str, float]:
    """Task reward of an arm's trajectories: mean reward, pass@1, pass@n, share of untied groups."""
    from latr_sglang.tasks.reward_func import score_response

    rewards, correct, untied, any_correct = [], [], 0, 0
    for label, group in zip(labels, arm.groups):
        responses = [tokenizer.decode(t.token_ids, skip_special_tokens=True) for t in group.trajectories]
        scored = [score_response(r, label) for r in responses]
        rewards.extend(s[0] for s in scored)
        correct.extend(s[1] >= 1.0 for s in scored)
        untied += len({s[0] for s in scored}) > 1
        any_correct += any(s[1] >= 1.0 for s in scored)
    groups = max(len(arm.groups), 1)
    return {
        "reward mean": sum(rewards) / max(len(rewards), 1),
        "pass@1 (accuracy)": sum(correct) / max(len(correct), 1),
        "pass@n (any correct)": any_correct / groups,
        "groups with untied rewards": untied / groups,
    }


def _table(columns: dict[str, dict[str, float]]) -> str:
    names = list(columns)
    keys = list(columns[names[0]])
    width = max(map(len, keys))
    lines = [f"{'':{width}}  " + "  ".join(f"{n:>12}" for n in names)]
    lines += [f"{k:{width}}  " + "  ".join(f"{columns[n][k]:>12.3f}" for n in names) for k in keys]
    return "\n".join(lines)


def cmd_sample(args: argparse.Namespace) -> int:
    """LATR vs stochastic sampling on the same prompts, n and engine: JSONL out, a table on stdout."""
    from tqdm import tqdm

    from latr_sglang.compare import comparison_table, encode_prompts, run_arm, write_jsonl
    from latr_sglang.driver import LATRSampler
    from latr_sglang.engines.base import SamplingParams

    cfg = _latr_config(args, default_preset="countdown")
    _check_fork_candidates(cfg)
    if args.output and args.prompts and same_file(args.output, args.prompts):
        raise UsageError(
            f"--output {args.output}: the same file as --prompts; the prompts would be overwritten"
        )
    texts, labels = _sample_prompts(args)
    sampling = SamplingParams(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k
    )
    sampling.validate()
    if args.max_new_tokens < 1:  # the sampler refuses it too, but only once the model is loaded
        raise UsageError(f"--max-new-tokens {args.max_new_tokens}: responses need >= 1 token")
    if args.output:
        writable_output("--output", args.output)
    engine, tokenizer, eos_ids = _engine_and_tokenizer(args)
    prompts = encode_prompts(tokenizer, texts, chat=not args.no_chat_template)
    try:
        source = f"--prompts {args.prompts}" if args.prompts else "built-in prompt"
        _check_prompt_lengths(prompts, getattr(engine, "context_length", None), source)
    except UsageError:
        if not args.server:
            engine.close_sync()
        raise
    sampler = LATRSampler(engine, cfg, sampling, eos_ids, lambda t: tokenizer.decode([t]))
    arms = []
    plan = [("latr", args.eta)] + ([] if args.no_baseline else [("stochastic", 0.0)])
    try:
        for name, eta in plan:
            with tqdm(total=len(prompts), desc=f"{name:10}", unit="prompt") as bar:
                arms.append(
                    run_arm(
                        name,
                        sampler,
                        prompts,
                        args.n,
                        eta,
                        args.seed,
                        args.prompts_per_batch,
                        bar,
                        admission="window",  # prompts_per_batch separate groups in flight
                        close_engine=engine if args.server else None,
                        seed_scale=1_000_000,
                    )
                )
            if not args.server:
                engine.flush_cache_sync()  # the second arm must not profit from the first one's cache
    finally:
        if not args.server:
            engine.close_sync()
    table, _ = comparison_table(arms)
    count = f"{len(prompts)} prompt{'s' if len(prompts) != 1 else ''}"
    print(f"\n{count} x n={args.n}, {args.max_new_tokens} new tokens max, LATR eta={args.eta}")
    print(table)
    if labels is not None:
        print(f"\ntask reward ({'countdown' if isinstance(labels[0], dict) else 'labels from --prompts'}):")
        print(_table({arm.name: reward_summary(arm, texts, labels, tokenizer) for arm in arms}))
    latr = arms[0]
    if args.eta > 0 and not any(g.k_latr > 0 for g in latr.groups):
        _warn(
            f"--eta {args.eta} x --n {args.n} rounds to no tree samples per prompt (k = round(eta x n) = 0): "
            "the LATR column is plain sampling"
        )
    elif any(g.k_latr > 0 for g in latr.groups) and sum(len(g.branches) - 1 for g in latr.groups) == 0:
        _warn(
            "LATR made no branches at these settings: try --latr.preset small or lower "
            f"--latr.tau_abs (now {cfg.tau_abs}); the LATR column is greedy roots and stochastic fills"
        )
    if args.output:
        rows = write_jsonl(args.output, arms, texts, tokenizer)
        print(f"wrote {rows} trajectories to {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog=PROG, description="LATR tree rollouts over SGLang", allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level", default="warning", choices=("debug", "info", "warning", "error", "critical")
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the torch engine with SGLang's HTTP API")
    _engine_args(serve)
    from latr_sglang.server.run import add_serve_arguments

    add_serve_arguments(serve)
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
    sample.add_argument(
        "--label-key",
        default="label",
        help="JSONL key of the label (countdown {numbers, target} or a math answer): reward and pass rate",
    )
    sample.add_argument(
        "--num-prompts",
        type=positive_int,
        default=None,
        help="prompts: size of the built-in countdown set (default 8), or the first N of --prompts",
    )
    sample.add_argument("--no-chat-template", action="store_true", help="send prompts as raw text")
    sample.add_argument("--n", type=positive_int, default=8, help="trajectories per prompt")
    _api_key_arg(sample)
    sample.add_argument(
        "--eta", type=unit_float, default=1.0, help="share of the n from the tree (mix ratio, in [0, 1])"
    )
    sample.add_argument(
        "--max-new-tokens", type=positive_int, default=256, help="longest response, in tokens"
    )
    sample.add_argument("--temperature", type=float, default=1.0, help="completion-phase sampling")
    sample.add_argument("--top-p", type=float, default=1.0, help="completion-phase nucleus sampling")
    sample.add_argument("--top-k", type=int, default=-1, help="completion-phase top-k (-1: all)")
    sample.add_argument(
        "--prompts-per-batch", type=positive_int, default=8, help="prompts sampled concurrently"
    )
    sample.add_argument("--no-baseline", action="store_true", help="skip the stochastic run")
    sample.add_argument("--output", default="trajectories.jsonl", help="JSONL output ('' to skip)")
    add_latr_arguments(sample)
    sample.set_defaults(func=cmd_sample)

    evaluation = sub.add_parser("eval", help="evaluate a policy: pass@k, mean@k, lengths, distinct answers")
    _engine_args(evaluation)
    evaluation.add_argument("--server", default=None, help="an SGLang server URL instead of a local engine")
    _api_key_arg(evaluation)
    # no default here: with --run, the run's own trained policy is evaluated unless --model says otherwise
    evaluation.set_defaults(model=None)
    evaluation._option_string_actions["--model"].help = (
        "local HF folder, or 'smollm2' (the embedded default); with --run: that run's trained policy "
        "(RUN/policy) unless given"
    )
    evaluation.add_argument(
        "--dataset",
        default=None,
        help="countdown (default), math500, amc23, aime24, olympiadbench, or a JSONL; with --run: the run's "
        "own held-out problems",
    )
    evaluation.add_argument(
        "--run",
        default=None,
        help="a local training run's folder (its config.json): prompt template, response prefix, newline "
        "stop, held-out problems, samples per prompt, response length and temperature as in that run's "
        "evaluation, unless given here",
    )
    evaluation.add_argument("--limit", type=positive_int, default=None, help="first N prompts only")
    evaluation.add_argument(
        "--n",
        type=positive_int,
        default=None,
        help="samples per prompt, pass@k for k <= n (default 8, or --run's)",
    )
    evaluation.add_argument(
        "--max-new-tokens",
        type=positive_int,
        default=None,
        help="longest response in tokens (default 1024, or --run's)",
    )
    evaluation.add_argument(
        "--temperature", type=float, default=None, help="sampling temperature (default 1.0, or --run's)"
    )
    evaluation.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling")
    evaluation.add_argument("--top-k", type=int, default=-1, help="top-k sampling (-1: all)")
    evaluation.add_argument("--no-chat-template", action="store_true", help="send prompts as raw text")
    evaluation.add_argument(
        "--response-prefix",
        default=None,
        help="text the assistant's turn starts with (default none, or --run's)",
    )
    evaluation.add_argument("--output", default="", help="results JSON path")
    evaluation.set_defaults(func=cmd_eval)

    reporting = sub.add_parser("report", help="training logs of runs -> one CSV and PNG plots")
    reporting.add_argument(
        "run_dirs",
        nargs="+",
        help="run directories (metrics.csv or TensorBoard events); a folder of runs stands for each of them",
    )
    reporting.add_argument("--output", default="outputs/report", help="folder for the CSV and PNGs")
    reporting.set_defaults(func=cmd_report)

    for subparser in sub.choices.values():
        subparser.allow_abbrev = False  # a prefix of a flag must not silently select it (as in latr-train)
        subparser.formatter_class = _DefaultsHelpFormatter
    _finite_float_flags(parser)
    return parser


def _closest_flags(parser: argparse.ArgumentParser, command: str | None, unknown: list[str]) -> str:
    """'--tau_abs (did you mean --latr.tau_abs?)' for each unknown flag of the chosen subcommand."""
    target = parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            target = action.choices[command]
    flags = [f for f in target._option_string_actions if f.startswith("--")]
    # compare without the dotted group so that --tau_abs finds --latr.tau_abs
    by_tail = {f.rsplit(".", 1)[-1].lstrip("-"): f for f in flags}
    parts = []
    flagged = [a for a in unknown if a.startswith("-")]
    for arg in flagged or unknown:  # values after an unknown flag are its values: name the flag only
        if not arg.startswith("-"):
            parts.append(repr(arg))
            continue
        name = arg.split("=", 1)[0]
        if name == "--log-level":
            parts.append(f"{name} (it goes before the subcommand: {PROG} --log-level LEVEL {command} ...)")
            continue
        # a prefix of flags is an abbreviation (refused: allow_abbrev is off): name what it abbreviates
        prefixed = sorted(f for f in flags if f.startswith(name) and f != name)
        if prefixed:
            parts.append(f"{name} (did you mean {' or '.join(prefixed[:3])}?)")
            continue
        match = difflib.get_close_matches(name, flags, n=1, cutoff=0.6) or [
            by_tail[t] for t in difflib.get_close_matches(name.lstrip("-"), list(by_tail), n=1, cutoff=0.75)
        ]
        parts.append(f"{name} (did you mean {match[0]}?)" if match else name)
    return ", ".join(parts)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.exit(
            2, f"{PROG}: error: unrecognized arguments: {_closest_flags(parser, args.command, unknown)}\n"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (OSError, ValueError) as e:  # bad input, a file or a server: a message naming it, no traceback
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"{PROG}: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
