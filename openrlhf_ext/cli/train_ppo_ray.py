"""`latr-train`: OpenRLHF's train_ppo_ray with LATR rollouts on SGLang or the torch engine, or one process.

    latr-train [every OpenRLHF train_ppo_ray flag] --rollout.backend sglang --rollout.sampler latr \\
        --latr.preset countdown [--latr.<field> ...] [--sglang.<field> ...] [--dapo.<field> ...] \\
        [--trainer.mode ray|local] [--dry-run]

OpenRLHF's flags come from the installed OpenRLHF itself (openrlhf_ext.openrlhf_args), unchanged. Unknown or
conflicting flags fail before anything starts, naming them. `--dry-run` prints the resolved configuration.
Ray mode runs OpenRLHF's own `train(args)` with our engine actors in place of its vLLM engines; with the
sglang/torch backends no vLLM is imported anywhere (openrlhf_ext.vllm_shim says how). Local mode runs the
single-process trainer (openrlhf_ext.local_trainer) with the OpenRLHF flags it understands.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
import traceback
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latr_sglang.argtypes import OneLineErrorParser
from latr_sglang.config import (
    ConfigError,
    LATRConfig,
    add_dataclass_arguments,
    add_latr_arguments,
    dataclass_overrides,
    latr_config_from_args,
)
from openrlhf_ext.openrlhf_args import OpenRLHFMissing, finalize, hierarchize, openrlhf_parser
from openrlhf_ext.options import (
    EXTENSION_GROUPS,
    DAPOOptions,
    RolloutOptions,
    SGLangOptions,
    TrainerOptions,
)

PROG = "latr-train"

# OpenRLHF flag -> LocalTrainConfig field, for --trainer.mode local. Any other OpenRLHF flag that is given
# (even at its default) or set away from its default is an error in local mode (it would be silently ignored
# otherwise).
LOCAL_FLAGS: dict[str, str] = {
    "actor.model_name_or_path": "model",
    "data.prompt_dataset": "prompts",
    "data.input_key": "input_key",
    "data.label_key": "label_key",
    "data.apply_chat_template": "apply_chat_template",
    "rollout.batch_size": "prompts_per_step",
    "rollout.n_samples_per_prompt": "n_samples_per_prompt",
    "rollout.max_new_tokens": "max_new_tokens",
    "rollout.temperature": "temperature",
    "actor.adam.lr": "learning_rate",
    "algo.kl.init_coef": "kl_coef",
    "actor.eps_clip": "eps_clip_low",
    "actor.eps_clip_low_high": "eps_clip_low_high",
    "train.micro_batch_size": "micro_batch_size",
    "train.seed": "seed",
    "ckpt.output_dir": "output_dir",
    "ckpt.save_steps": "save_steps",
    "ckpt.load_enable": "resume",
    "logger.wandb.key": "use_wandb",
    "logger.wandb.project": "wandb_project",
    "algo.dynamic_filtering_enable": "algo",
    "algo.dynamic_filtering_range": "dynamic_filtering_range",
    "eval.dataset": "eval_dataset",
    "eval.n_samples_per_prompt": "eval_n",
    "eval.steps": "eval_every",
    "reward.overlong_buffer_len": "overlong_buffer_len",
    "reward.overlong_penalty_factor": "overlong_penalty_factor",
    # accepted and meaningless in one process: logging cadence, the estimator (local is group_norm)
    "logger.logging_steps": "",
    "algo.advantage.estimator": "",
    "reward.remote_url": "",
}
LOCAL_ESTIMATORS = ("group_norm",)
# LocalTrainConfig fields no OpenRLHF flag covers: --local.<field>
LOCAL_ONLY_FIELDS = (
    "task",
    "reward",
    "max_number",
    "stop_at_newline",
    "response_prefix",
    "countdown_numbers",
    "eval_prompts",
    "eval_before",
    "force_resume",
    "grad_clip",
    "device",
)
# LocalTrainConfig field -> the flag that sets it (of two OpenRLHF flags for one field, the first in
# LOCAL_FLAGS), to name a field the command line did not give
LOCAL_FIELD_FLAGS: dict[str, str] = {
    **{name: flag for flag, name in reversed(LOCAL_FLAGS.items()) if name and name != "algo"},
    "eps_clip_high": "actor.eps_clip_low_high",
    "sampler": "rollout.sampler",
    "steps": "trainer.max_steps",
    "device": "trainer.device",
    **{f.name: f"dapo.{f.name}" for f in dataclasses.fields(DAPOOptions)},
    **{name: f"local.{name}" for name in LOCAL_ONLY_FIELDS if name != "device"},
}
# LocalTrainConfig fields that only choose the built-in task's problems: a prompts file replaces them
BUILTIN_TASK_FIELDS = ("task", "max_number", "countdown_numbers")


@dataclass
class Invocation:
    """A parsed `latr-train` command line, resolved and checked."""

    rollout: RolloutOptions
    sglang: SGLangOptions
    dapo: DAPOOptions
    trainer: TrainerOptions
    latr: LATRConfig | None  # None: no LATR (vllm backend or stochastic sampler)
    openrlhf: argparse.Namespace  # ray mode: hierarchized, finalized by OpenRLHF's validation; local: flat
    given: dict[str, Any]  # OpenRLHF flags set away from their defaults
    extension_given: set[str]  # our flags given on the command line (dests)
    local_overrides: dict[str, Any]  # --local.<field> values given
    dry_run: bool
    local: Any = None  # the LocalTrainConfig, in local mode
    # OpenRLHF flags written on the command line, with their values, even where they equal OpenRLHF's
    # default (local mode maps each of them: `--train.seed 42` must not fall back to the local default)
    explicit: dict[str, Any] = dataclasses.field(default_factory=dict)

    def ext(self) -> dict[str, Any]:
        """What travels to Ray workers as args.latr_ext."""
        return {
            "rollout": dataclasses.asdict(self.rollout),
            "sglang": dataclasses.asdict(self.sglang),
            "dapo": dataclasses.asdict(self.dapo),
            "trainer": dataclasses.asdict(self.trainer),
            "latr": self.latr.to_dict() if self.latr is not None else None,
        }


def build_parser() -> argparse.ArgumentParser:
    parser = openrlhf_parser()
    parser.prog = PROG
    # a bad value is one line and a hint, not argparse's ~200 lines of usage first (as latr-sglang's parsers)
    parser.error = types.MethodType(OneLineErrorParser.error, parser)  # type: ignore[method-assign]
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    titles = {
        "rollout.": "rollout engines (latr-sglang)",
        "sglang.": "SGLang engines (latr-sglang)",
        "dapo.": "DAPO completions (latr-sglang)",
        "trainer.": "trainer (latr-sglang)",
    }
    for prefix, cls in EXTENSION_GROUPS.items():
        add_dataclass_arguments(parser.add_argument_group(titles[prefix]), cls, prefix)
    from openrlhf_ext.local.config import LocalTrainConfig

    add_dataclass_arguments(
        parser.add_argument_group("local mode (latr-sglang)"), LocalTrainConfig, "local.", LOCAL_ONLY_FIELDS
    )
    add_latr_arguments(parser)
    parser.add_argument(
        "--dry-run", "--dry_run", dest="dry_run", action="store_true", help="print the configuration, exit"
    )
    return parser


def _extension_dests(parser: argparse.ArgumentParser) -> set[str]:
    dests = {f"{prefix}{f.name}" for prefix, cls in EXTENSION_GROUPS.items() for f in dataclasses.fields(cls)}
    dests |= {a.dest for a in parser._actions if a.dest.startswith(("latr.", "local."))}
    return dests | {"dry_run"}


def parse(argv: list[str] | None = None) -> Invocation:
    """Parses and checks a command line; raises ConfigError naming the bad or conflicting flags. (Flags
    argparse does not know end in its usual exit 2 naming them.)"""
    parser = build_parser()
    namespace, extras = parser.parse_known_args(argv)
    if extras:  # one line naming each unknown flag and the closest known one (not argparse's whole usage)
        from openrlhf_ext.cli.range_checks import unknown_flags_message

        parser.error(unknown_flags_message(list(parser._option_string_actions), extras))
    ours = _extension_dests(parser)
    values = vars(namespace)
    extension = {k: values.pop(k) for k in list(values) if k in ours}
    extension_given = {k for k in extension if k != "dry_run"} - {
        k for k, v in extension.items() if k.startswith("latr.") and v is None
    }
    defaults = {a.dest: a.default for a in parser._actions if a.dest in values}
    given = {k: v for k, v in values.items() if _normalize(defaults.get(k)) != _normalize(v)}
    written = _written_dests(parser, sys.argv[1:] if argv is None else argv)
    explicit = {k: v for k, v in values.items() if k in written}
    ext_ns = argparse.Namespace(**extension)
    try:
        trainer = TrainerOptions(**dataclass_overrides(ext_ns, TrainerOptions, "trainer."))
        rollout_given = dataclass_overrides(ext_ns, RolloutOptions, "rollout.")
        rollout_given.setdefault("backend", "torch" if trainer.mode == "local" else "sglang")
        if rollout_given["backend"] == "vllm":  # OpenRLHF's own engines sample n independent responses
            rollout_given.setdefault("sampler", "stochastic")
        rollout = RolloutOptions(**rollout_given)
        sglang = SGLangOptions(**dataclass_overrides(ext_ns, SGLangOptions, "sglang."))
        dapo = DAPOOptions(**dataclass_overrides(ext_ns, DAPOOptions, "dapo."))
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None
    # OpenRLHF creates engines (and sizes colocation) by --vllm.num_engines alone: without this, a run given
    # only --sglang.num_engines would start none (conflicts() names two that disagree)
    ray_engines = trainer.mode == "ray" and rollout.backend != "vllm" and sglang.num_engines is not None
    if ray_engines and "vllm.num_engines" not in given:
        values["vllm.num_engines"] = given["vllm.num_engines"] = sglang.num_engines
    latr = None
    if rollout.backend != "vllm" and rollout.sampler == "latr":
        latr = latr_config_from_args(ext_ns, default_preset="countdown")
    openrlhf = argparse.Namespace(**values)
    if trainer.mode == "ray":  # (local mode reads `given` and `explicit`; this imports transformers, ~2 s)
        openrlhf = hierarchize(openrlhf)
    inv = Invocation(
        rollout=rollout,
        sglang=sglang,
        dapo=dapo,
        trainer=trainer,
        latr=latr,
        openrlhf=openrlhf,
        given=given,
        extension_given=extension_given,
        local_overrides={k.removeprefix("local."): v for k, v in extension.items() if k.startswith("local.")},
        dry_run=bool(extension.get("dry_run")),
        explicit=explicit,
    )
    problems = conflicts(inv)
    if problems:
        raise ConfigError("; ".join(problems))
    if trainer.mode == "ray":
        inv.openrlhf = finalize(inv.openrlhf)
        inv.openrlhf.latr_ext = inv.ext()
    return inv


def _written_dests(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The dests of the options that appear in argv (`--flag value` or `--flag=value`; latr-train takes no
    abbreviations, so an option string names its flag exactly)."""
    options = parser._option_string_actions
    dests = set()
    for token in argv:
        if token == "--":
            break
        action = options.get(token.split("=", 1)[0]) if token.startswith("--") else None
        if action is not None:
            dests.add(action.dest)
    return dests


def _normalize(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def conflicts(inv: Invocation) -> list[str]:
    """Every conflict among the flags, each naming them."""
    problems: list[str] = []
    given, ours = inv.given, inv.extension_given

    def named(prefix: str) -> list[str]:
        return sorted(f"--{k}" for k in ours if k.startswith(prefix))

    backend, sampler, mode = inv.rollout.backend, inv.rollout.sampler, inv.trainer.mode
    # local mode with another backend: that is the conflict (reported below); what the backend would then
    # refuse (--latr.* with vllm, ...) follows from it and goes away with it
    wrong_local_backend = mode == "local" and backend != "torch"
    if backend == "vllm" and not wrong_local_backend:
        if "rollout.sampler" in ours and sampler == "latr":
            problems.append(
                "--rollout.sampler latr needs --rollout.backend sglang or torch "
                "(--rollout.backend vllm runs OpenRLHF's own engines, which sample stochastically)"
            )
        for prefix in ("latr.", "sglang."):
            if named(prefix):
                problems.append(f"{', '.join(named(prefix))} given with --rollout.backend vllm")
    if backend == "torch" and named("sglang."):
        problems.append(f"{', '.join(named('sglang.'))} given with --rollout.backend torch")
    # (with --rollout.backend vllm the sampler is stochastic by implication: the line above names --latr.*)
    if sampler == "stochastic" and backend != "vllm" and named("latr."):
        problems.append(f"{', '.join(named('latr.'))} given with --rollout.sampler stochastic")
    dynamic = bool(given.get("algo.dynamic_filtering_enable"))
    for flag in ("dapo.dynamic_filtering_rule", "dapo.dynamic_filtering_metric", "dapo.max_sampling_rounds"):
        if flag in ours and not dynamic:
            problems.append(f"--{flag} needs --algo.dynamic_filtering_enable")
    if dynamic and inv.dapo.dynamic_filtering_rule == "std" and "algo.dynamic_filtering_range" in given:
        problems.append(
            "--algo.dynamic_filtering_range applies to --dapo.dynamic_filtering_rule mean_range, "
            "not std (the default)"
        )
    if inv.dapo.max_sampling_rounds < 1:
        problems.append(f"--dapo.max_sampling_rounds={inv.dapo.max_sampling_rounds}: must be >= 1")
    if backend == "vllm" and not wrong_local_backend and any(k.startswith("dapo.") for k in ours):
        problems.append(f"{flags_need(named('dapo.'))} --rollout.backend sglang or torch")
    if mode == "local":
        if wrong_local_backend:
            problems.append(
                f"--trainer.mode local runs the in-process torch engine, not --rollout.backend {backend}"
            )
        if named("sglang."):
            problems.append(f"{', '.join(named('sglang.'))} given with --trainer.mode local")
        unsupported = sorted(f"--{k}" for k in {*given, *inv.explicit} if k not in LOCAL_FLAGS)
        if unsupported:
            problems.append(
                f"not supported with --trainer.mode local: {', '.join(unsupported)} "
                f"(local mode understands {', '.join('--' + k for k in LOCAL_FLAGS)})"
            )
        estimator = given.get("algo.advantage.estimator")
        if estimator is not None and estimator not in LOCAL_ESTIMATORS:
            problems.append(f"--algo.advantage.estimator {estimator}: local mode implements group_norm")
        prompts = {**given, **inv.explicit}.get("data.prompt_dataset")
        if prompts is not None:
            problems += local_prompts_problems(prompts)
            task_flags = [f"--local.{k}" for k in BUILTIN_TASK_FIELDS if f"local.{k}" in ours]
            if task_flags:
                problems.append(
                    f"{', '.join(task_flags)} given with --data.prompt_dataset: they choose the built-in "
                    "task's problems, which a prompts file replaces"
                )
        if "trainer.reward_timeout_s" in ours:
            problems.append(
                "--trainer.reward_timeout_s bounds ray mode's --reward.remote_url reward_func calls; "
                "--trainer.mode local scores with its built-in reward (--local.reward)"
            )
        local_device = inv.local_overrides.get("device")
        if "local.device" in ours and inv.trainer.device is not None and local_device != inv.trainer.device:
            problems.append(
                f"--trainer.device {inv.trainer.device} and --local.device {local_device} disagree "
                "(--local.device is an alias of --trainer.device)"
            )
    else:
        if named("local."):
            problems.append(f"{flags_need(named('local.'))} --trainer.mode local")
        device = inv.trainer.device
        if device is not None and device not in ("cpu", "cuda"):
            problems.append(f"--trainer.device {device}: ray mode takes cpu or cuda (placement is Ray's)")
        if device == "cpu":
            # SGLang servers the user started (--sglang.server_urls) are the engines' own business: on a CPU,
            # `latr-sglang serve` speaks SGLang's HTTP API; only launching SGLang's runtime needs a GPU.
            if backend == "vllm" or (backend == "sglang" and not inv.sglang.server_urls):
                problems.append(
                    f"--trainer.device cpu rolls out with the torch engine, or over SGLang's HTTP API with "
                    f"--sglang.server_urls, not --rollout.backend {backend} launching its runtime (SGLang's "
                    "and vLLM's runtimes need GPUs); add --rollout.backend torch, or start servers "
                    "(`latr-sglang serve --enable-weight-updates` on a CPU) and pass --sglang.server_urls"
                )
            if given.get("train.colocate_all"):
                problems.append(
                    "--train.colocate_all is not supported with --trainer.device cpu, over either "
                    "--vllm.sync_backend (it shares the trainer's GPUs with the engines; on a CPU give the "
                    "engine its own logical GPU, as without the flag)"
                )
        if backend != "vllm":  # weight-sync paths OpenRLHF has only for its vLLM engines, refused up front
            if given.get("vllm.sync_with_ray"):
                problems.append(
                    f"--vllm.sync_with_ray is not supported with --rollout.backend {backend}: LATR engines "
                    "take the weights through a torch.distributed group (--vllm.sync_backend nccl or gloo)"
                )
            openrlhf = inv.openrlhf
            cuda_ipc = (
                openrlhf.train.colocate_all
                and not openrlhf.train.async_enable
                and openrlhf.vllm.sync_backend == "nccl"
            )
            if cuda_ipc and device != "cpu":
                problems.append(
                    "--train.colocate_all with --vllm.sync_backend nccl is OpenRLHF's CUDA-IPC weight sync, "
                    f"which only its vLLM engines have; with --rollout.backend {backend} give the engines "
                    "their own GPUs (--train.colocate_actor_ref keeps actor and reference together) or use "
                    "--vllm.sync_backend gloo"
                )
        if inv.latr is not None and inv.latr.exit_scope == "batch":
            problems.append(
                "--latr.exit_scope batch cannot take effect in ray mode: OpenRLHF asks an engine actor for "
                "one prompt at a time, so each LATR batch is one prompt (use prompt, or --trainer.mode local)"
            )
        if "trainer.max_steps" in ours:
            problems.append("--trainer.max_steps is for --trainer.mode local (ray mode sizes by the dataset)")
        if not given.get("actor.model_name_or_path"):
            problems.append("--actor.model_name_or_path is required")
        if not given.get("reward.remote_url") and not given.get("reward.model_name_or_path"):
            problems.append(
                "a reward is required: --reward.remote_url (e.g. latr_sglang/tasks/reward_func.py)"
            )
        problems += reward_url_problems(given.get("reward.remote_url"), backend)
        if backend == "vllm" and "trainer.reward_timeout_s" in ours:
            problems.append(
                "--trainer.reward_timeout_s bounds the LATR engines' reward calls; --rollout.backend vllm "
                "runs OpenRLHF's own engines, which call the reward themselves"
            )
        # the fields OpenRLHF reads from every row of the prompt and eval files
        keys = {"data.input_key": inv.openrlhf.data.input_key, "data.label_key": inv.openrlhf.data.label_key}
        for flag in ("data.prompt_dataset", "eval.dataset"):
            problems += dataset_problems(flag, given.get(flag), keys)
        probs, prompts = given.get("data.prompt_probs"), given.get("data.prompt_dataset")
        if probs is not None and prompts:
            datasets = len(prompts.split(","))
            try:
                weights = [float(p) for p in probs.split(",")]
            except ValueError:
                weights = None
            if weights is None or len(weights) != datasets:
                problems.append(
                    f"--data.prompt_probs {probs}: expected {datasets} comma-separated numbers, one per "
                    f"dataset of --data.prompt_dataset {prompts}"
                )
        if backend != "vllm":
            vllm_engines = given.get("vllm.num_engines")
            if inv.sglang.num_engines is not None and vllm_engines not in (None, inv.sglang.num_engines):
                problems.append(
                    f"--sglang.num_engines {inv.sglang.num_engines} and --vllm.num_engines {vllm_engines} "
                    "disagree: give one of them"
                )
            engines = inv.sglang.num_engines or vllm_engines
            if not engines:
                problems.append(
                    f"--rollout.backend {backend} needs engines: --vllm.num_engines N "
                    "(or --sglang.num_engines N)"
                )
            urls = [u for u in (inv.sglang.server_urls or "").split(",") if u]
            if urls and engines and len(urls) != engines:
                problems.append(
                    f"--sglang.server_urls lists {len(urls)} URL{'s' * (len(urls) != 1)} for {engines} "
                    f"engine{'s' * (engines != 1)}: one per engine"
                )
            if given.get("train.agent_func_path"):
                problems.append("--train.agent_func_path is not supported with LATR engines")
        from openrlhf_ext.cli.ray_checks import ray_input_problems

        problems += ray_input_problems(inv)
    from openrlhf_ext.cli.range_checks import range_problems

    problems += range_problems(inv)  # numbers out of range: NaN clip, batch size 0, ... (issue 13)
    return problems


def flags_need(flags: list[str]) -> str:
    """'--a need' / '--a, --b need' with the verb agreeing: the start of a conflict message."""
    return f"{', '.join(flags)} {'needs' if len(flags) == 1 else 'need'}"


def local_prompts_problems(prompts: str) -> list[str]:
    """--data.prompt_dataset in local mode: one local JSONL file of prompt/label rows (not a hub dataset or a
    list, as in ray mode), which must exist."""
    flag = f"--data.prompt_dataset {prompts}"
    path = Path(prompts).expanduser()
    if path.is_file():
        return []
    if path.is_dir():
        return [f"{flag}: is a directory; local mode reads one JSONL file of prompt/label rows"]
    if "," in prompts:
        return [f"{flag}: no such file (local mode reads one JSONL file, not a comma-separated list)"]
    return [
        f"{flag}: no such file (local mode reads a local JSONL file of prompt/label rows; it does not fetch "
        "Hugging Face hub datasets)"
    ]


# Dataset names OpenRLHF's blending_datasets reads as local files (it loads them with `datasets`' builders)
DATA_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".arrow", ".py")


def dataset_problems(flag: str, value: str | None, keys: dict[str, str | None] | None = None) -> list[str]:
    """--data.prompt_dataset / --eval.dataset as OpenRLHF's blending_datasets splits them (comma-separated
    entries, each NAME[@DATA_DIR]): an entry that names a local path must exist. The rule: an entry is a
    local path when it is absolute, starts with `.` or `~`, has more than one `/`, or ends in a data-file
    suffix (.json, .jsonl, .csv, .parquet, .arrow, .py); otherwise (NAME or ORG/NAME) it is a Hugging Face hub
    dataset, unless a local path of that name exists, and is not checked here. A local .jsonl/.json file
    must also be JSON whose first row has the fields `keys` names (ray_checks.json_file_problems)."""
    from openrlhf_ext.cli.ray_checks import json_file_problems

    if value is None:
        return []
    problems = []
    for entry in value.split(","):
        name = entry.split("@")[0].strip()
        if not name:
            problems.append(f"--{flag} {value!r}: an empty dataset name (entries are comma-separated)")
            continue
        path = os.path.expanduser(name)
        local = (
            os.path.isabs(path)
            or name.startswith((".", "~"))
            or name.count("/") > 1
            or name.lower().endswith(DATA_FILE_SUFFIXES)
        )
        if local and not os.path.exists(path):
            problems.append(
                f"--{flag} {name}: no such file or directory (read as a local path: absolute, starting with "
                f". or ~, more than one '/', or a {'/'.join(DATA_FILE_SUFFIXES)} file; a Hugging Face hub "
                "dataset is named NAME or ORG/NAME)"
            )
        elif keys is not None:
            problems += [f"--{flag} {name}: {why}" for why in json_file_problems(Path(path), keys)]
    return problems


def reward_url_problems(value: str | None, backend: str) -> list[str]:
    """--reward.remote_url checked as the engines will load it, without running the file (engine_actor's
    reward_url_problem): LATR engines need one local .py file with a top-level reward_func that parses; with
    --rollout.backend vllm OpenRLHF's engines load a .py file the same way and take anything else as HTTP."""
    if not value:
        return []
    from openrlhf_ext.engine_actor import reward_file_problem, reward_url_problem

    urls = value.split(",")  # as OpenRLHF's validation splits it
    if backend != "vllm":
        problem = reward_url_problem(urls)
        return [problem] if problem else []
    first = urls[0]
    if first.endswith(".py") and "://" not in first:
        why = reward_file_problem(first)
        if why:
            return [f"--reward.remote_url {first}: {why}"]
    return []


# ---- local mode -------------------------------------------------------------------------------------------
def local_config(inv: Invocation):
    """The LocalTrainConfig the flags give; a ConfigError naming the flag (`--trainer.max_steps 0: must be a
    positive integer`) for a value it refuses."""
    from openrlhf_ext.local.config import LocalConfigError, LocalTrainConfig

    kwargs: dict[str, Any] = {"sampler": inv.rollout.sampler}
    sources: dict[str, tuple[str, Any]] = {}  # field -> (the flag that set it, its value as given)
    if "rollout.sampler" in inv.extension_given:
        sources["sampler"] = ("rollout.sampler", inv.rollout.sampler)
    # Every OpenRLHF flag on the command line, also one equal to OpenRLHF's default: local mode has its own
    # defaults, and a flag written out must win over them.
    given = {**inv.given, **inv.explicit}
    # The algorithm, chosen as in ray mode: DAPO is OpenRLHF's dynamic filtering; without it, GRPO.
    kwargs["algo"] = "dapo" if given.get("algo.dynamic_filtering_enable") else "grpo"
    # --actor.eps_clip_low_high (asymmetric, DAPO's clip-higher) wins over --actor.eps_clip
    for flag, value in sorted(given.items(), key=lambda kv: kv[0] == "actor.eps_clip_low_high"):
        name = LOCAL_FLAGS.get(flag)
        if not name or name == "algo":
            continue
        sources[name] = (flag, value)
        if name == "eps_clip_low_high":
            if value is None:
                continue
            kwargs["eps_clip_low"], kwargs["eps_clip_high"] = (float(x) for x in value)
            sources["eps_clip_low"] = sources["eps_clip_high"] = (flag, value)
        elif name == "eps_clip_low":
            kwargs["eps_clip_low"] = kwargs["eps_clip_high"] = float(value)
            sources["eps_clip_high"] = (flag, value)
        elif name == "use_wandb":
            kwargs["use_wandb"] = bool(value)
        elif name == "save_steps":
            kwargs["save_steps"] = max(int(value), 0)
        elif name == "dynamic_filtering_range":
            kwargs["dynamic_filtering_range"] = tuple(float(x) for x in value)
        elif name == "overlong_buffer_len":
            kwargs[name] = 0 if value is None else int(value)
        elif name == "resume":
            kwargs[name] = bool(value)
        else:
            kwargs[name] = value
    if kwargs.get("prompts"):
        # OpenRLHF's meaning, as in ray mode: a file's prompts are wrapped in the chat template only when
        # --data.apply_chat_template is given (a built-in task keeps its own: the paper's countdown prompt is
        # a chat turn, countdown-fewshot's is raw)
        kwargs["apply_chat_template"] = bool(given.get("data.apply_chat_template"))
    if given.get("algo.dynamic_filtering_enable"):
        kwargs["dynamic_filtering_rule"] = inv.dapo.dynamic_filtering_rule
        kwargs["dynamic_filtering_metric"] = inv.dapo.dynamic_filtering_metric
        kwargs["max_sampling_rounds"] = inv.dapo.max_sampling_rounds
    if "dapo.overlong_filtering" in inv.extension_given:  # else the local trainer's: DAPO yes, GRPO no
        kwargs["overlong_filtering"] = inv.dapo.overlong_filtering
    for name in (f.name for f in dataclasses.fields(DAPOOptions)):  # (each is a LocalTrainConfig field)
        if name in kwargs and f"dapo.{name}" in inv.extension_given:
            sources[name] = (f"dapo.{name}", kwargs[name])
    if inv.trainer.max_steps is not None:
        kwargs["steps"] = inv.trainer.max_steps
        sources["steps"] = ("trainer.max_steps", inv.trainer.max_steps)
    if inv.trainer.device is not None:  # --trainer.device, one flag for both modes (--local.device: alias)
        kwargs["device"] = inv.trainer.device
        sources["device"] = ("trainer.device", inv.trainer.device)
    kwargs.update(inv.local_overrides)
    sources.update({k: (f"local.{k}", v) for k, v in inv.local_overrides.items()})
    try:
        return LocalTrainConfig(**kwargs)
    except LocalConfigError as e:  # named as the command line gave it, not as the dataclass field
        raise ConfigError(e.message(_flag_namer(sources))) from None
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None


# the dests of latr-train's own flags (typed as add_dataclass_arguments parses them: `true`, `3,2`)
_OUR_DESTS = {
    f"{prefix}{f.name}" for prefix, cls in EXTENSION_GROUPS.items() for f in dataclasses.fields(cls)
}


def _flag_namer(sources: dict[str, tuple[str, Any]]):
    """name(field[, value]) for LocalConfigError.message: the flag that set the field, with its value as it is
    typed (`--trainer.max_steps 0`, `--local.countdown_numbers 3,2`, `--actor.eps_clip_low_high 0.2 0.28`); a
    field no flag gave is named by the flag that would set it, one no flag sets as LocalTrainConfig's."""
    from openrlhf_ext.local.config import NO_VALUE, python_name

    def name(field: str, value: Any = NO_VALUE) -> str:
        if field in sources:
            flag, typed = sources[field]
            return f"--{flag}" if value is NO_VALUE else f"--{flag}{_typed_value(flag, typed)}"
        flag = LOCAL_FIELD_FLAGS.get(field)
        if flag is None:
            return f"LocalTrainConfig.{python_name(field, value)}"
        return f"--{flag}" if value is NO_VALUE else f"--{flag}{_typed_value(flag, value)}"

    return name


def _typed_value(flag: str, value: Any) -> str:
    """` VALUE` as one would type it after --flag (nothing after an OpenRLHF switch)."""
    ours = flag in _OUR_DESTS or flag.startswith(("local.", "latr."))
    if isinstance(value, bool):
        return f" {str(value).lower()}" if ours else ""
    if value is None:
        return " none"
    if isinstance(value, list | tuple):
        return " " + (",".join if ours else " ".join)(shlex.quote(str(v)) for v in value)
    return f" {shlex.quote(str(value))}"


def resolved(inv: Invocation) -> dict[str, Any]:
    """The configuration --dry-run prints."""
    out: dict[str, Any] = {"trainer": dataclasses.asdict(inv.trainer), **inv.ext()}
    if inv.trainer.mode == "local":
        cfg = inv.local or local_config(inv)
        out["local"] = dataclasses.asdict(cfg)
        if cfg.builtin_task is None:  # a prompts file: no built-in task is used (the field keeps its default)
            out["local"]["task"] = None
        # the value the run uses: local mode filters overlong samples by default for DAPO, ray mode never
        out["local"]["overlong_filtering"] = out["dapo"]["overlong_filtering"] = cfg.filter_overlong
    else:
        out["openrlhf"] = _namespace_dict(inv.openrlhf)
    out["openrlhf_flags_given"] = {k: _normalize(v) for k, v in sorted(inv.given.items())}
    return out


def _namespace_dict(ns: Any) -> Any:
    if isinstance(ns, argparse.Namespace | types.SimpleNamespace):
        return {k: _namespace_dict(v) for k, v in vars(ns).items() if k != "latr_ext"}
    if isinstance(ns, tuple | list):
        return [_namespace_dict(v) for v in ns]
    return ns


def local_input_problems(cfg: Any) -> list[str]:
    """What local mode reads and writes first, checked by --dry-run and before the training stack (DeepSpeed,
    the models) is imported: the model folder (never downloaded) and the output directory (not created here:
    a dry run leaves no trace)."""
    problems = []
    model = model_problem(cfg.model)
    if model:
        problems.append(f"--actor.model_name_or_path {cfg.model}: {model}")
    problems += output_dir_problems(cfg.output_dir, cfg.resume)
    return problems


def model_problem(model: str) -> str | None:
    """Why `model` is neither a loadable local Hugging Face folder nor the embedded default, or None. The
    folder is checked as latr_sglang.models loads it (config.json, weights, tokenizer files); the embedded
    default is not converted here."""
    from latr_sglang.models import names_default_model, resolve_model_path

    if names_default_model(model):
        return None
    try:
        resolve_model_path(model)
    except (OSError, ValueError) as e:
        return str(e)
    return None


def output_dir_problems(output_dir: str, resume: bool) -> list[str]:
    """--ckpt.output_dir as the local trainer will prepare it (openrlhf_ext.local.checkpoint): an existing
    folder is checked by that same function (which changes nothing there), a new one's nearest existing
    parent must be a writable folder."""
    from openrlhf_ext.local.checkpoint import prepare_output_dir

    out = Path(output_dir).expanduser()
    if out.exists():
        try:
            prepare_output_dir(output_dir, resume=resume)
        except ValueError as e:
            return [str(e)]
        return []
    parent = next((p for p in out.parents if p.exists()), None)
    flag = f"--ckpt.output_dir {output_dir}"
    if parent is not None and not parent.is_dir():
        return [f"{flag}: {parent} is a file, not a directory"]
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        return [f"{flag}: cannot create it ({parent} is not writable)"]
    return []


def run_local(inv: Invocation) -> int:
    from openrlhf_ext.local_trainer import train

    return train(inv.local, inv.latr or LATRConfig.preset("countdown"), prog=PROG)


def run_ray(inv: Invocation) -> int:
    """OpenRLHF's own train(args), with LATR engine actors in place of its vLLM engines. With
    --trainer.device cpu, openrlhf_ext.cpu_mode answers OpenRLHF's CUDA calls in the driver and in every
    Ray worker (its setup hook), and Ray is told of logical GPUs for OpenRLHF's placement groups."""
    import functools

    args = inv.openrlhf
    cpu = inv.trainer.device == "cpu"
    problem = None if cpu else no_gpu_problem()
    if problem:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2
    record = None
    if inv.rollout.backend != "vllm":
        from openrlhf_ext import ray_patches, vllm_shim

        vllm_shim.ray_worker_setup()  # this process too: OpenRLHF's modules import vLLM names at load
        hook = "openrlhf_ext.vllm_shim.ray_worker_setup"
        resources: dict[str, int] = {}
        env_vars = {
            "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "true"),
            "NCCL_DEBUG": os.environ.get("NCCL_DEBUG", "WARN"),
            "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": os.environ.get("RAY_ENABLE_ZERO_COPY_TORCH_TENSORS", "1"),
            # read by the trainer's side of the weight sync (vllm_shim.sync_backend, one rule for both)
            vllm_shim.SYNC_BACKEND_ENV: str(args.vllm.sync_backend),
        }
        os.environ[vllm_shim.SYNC_BACKEND_ENV] = str(args.vllm.sync_backend)
        if cpu:
            from openrlhf_ext import cpu_mode

            if not cpu_mode.install():
                print(
                    f"{PROG}: --trainer.device cpu on a machine with CUDA: running on the GPUs",
                    file=sys.stderr,
                )
            else:
                hook = "openrlhf_ext.cpu_mode.ray_worker_setup"
                env_vars.update(cpu_mode.WORKER_ENV)
                engines = inv.sglang.num_engines or args.vllm.num_engines or 0
                resources = cpu_mode.ray_init_resources(args, engines)
        import ray

        if ray.is_initialized():
            if cpu and not ray.cluster_resources().get("GPU"):
                raise RuntimeError(
                    "--trainer.device cpu in an already started Ray without logical GPUs: start it with "
                    f"num_gpus >= {resources.get('num_gpus', 1)} and worker_process_setup_hook={hook}"
                )
        else:
            ray.init(**resources, runtime_env={"env_vars": env_vars, "worker_process_setup_hook": hook})
        if not cpu and not ray.cluster_resources().get("GPU"):
            print(f"{PROG}: error: the Ray cluster has no GPUs; {NO_GPU_HINT}", file=sys.stderr)
            return 2
        ray_patches.apply()
        # what the trainer actor did, reported by the patches (OpenRLHF's train() returns nothing)
        name = f"latr_run_record_{os.getpid()}_{time.time_ns()}"
        record = ray.remote(num_cpus=0)(ray_patches.RunRecord).options(name=name).remote()
        args.latr_ext[ray_patches.RUN_RECORD_KEY] = name
    import openrlhf.cli.train_ppo_ray as openrlhf_main

    if inv.rollout.backend != "vllm":
        from openrlhf_ext.engine_actor import create_rollout_engines

        openrlhf_main.create_vllm_engines = functools.partial(create_rollout_engines, ext=inv.ext())
    import ray

    try:
        openrlhf_main.train(args)
    except ray.exceptions.RayTaskError as e:
        # The error of an actor, nested once per actor that waited on another (driver -> trainer actor ->
        # engine actor), is printed by Ray as its tracebacks, then buried under the actors' log lines: the
        # tracebacks stay, the actors are stopped (their logs end), and the innermost error comes last.
        traceback.print_exc()
        ray.shutdown()
        print(f"{PROG}: error: {innermost_remote_error(e)}", file=sys.stderr)
        return 1
    if record is None:  # --rollout.backend vllm: OpenRLHF's own run, unpatched
        return 0

    problem = nothing_trained_problem(ray.get(record.summary.remote()), inv)
    if problem:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 3
    return 0


def innermost_remote_error(error: BaseException) -> str:
    """'Type: message' of the error that started a chain of Ray task errors (each actor that waited on another
    wraps its error once; an exception of the user's type arrives as a RayTaskError subclass of it)."""
    from ray.exceptions import RayTaskError

    while isinstance(error, RayTaskError):
        cause = getattr(error, "cause", None)
        if cause is None or cause is error:
            break
        error = cause
    return f"{type(error).__name__}: {error}"


NO_GPU_HINT = (
    "ray mode places OpenRLHF's actors and the engines on GPUs; on a machine without one add "
    "--trainer.device cpu --rollout.backend torch (OpenRLHF's trainer on the CPU), or use --trainer.mode "
    "local"
)


def no_gpu_problem() -> str | None:
    """Why a GPU run cannot start here, or None: without CUDA and without a Ray cluster to join (which may
    hold GPUs elsewhere; that case is checked once Ray is up), OpenRLHF's placement groups would wait for
    GPUs forever."""
    import torch

    if os.environ.get("RAY_ADDRESS") or torch.cuda.is_available():
        return None
    import ray

    if ray.is_initialized():
        return None
    return f"no CUDA GPU on this machine; {NO_GPU_HINT}"


def nothing_trained_problem(record: dict[str, int], inv: Invocation) -> str | None:
    """Why a finished ray-mode run trained nothing, or None (ray_patches.RunRecord's summary): no training
    step ran, or every step's advantages were all 0 (every group tied). The saved policy is then the model
    the run started from."""
    args = inv.openrlhf
    saved = f"the policy saved in {args.ckpt.output_dir} is the model it started from"
    differ = (
        "groups whose rewards differ: --rollout.temperature 1.0 or higher, --rollout.n_samples_per_prompt 8 "
        "or more, a reward with partial credit, or prompts the model solves sometimes"
    )
    if record["steps"] == 0 and record["start_step"] > 0:
        return (
            f"nothing left to train: the run resumed at step {record['start_step']} with its data used up "
            f"(--train.num_episodes {args.train.num_episodes}); raise --train.num_episodes to train on"
        )
    if record["steps"] == 0:
        if args.algo.dynamic_filtering_enable:
            why = (
                f"dynamic sampling never filled a batch of {args.rollout.batch_size} prompts whose rewards "
                "differ before the prompts ran out (its log lines above give the counts)"
            )
            hint = f"more prompts (--data.max_samples), --dapo.max_sampling_rounds, or {differ}"
        else:
            why = f"the prompts made no batch of --rollout.batch_size {args.rollout.batch_size}"
            hint = "more prompts (--data.max_samples) or a smaller --rollout.batch_size"
        return f"no training step ran: {why}; {saved}. Try {hint}"
    if record["informative_steps"] == 0:
        steps = f"{record['steps']} step{'s' if record['steps'] != 1 else ''}"
        return (
            f"{steps} ran, but every sample's advantage was 0 (every group's rewards "
            f"tied), so nothing was learned; {saved}. Make {differ}, or add --algo.dynamic_filtering_enable "
            "to keep only such groups"
        )
    return None


def interrupted_message(inv: Invocation | None) -> str:
    """The line Ctrl-C ends latr-train with outside the local trainer (which says its own step): before the
    run, or in ray mode, with the checkpoints --ckpt.load_enable resumes when OpenRLHF wrote some."""
    args = inv.openrlhf if inv is not None and inv.trainer.mode == "ray" else None
    ckpt = getattr(args, "ckpt", None)
    path = getattr(ckpt, "path", None)
    if path and getattr(ckpt, "save_steps", -1) > 0 and os.path.isdir(path) and os.listdir(path):
        return f"{PROG}: interrupted; --ckpt.load_enable resumes from the checkpoints in {path}"
    return f"{PROG}: interrupted"


def main(argv: list[str] | None = None) -> int:
    """latr-train. Exit status: 0 done, 2 a usage error (one line, `latr-train: error: ...`), 130 interrupted
    (Ctrl-C: one line, no traceback), 3 nothing trained (both modes); local mode also 4 (diverged)."""
    inv = None
    try:
        try:
            inv = parse(argv)
            if inv.trainer.mode == "local":
                inv.local = local_config(inv)
                problems = local_input_problems(inv.local)
                if problems:
                    raise ConfigError("; ".join(problems))
            from openrlhf_ext.cli.ray_checks import ray_warnings

            for warning in ray_warnings(inv):
                print(f"{PROG}: warning: {warning}", file=sys.stderr)
            if inv.dry_run:
                print(json.dumps(resolved(inv), indent=2, default=str))
                return 0
        except (ConfigError, ValueError, OpenRLHFMissing) as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            return 2
        return run_local(inv) if inv.trainer.mode == "local" else run_ray(inv)
    except KeyboardInterrupt:  # the local trainer says where its run stopped; this is before it, or Ray
        print(interrupted_message(inv), file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
