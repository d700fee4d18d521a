"""`latr-sglang` command line: sample (LATR vs stochastic), serve, eval, report.

Bad input ends in one line naming the value (exit 2), never a traceback: flags are checked by argparse types
here, files before they are read, a server before it is used.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import math
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


from latr_sglang import __version__
from latr_sglang.config import add_latr_arguments

PROG = "latr-sglang"
DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16", "float64")


class UsageError(ValueError):
    """Bad input found after parsing (a file, a server); printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """Errors in one line: the usage of `sample` alone is 40 lines of LATR flags."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that shows each flag's default, where it has one worth showing (not None, False or '')."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        unshown = default is None or default is False or default == "" or default == argparse.SUPPRESS
        if unshown or "default" in text or not action.option_strings:
            return action.help
        return f"{text} (default: %(default)s)"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _finite_float(text: str) -> float:
    # inf and nan parse as floats, then fail far from the flag (an OverflowError in int(), a NaN comparison)
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number")
    return value


def _non_negative_float(text: str) -> float:
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number >= 0")
    return value


def _finite_float_flags(parser: argparse.ArgumentParser) -> None:
    """Every plain float flag of every subcommand (serve's flags come from latr_sglang.server.run) takes
    finite numbers only."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                _finite_float_flags(subparser)
        elif action.type is float:
            action.type = _finite_float


def _writable_output(flag: str, path: str, make_parents: bool = False) -> None:
    """Refuses an output path the run could not write at its end, before anything is loaded. With
    make_parents (the writer creates missing folders) the nearest existing folder must take new entries."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise UsageError(f"{flag} {path}: is a directory, expected a file path")
    try:
        if file.exists():
            with open(file, "a"):  # append mode: the old contents stay until the run writes
                pass
            return
        parent = file.parent
        while make_parents and not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.exists():
            raise UsageError(f"{flag} {path}: folder {str(parent)!r} does not exist")
        if not parent.is_dir():
            raise UsageError(f"{flag} {path}: {str(parent)!r} is not a folder")
        # a real file, not os.access: root passes access() on read-only mounts and /proc alike
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".latr-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UsageError(f"{flag} {path}: not writable ({e.strerror or e})") from None


def _device(text: str) -> str:
    # checked here, not by torch, so that a typo fails before a model is loaded
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r}: expected cpu, cuda or cuda:N")
    if text.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: no CUDA device is available here")
        index = int(text.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return text


def _readable_file(flag: str, path: str) -> Path:
    """`path` as a Path if it is a readable file, else a UsageError naming the flag and the path."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise UsageError(f"{flag} {path}: is a directory, expected a file")
    if not file.is_file():
        raise UsageError(f"{flag} {path}: no such file")
    if not os.access(file, os.R_OK):
        raise UsageError(f"{flag} {path}: not readable")
    return file


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2", help="local HF folder, or 'smollm2' (embedded default)")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPES,
        help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, float16, float64",
    )
    p.add_argument("--device", default="cpu", type=_device, help="cpu or cuda[:N]")
    p.add_argument(
        "--max-batch-size", type=_positive_int, default=64, help="sequences decoded together per step"
    )
    p.add_argument(
        "--prefix-cache-mb",
        type=_non_negative_float,
        default=None,
        help="memory bound of the prefix cache in MB (default: sized by the model and the live sequences; "
        "0 turns it off)",
    )
    p.add_argument(
        "--context-length", type=_positive_int, default=None, help="override the model's context length"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the sampling (and of unseeded engine requests)"
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
    if args.server:
        from latr_sglang.engines.sglang_http import SGLangHTTPEngine
        from latr_sglang.frontend import ServerError, server_eos_ids, tokenizer_for_server

        try:
            tokenizer = tokenizer_for_server(args.server)
        except ServerError as e:
            raise UsageError(f"--server {e}") from None
        return SGLangHTTPEngine(args.server), tokenizer, server_eos_ids(args.server, tokenizer)
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
    chat = not args.no_chat_template if (args.no_chat_template or run is None) else run.chat
    prefix = (
        args.response_prefix if args.response_prefix is not None else (run.response_prefix if run else "")
    )
    dataset = args.dataset or ("run held-out" if run is not None and run.held_out else "countdown")
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
        print(
            f"prompts as in training run {run.description}; n {n}, max new tokens {max_new_tokens}, "
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
        _writable_output("--output", args.output, make_parents=True)  # write_results creates the folders
    engine, tokenizer, _ = _engine_and_tokenizer(args)
    try:
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


def _check_top_logprobs(m: int) -> None:
    """The tree phase asks the engine for m top log-probs per position: m past the engines' limit is refused
    before a model loads (by the engines' own rule, as latr-train does), not mid-sampling."""
    from latr_sglang.engines.base import GenerateRequest, RequestError

    try:
        GenerateRequest((0,), top_logprobs_num=m).validate(vocab_size=1, context_length=1 << 30)
    except RequestError as e:
        raise UsageError(
            f"--latr.max_branch_per_token {m}: more candidates than the engine returns per position ({e})"
        ) from None


def _check_prompt_lengths(prompts: list, context_length: int | None, args: argparse.Namespace) -> None:
    """A prompt that leaves no room for a response in the context, named before any sampling."""
    if not context_length:
        return
    source = f"--prompts {args.prompts}" if args.prompts else "built-in prompt"
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
    rows = read_jsonl(_readable_file("--prompts", args.prompts), {args.input_key: str})
    texts = [row[args.input_key] for row in rows]
    if args.num_prompts:
        texts, rows = texts[: args.num_prompts], rows[: args.num_prompts]
    labels = [row.get(args.label_key) for row in rows]
    return texts, (labels if all(label is not None for label in labels) else None)


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
    _check_top_logprobs(cfg.max_branch_per_token)
    texts, labels = _sample_prompts(args)
    sampling = SamplingParams(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k
    )
    sampling.validate()
    if args.max_new_tokens < 1:  # the sampler refuses it too, but only once the model is loaded
        raise UsageError(f"--max-new-tokens {args.max_new_tokens}: responses need >= 1 token")
    if args.output:
        _writable_output("--output", args.output)
    engine, tokenizer, eos_ids = _engine_and_tokenizer(args)
    prompts = encode_prompts(tokenizer, texts, chat=not args.no_chat_template)
    try:
        _check_prompt_lengths(prompts, getattr(engine, "context_length", None), args)
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
    print(f"\n{len(prompts)} prompts x n={args.n}, {args.max_new_tokens} new tokens max, LATR eta={args.eta}")
    print(table)
    if labels is not None:
        print(f"\ntask reward ({'countdown' if isinstance(labels[0], dict) else 'labels from --prompts'}):")
        print(_table({arm.name: reward_summary(arm, texts, labels, tokenizer) for arm in arms}))
    latr = arms[0]
    if any(g.k_latr > 0 for g in latr.groups) and sum(len(g.branches) - 1 for g in latr.groups) == 0:
        print(
            "latr-sglang: warning: LATR made no branches at these settings: try --latr.preset small or lower "
            f"--latr.tau_abs (now {cfg.tau_abs}); the LATR column is greedy roots and stochastic fills",
            file=sys.stderr,
        )
    if args.output:
        rows = write_jsonl(args.output, arms, texts, tokenizer)
        print(f"wrote {rows} trajectories to {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="LATR tree rollouts over SGLang", allow_abbrev=False)
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
        type=_positive_int,
        default=None,
        help="prompts: size of the built-in countdown set (default 8), or the first N of --prompts",
    )
    sample.add_argument("--no-chat-template", action="store_true", help="send prompts as raw text")
    sample.add_argument("--n", type=_positive_int, default=8, help="trajectories per prompt")
    sample.add_argument("--eta", type=float, default=1.0, help="share of the n from the tree (mix ratio)")
    sample.add_argument("--max-new-tokens", type=int, default=256, help="longest response, in tokens")
    sample.add_argument("--temperature", type=float, default=1.0, help="completion-phase sampling")
    sample.add_argument("--top-p", type=float, default=1.0, help="completion-phase nucleus sampling")
    sample.add_argument("--top-k", type=int, default=-1, help="completion-phase top-k (-1: all)")
    sample.add_argument(
        "--prompts-per-batch", type=_positive_int, default=8, help="prompts sampled concurrently"
    )
    sample.add_argument("--no-baseline", action="store_true", help="skip the stochastic run")
    sample.add_argument("--output", default="trajectories.jsonl", help="JSONL output ('' to skip)")
    add_latr_arguments(sample)
    sample.set_defaults(func=cmd_sample)

    evaluation = sub.add_parser("eval", help="evaluate a policy: pass@k, mean@k, lengths, distinct answers")
    _engine_args(evaluation)
    evaluation.add_argument("--server", default=None, help="an SGLang server URL instead of a local engine")
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
    evaluation.add_argument("--limit", type=_positive_int, default=None, help="first N prompts only")
    evaluation.add_argument(
        "--n",
        type=_positive_int,
        default=None,
        help="samples per prompt, pass@k for k <= n (default 8, or --run's)",
    )
    evaluation.add_argument(
        "--max-new-tokens",
        type=int,
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
    reporting.add_argument("run_dirs", nargs="+", help="run directories (metrics.csv or TensorBoard events)")
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
