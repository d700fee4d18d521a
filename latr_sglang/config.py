"""LATRConfig: every knob of LATR (docs/ALGORITHM.md), one object for the CLI, OpenRLHF flags and
the frontend. Presets `countdown` and `math` hold the released scripts' values; YAML/JSON load and save."""

from __future__ import annotations

import argparse
import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from latr_sglang.messages import short_repr

EXEMPT_CHARS = "+-*/\\<>=()[]{}_^&%$0123456789"


class ConfigError(ValueError):
    """A bad LATRConfig value; the message names the field and the value (`field`, when one field is bad,
    lets a caller say where the value came from, e.g. a config file)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def help_text(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class LATRConfig:
    # --- branching --------------------------------------------------------------------------------
    max_branch_per_token: int = field(
        default=2,
        metadata=help_text("m: candidates per position are the top-m raw tokens (the argmax and m-1 forks)"),
    )
    tau_abs: float = field(
        default=0.25, metadata=help_text("a fork candidate needs raw probability p_j > tau_abs")
    )
    tau_rel: float = field(default=0.15, metadata=help_text("and p_0 - p_j < tau_rel (rel_rule=paper)"))
    rel_rule: Literal["paper", "released"] = field(
        default="paper",
        metadata=help_text(
            "paper: fork iff p_0 - p_j < tau_rel; released: the inverted rule of the released runs"
        ),
    )
    tree_sampling: Literal["greedy", "sample"] = field(
        default="greedy",
        metadata=help_text(
            "greedy: branches append the argmax (reference); sample: a token drawn with the training "
            "sampling parameters, and the other valid top-m tokens fork"
        ),
    )
    fork_between_stops: bool = field(
        default=True,
        metadata=help_text(
            "fork where the branch's token and the candidate both end the response (e.g. EOS vs a newline "
            "stop id): the child repeats its parent's text. True (default) is the paper's rule; False skips "
            "those forks (a stop candidate where the branch continues still forks)"
        ),
    )
    admission_order: Literal["rank", "branch"] = field(
        default="rank",
        metadata=help_text(
            "which fork candidates fill the tree's free slots first: rank (default, the reference): every "
            "branch's rank-1 candidate (branches in creation order), then every rank-2 one, ...; branch: all "
            "candidates of the first branch, then the next branch's. Equal for m=2"
        ),
    )
    # --- pruning ----------------------------------------------------------------------------------
    lookahead_steps: tuple[int, ...] = field(
        default=(20, 30, 50),
        metadata=help_text("child ages (tokens after its fork) at which pruning is checked"),
    )
    prune_edit_distance_below: float | None = field(
        default=0.4, metadata=help_text("prune if normalized token edit distance < this (None: metric off)")
    )
    prune_suffix_match_above: float | None = field(
        default=None, metadata=help_text("prune if longest shared suffix / r > this (None: metric off)")
    )
    prune_rouge_l_above: float | None = field(
        default=None, metadata=help_text("prune if token ROUGE-L F1 > this (None: metric off)")
    )
    exempt_chars: str = field(
        default=EXEMPT_CHARS,
        metadata=help_text("the symbol string of the exemption test (see exempt_rule)"),
    )
    exempt_rule: Literal["chars", "reference"] = field(
        default="chars",
        metadata=help_text(
            "forks whose parent token (decoded, stripped) is exempt are never pruned. chars (default, the "
            "stated intent: whitespace, digits, operators): empty or every character in exempt_chars, so "
            "'20', '))' and '$$' are exempt; reference: a substring of exempt_chars, as the released code "
            "tests it ('12' is exempt, '20' and '))' are not)"
        ),
    )
    # --- group split and exit ---------------------------------------------------------------------
    mix_ratio_schedule: dict[int, float] = field(
        default_factory=lambda: {0: 1.0, 10: 0.75, 20: 0.5, 80: 0.25, 200: 0.0},
        metadata=help_text(
            "eta by training step (value of the largest key <= step): k_latr = round(n * eta), Python's "
            "round (half to even, as the reference): n=10, eta=0.25 gives 2"
        ),
    )
    exit_threshold: float = field(
        default=0.98, metadata=help_text("leave the tree phase when this share is full")
    )
    exit_decay: float = field(
        default=0.05, metadata=help_text("threshold decay: thr = exit_threshold - decay*t/L")
    )
    force_return_step: int = field(
        default=512, metadata=help_text("leave the tree phase at this step regardless")
    )
    exit_scope: Literal["prompt", "batch"] = field(
        default="prompt",
        metadata=help_text(
            "prompt: each tree leaves when its own is full and settled; batch: the reference rule"
        ),
    )
    exit_age_rule: Literal["reference", "pending"] = field(
        default="reference",
        metadata=help_text(
            "which branches must be old enough to leave the tree phase at token s (0-based). reference "
            "(default, as the released runs): every branch, the root (born at 0) and finished ones included, "
            "with birth + max(lookahead_steps) < s, so a tree decodes at least max(lookahead_steps) + 2 "
            "tokens; pending: only unfinished children, until their last lookahead check has run (birth + "
            "max(lookahead_steps) <= s + 1): shorter tree phases, and a tree with k_latr = 1 leaves at once"
        ),
    )
    fill_after_finished_root: Literal["sample", "copy"] = field(
        default="sample",
        metadata=help_text(
            "fills of a tree with fewer than k_latr branches continue the root's prefix by sampling; when "
            "the root has already finished: sample (default) draws fresh samples from the prompt, copy "
            "repeats the finished root, as the reference does (duplicates carry no learning signal)"
        ),
    )
    # --- engine scheduling (no effect on the tree) ------------------------------------------------
    chunk_size: int = field(
        default=32, metadata=help_text("tokens per tree-phase engine request (speculation)")
    )
    chunks_end_on_lookahead: bool = field(
        default=True,
        metadata=help_text(
            "end a child's tree-phase requests on its lookahead ages (birth + each age), so that a prune "
            "check runs as soon as its tokens exist: fewer tokens decoded for pruned children, more "
            "requests. False: plain chunk_size requests, fewer of them. Ignored with an engine that hands "
            "over parts (tree_part_interval > 0): its requests do not end on the ages, and a check at an "
            "age runs at the first multiple of tree_part_interval at or after it. The greedy tree is the "
            "same either way (a sampled tree phase draws from seeds fixed by where its requests start)"
        ),
    )
    tree_part_interval: int = field(
        default=8,
        metadata=help_text(
            "engines that hand a request's output over in parts while it decodes (the torch engine; SGLang, "
            "over HTTP or in-process, streamed at this interval) give the driver a tree-phase request's "
            "tokens at every response position that is a multiple of this, so that replay, forks and prune "
            "checks need not wait for the request to end (a check at a lookahead age runs at the first "
            "multiple at or after it); 0: whole requests only. Speed only in a greedy tree phase (a sampled "
            "one draws from seeds fixed by where its requests start, which chunks_end_on_lookahead moves)"
        ),
    )

    def __post_init__(self) -> None:
        # only a list or tuple becomes the tuple: tuple(20) would raise a bare TypeError, tuple("20") or
        # tuple({5: 1}) would silently turn nonsense into steps; validate() names anything else
        if isinstance(self.lookahead_steps, list | tuple):
            self.lookahead_steps = tuple(self.lookahead_steps)
        self.validate()

    def validate(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"LATRConfig.{name}={short_repr(getattr(self, name), 160)}: {why}", field=name)

        def is_int(value: Any) -> bool:  # True is an int to Python, never a count or a step here
            return isinstance(value, int) and not isinstance(value, bool)

        def is_number(value: Any) -> bool:
            return isinstance(value, int | float) and not isinstance(value, bool)

        if not is_int(self.max_branch_per_token) or self.max_branch_per_token < 1:
            raise bad("max_branch_per_token", "must be an integer >= 1")
        for name in ("tau_abs", "tau_rel", "exit_threshold", "exit_decay"):
            value = getattr(self, name)
            if not is_number(value) or not 0.0 <= value <= 1.0:
                raise bad(name, "must be a number in [0, 1]")
        for name in ("prune_edit_distance_below", "prune_suffix_match_above", "prune_rouge_l_above"):
            value = getattr(self, name)
            if value is not None and (not is_number(value) or not 0.0 <= value <= 1.0):
                raise bad(name, "must be None (off) or a number in [0, 1]")
        if not isinstance(self.exempt_chars, str):  # a number or None would crash the first prune check
            raise bad("exempt_chars", "must be a string")
        if self.rel_rule not in ("paper", "released"):
            raise bad("rel_rule", "must be 'paper' or 'released'")
        if self.tree_sampling not in ("greedy", "sample"):
            raise bad("tree_sampling", "must be 'greedy' or 'sample'")
        for name in ("fork_between_stops", "chunks_end_on_lookahead"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "must be true or false")
        for name, allowed in (
            ("exit_scope", ("prompt", "batch")),
            ("exit_age_rule", ("reference", "pending")),
            ("exempt_rule", ("chars", "reference")),
            ("admission_order", ("rank", "branch")),
            ("fill_after_finished_root", ("sample", "copy")),
        ):
            if getattr(self, name) not in allowed:
                raise bad(name, "must be " + " or ".join(repr(a) for a in allowed))
        steps = self.lookahead_steps
        if not isinstance(steps, tuple):
            raise bad("lookahead_steps", "must be a list of positive integers")
        if not steps:
            raise bad("lookahead_steps", "must not be empty")
        if any(not is_int(s) or s < 1 for s in steps):
            raise bad("lookahead_steps", "must be positive integers")
        if list(steps) != sorted(set(steps)):
            raise bad("lookahead_steps", "must be strictly increasing")
        schedule = self.mix_ratio_schedule
        if not isinstance(schedule, dict) or not schedule:
            raise bad("mix_ratio_schedule", "must be a non-empty mapping {step: eta}")
        for key, value in schedule.items():
            if not is_int(key) or key < 0:
                raise bad("mix_ratio_schedule", f"key {key!r} must be a non-negative integer step")
            if not is_number(value) or not 0.0 <= value <= 1.0:
                raise bad("mix_ratio_schedule", f"value {value!r} at step {key} must be a number in [0, 1]")
        if 0 not in schedule:
            raise bad("mix_ratio_schedule", "needs a value at step 0")
        if not is_int(self.force_return_step) or self.force_return_step < 1:
            raise bad("force_return_step", "must be a positive integer")
        if steps[0] >= self.force_return_step:
            # legal (the reference accepts it), but the tree phase then ends before any check can run
            warnings.warn(
                f"LATR config: lookahead_steps={list(steps)} start at or after force_return_step="
                f"{self.force_return_step}, so the tree phase ends before any prune check runs: every fork "
                "is kept",
                stacklevel=3,
            )
        if not is_int(self.chunk_size) or self.chunk_size < 1:
            raise bad("chunk_size", "must be a positive integer")
        if not is_int(self.tree_part_interval):
            raise bad("tree_part_interval", "must be an integer >= 0 (0: whole requests only)")
        if self.tree_part_interval < 0:
            raise bad("tree_part_interval", "must be an integer >= 0 (0: whole requests only)")
        # token counts travel to SGLang as 32-bit integers (max_new_tokens, stream_interval)
        for name in ("chunk_size", "tree_part_interval", "force_return_step"):
            if getattr(self, name) > MAX_TOKENS:
                raise bad(name, f"must be at most {MAX_TOKENS} tokens")
        if steps[-1] > MAX_TOKENS:
            raise bad("lookahead_steps", f"must be at most {MAX_TOKENS} tokens")

    # --- presets and files ------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> LATRConfig:
        _check_preset(name)
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
        if unknown:  # named as from_dict names them, not as a bare TypeError from __init__
            raise ConfigError(f"unknown LATR config field(s): {', '.join(unknown)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lookahead_steps"] = list(self.lookahead_steps)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LATRConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"a LATR config must be a mapping, got {type(data).__name__}")
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known - {"preset"})
        if unknown:
            raise ConfigError(f"unknown LATR config field(s): {', '.join(unknown)}")
        base = PRESETS[_check_preset(data.pop("preset"))] if "preset" in data else {}
        if "mix_ratio_schedule" in data and isinstance(data["mix_ratio_schedule"], dict):
            data["mix_ratio_schedule"] = {_int_key(k): v for k, v in data["mix_ratio_schedule"].items()}
        return cls(**{**base, **data})

    def save(self, path: str | Path) -> None:
        path = Path(path)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        else:
            path.write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> LATRConfig:
        data = read_config_file(path)
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}", field=e.field) from None


MAX_TOKENS = 2**31 - 1


def read_config_file(path: str | Path, flag: str = "") -> dict[str, Any]:
    """The mapping a YAML (.yaml/.yml) or JSON file holds; a ConfigError naming the file (and `flag`, the
    option that gave it) when it is missing, not a file, unreadable, undecodable or not a mapping."""
    where = f"{flag} {path}" if flag else str(path)
    file = Path(path).expanduser()
    if file.is_dir():
        raise ConfigError(f"{where}: is a directory, expected a YAML or JSON file")
    if not file.is_file():
        raise ConfigError(f"{where}: no such file")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{where}: cannot read ({e.strerror or e})") from None
    if file.suffix in (".yaml", ".yml"):
        import yaml

        try:
            # aliases (*name) let a few hundred bytes stand for billions of values, and no config needs
            # them: refused while parsing, before anything is built
            if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
                raise ConfigError(f"{where}: uses YAML aliases (*name); write the values out instead")
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None)
            raise ConfigError(f"{where}: not valid YAML{at}" + (f" ({problem})" if problem else "")) from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{where}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a LATR config file must hold a mapping, got {type(data).__name__}")
    return data


def _check_preset(name: Any) -> str:
    """`name` if it is a preset's name, else a ConfigError listing the known ones."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError(f"unknown LATR preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return name


def _int_key(key: Any) -> Any:
    """JSON object keys are strings: accept "10" as step 10, leave anything else for validation to name."""
    if isinstance(key, str) and key.strip().isdigit():
        return int(key)
    return key


PRESETS: dict[str, dict[str, Any]] = {
    "countdown": dict(
        max_branch_per_token=2,
        tau_abs=0.25,
        tau_rel=0.15,
        prune_edit_distance_below=0.4,
        prune_suffix_match_above=None,
        prune_rouge_l_above=None,
        lookahead_steps=(20, 30, 50),
        mix_ratio_schedule={0: 1.0, 10: 0.75, 20: 0.5, 80: 0.25, 200: 0.0},
        force_return_step=512,
    ),
    "math": dict(
        max_branch_per_token=2,
        tau_abs=0.15,
        tau_rel=0.25,
        prune_edit_distance_below=None,
        prune_suffix_match_above=0.2,
        prune_rouge_l_above=0.5,
        lookahead_steps=(20, 30, 50),
        mix_ratio_schedule={0: 1.0, 100: 0.75, 200: 0.5, 300: 0.25},
        force_return_step=1024,
    ),
    # Small models on short answers (the main job: SmolLM2-135M, countdown-fewshot, ~10-token answers that
    # stop at a newline). The released thresholds fork ~1.4 times per prompt there (the model's uncertain
    # choices, the operator and the digits, sit at p ~0.05-0.4) and lookahead ages of 20+ tokens outlive
    # the answers. Forking on every top-3 candidate above p = 0.05 (tau_rel = 1 leaves only tau_abs) fills
    # the tree with distinct answers: 7.4 distinct answers per group of 8 vs 3.6 for plain sampling at no
    # extra wall time (BENCHMARKS.md, "LATR on the embedded model: a sweep"; latr_sglang.bench.sweep).
    "small": dict(
        max_branch_per_token=3,
        tau_abs=0.05,
        tau_rel=1.0,
        prune_edit_distance_below=0.4,
        prune_suffix_match_above=None,
        prune_rouge_l_above=None,
        lookahead_steps=(2, 4, 8),
        mix_ratio_schedule={0: 1.0, 10: 0.75, 20: 0.5, 80: 0.25, 200: 0.0},
        force_return_step=512,
        chunk_size=16,
    ),
}


# ---- command-line flags generated from the dataclass ----------------------------------------------------
def _parse_schedule(text: str) -> dict[int, float]:
    """'0:1,10:0.75' or a JSON object (the values are then checked by LATRConfig.validate)."""
    expected = f"expected STEP:VALUE pairs like '0:1,10:0.75' (or a JSON object), got {short_repr(text)}"
    text = text.strip()
    try:
        if text.startswith("{"):
            loaded = json.loads(text)
            if not isinstance(loaded, dict):
                raise ValueError
            return {_int_key(k): v for k, v in loaded.items()}
        out: dict[int, float] = {}
        for part in text.split(","):
            key, colon, value = part.partition(":")
            if not colon:
                raise ValueError
            out[_int_key(key.strip())] = float(value)
        return out
    except ValueError:
        raise argparse.ArgumentTypeError(expected) from None


def _parse_optional_float(text: str) -> float | None:
    if text.lower() in ("none", "off", "null"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or none, got {short_repr(text)}") from None


def _parse_int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers like '8,16,32', got {short_repr(text)}"
        ) from None


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("1", "0", "true", "false", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value in ("1", "true", "yes")


def _pair_parser(kind: type, what: str) -> Any:
    def parse(text: str) -> tuple:
        try:
            low, high = (kind(x) for x in text.replace(",", " ").split())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected two {what} 'LOW,HIGH', got {text!r}") from None
        return low, high

    return parse


_PARSERS: dict[str, Any] = {
    "tuple[float, float]": _pair_parser(float, "numbers"),
    "tuple[int, int]": _pair_parser(int, "integers"),
    "int": int,
    "float": float,
    "str": str,
    "bool": _parse_bool,
    "float | None": _parse_optional_float,
    "int | None": int,
    "bool | None": _parse_bool,
    "str | None": str,
    "tuple[int, ...]": _parse_int_tuple,
    "dict[int, float]": _parse_schedule,
}


def add_dataclass_arguments(group: Any, cls: type, prefix: str = "", only: Any = None) -> None:
    """One --<prefix><field> flag per dataclass field (or per field named in `only`), typed from its
    annotation, help from its metadata.

    Absent flags are suppressed (not set to a default), so `dataclass_overrides` sees only what was given.
    """
    for f in dataclasses.fields(cls):
        if only is not None and f.name not in only:
            continue
        type_name = str(f.type)
        choices = None
        if type_name.startswith("Literal["):
            choices = [c.strip().strip("'\"") for c in type_name[len("Literal[") : -1].split(",")]
        group.add_argument(
            f"--{prefix}{f.name}",
            dest=f"{prefix}{f.name}",
            type=_PARSERS.get(type_name, str),
            choices=choices,
            default=argparse.SUPPRESS,
            help=f.metadata.get("help"),
        )


def dataclass_overrides(args: Any, cls: type, prefix: str = "") -> dict[str, Any]:
    """The fields of `cls` given on the command line."""
    values = vars(args)
    return {
        f.name: values[f"{prefix}{f.name}"] for f in dataclasses.fields(cls) if f"{prefix}{f.name}" in values
    }


def add_latr_arguments(parser: Any, prefix: str = "latr.") -> None:
    """Adds --latr.preset, --latr.config and one --latr.<field> flag per LATRConfig field."""
    group = parser.add_argument_group("LATR", "tree rollout settings (defaults: the preset, else LATRConfig)")
    group.add_argument(
        f"--{prefix}preset",
        dest=f"{prefix}preset",
        choices=sorted(PRESETS),
        default=None,
        help="start from a preset: countdown / math, the released scripts' values for that task; small, "
        "tuned in this project for small models",
    )
    group.add_argument(
        f"--{prefix}config",
        dest=f"{prefix}config",
        default=None,
        help="a YAML/JSON file with LATRConfig fields (flags override it)",
    )
    add_dataclass_arguments(group, LATRConfig, prefix)


def latr_config_from_args(args: Any, prefix: str = "latr.", default_preset: str | None = None) -> LATRConfig:
    """--latr.config, then --latr.preset (or default_preset), then the --latr.<field> flags, layered."""
    values = vars(args)
    data: dict[str, Any] = {}
    path = values.get(f"{prefix}config")
    if path:
        data = read_config_file(path, flag=f"--{prefix}config")
    from_file = set(data)
    preset = values.get(f"{prefix}preset") or data.get("preset") or default_preset
    if preset:
        data["preset"] = preset
    overrides = dataclass_overrides(args, LATRConfig, prefix)
    data.update(overrides)
    try:
        return LATRConfig.from_dict(data)
    except ConfigError as e:
        # a bad value the file holds (flags override it), or an unknown key or preset, which only a file can
        # hold (flags are argparse-checked): say which file
        if path and (e.field is None or (e.field in from_file and e.field not in overrides)):
            raise ConfigError(f"--{prefix}config {path}: {e}", field=e.field) from None
        if e.field in overrides:  # name the flag that was typed, not the dataclass field
            text = str(e).replace(f"LATRConfig.{e.field}=", f"--{prefix}{e.field} ", 1)
            raise ConfigError(text, field=e.field) from None
        raise
