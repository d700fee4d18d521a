"""The local trainer's configuration: one dataclass, a help string per field (the CLI and `latr-train
--trainer.mode local` flags are generated from it; docs/FLAGS.md lists them)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from latr_sglang.config import help_text
from latr_sglang.tasks.prompts import TASKS, builtin_distinct_problems

# the most held-out problems a built-in task generates for eval_prompts (8 draws per prompt are made up front;
# a larger evaluation reads a file: eval_dataset)
MAX_BUILTIN_EVAL_PROMPTS = 4096

NO_VALUE: Any = object()
# how a message names a field: name(field) alone, name(field, value) with its value
FieldNamer = Callable[..., str]
# why a value is refused: text, or text that names other fields (rendered with the caller's FieldNamer)
Why = str | Callable[[FieldNamer], str]


def python_name(field: str, value: Any = NO_VALUE) -> str:
    """A field as the Python API spells it: `max_new_tokens`, `eval_dataset='nope'`."""
    return field if value is NO_VALUE else f"{field}={value!r}"


class LocalConfigError(ValueError):
    """A LocalTrainConfig field that cannot take its value. str() names fields as the Python API spells them
    (`LocalTrainConfig.steps=0: must be a positive integer`); `message(name)` as a command line does, with
    `name(field[, value])` naming a field (latr-train: the flag given, `--trainer.max_steps 0: ...`)."""

    def __init__(self, field: str, value: Any, why: Why) -> None:
        self.field, self.value, self._why = field, value, why
        super().__init__(f"LocalTrainConfig.{python_name(field, value)}: {self.why(python_name)}")

    def why(self, name: FieldNamer = python_name) -> str:
        return self._why if isinstance(self._why, str) else self._why(name)

    def message(self, name: FieldNamer) -> str:
        return f"{name(self.field, self.value)}: {self.why(name)}"


@dataclass
class LocalTrainConfig:
    model: str = field(
        default="smollm2", metadata=help_text("local HF folder, or 'smollm2' (embedded default)")
    )
    task: str = field(
        default="countdown-fewshot",
        metadata=help_text(
            "built-in task when no prompts file is given: countdown-fewshot (2 numbers in 1..max_number, a "
            "raw few-shot prompt, a one-line answer: what the embedded 135M model learns from) or countdown "
            "(the paper's prompt, countdown_numbers numbers in 1..100)"
        ),
    )
    prompts: str | None = field(
        default=None, metadata=help_text("JSONL with prompt/label (default: the built-in task)")
    )
    input_key: str = field(default="prompt", metadata=help_text("JSONL key of the prompt"))
    label_key: str = field(default="label", metadata=help_text("JSONL key of the label"))
    apply_chat_template: bool = field(
        default=True,
        metadata=help_text("wrap prompts in the chat template (not countdown-fewshot: its prompt is raw)"),
    )
    response_prefix: str | None = field(
        default=None,
        metadata=help_text(
            "text the assistant's turn starts with (a prefill, e.g. '<answer>'); the reward sees it "
            "(default: ' <answer>' for countdown-fewshot, else none)"
        ),
    )
    stop_at_newline: bool | None = field(
        default=None,
        metadata=help_text("end responses at the first newline (default: countdown-fewshot yes, else no)"),
    )
    max_number: int = field(default=12, metadata=help_text("countdown-fewshot: numbers are in 1..max_number"))
    countdown_numbers: tuple[int, int] = field(
        default=(3, 4), metadata=help_text("built-in countdown task: min,max numbers per problem")
    )
    algo: Literal["grpo", "dapo"] = field(default="dapo", metadata=help_text("grpo or dapo"))
    sampler: Literal["latr", "stochastic"] = field(default="latr", metadata=help_text("rollout sampler"))
    steps: int = field(default=10, metadata=help_text("training steps"))
    prompts_per_step: int = field(default=4, metadata=help_text("groups per step (after dynamic sampling)"))
    n_samples_per_prompt: int = field(default=8, metadata=help_text("n: trajectories per prompt"))
    max_new_tokens: int = field(default=128, metadata=help_text("response length limit"))
    learning_rate: float = field(default=1e-6, metadata=help_text("AdamW learning rate"))
    kl_coef: float = field(
        default=0.01,
        metadata=help_text(
            "k3 KL-loss coefficient to the initial policy (0.01: what the released LATR GRPO and DAPO runs "
            "used; 0: no reference model)"
        ),
    )
    reward: Literal["shaped", "accuracy"] = field(
        default="shaped",
        metadata=help_text(
            "what the advantages use: shaped = the task reward (countdown: 1 correct, 0.1 well-formed), "
            "accuracy = 1/0 correctness only (DAPO's rule-based reward: format earns nothing)"
        ),
    )
    overlong_buffer_len: int = field(
        default=0,
        metadata=help_text(
            "DAPO's soft overlong punishment: the last N tokens before max_new_tokens lower the reward "
            "linearly, down to -overlong_penalty_factor (0: off, as in the released LATR scripts; DAPO's "
            "paper: 4096 of 20480, factor 1)"
        ),
    )
    overlong_penalty_factor: float = field(
        default=1.0, metadata=help_text("DAPO's soft overlong punishment: the largest penalty")
    )
    eps_clip_low: float = field(default=0.2, metadata=help_text("PPO clip, lower"))
    eps_clip_high: float | None = field(
        default=None, metadata=help_text("PPO clip, upper (default GRPO .2, DAPO .28)")
    )
    max_sampling_rounds: int = field(default=3, metadata=help_text("DAPO over-sampling rounds per step"))
    dynamic_filtering_rule: Literal["std", "mean_range"] = field(
        default="std",
        metadata=help_text(
            "DAPO: std = keep groups whose scores differ; mean_range = mean score inside the range"
        ),
    )
    dynamic_filtering_metric: Literal["score", "reward"] = field(
        default="score",
        metadata=help_text(
            "what dynamic sampling filters on: score = accuracy (DAPO, OpenRLHF), reward = the shaped reward "
            "the advantages use (a group is dropped exactly when all its advantages are 0)"
        ),
    )
    dynamic_filtering_range: tuple[float, float] = field(
        default=(0.0, 1.0), metadata=help_text("(low, high), open, for dynamic_filtering_rule=mean_range")
    )
    overlong_filtering: bool | None = field(
        default=None,
        metadata=help_text("mask truncated samples out of the loss (default: DAPO yes, GRPO no)"),
    )
    temperature: float = field(default=1.0, metadata=help_text("rollout sampling temperature"))
    grad_clip: float = field(default=1.0, metadata=help_text("gradient norm clip"))
    micro_batch_size: int = field(default=8, metadata=help_text("sequences per forward/backward"))
    shared_prefix: bool = field(
        default=True,
        metadata=help_text(
            "update: forward the tokens a micro-batch's rows share once (few-shot examples, a group's "
            "prompt, LATR branches' response prefixes) as a prefix tree; same log-probs and gradients as "
            "the padded forward, a fraction of the compute"
        ),
    )
    seed: int = field(default=0, metadata=help_text("seed of data order, sampling and init"))
    device: str = field(default="cpu", metadata=help_text("cpu or cuda[:N]: the actor, reference and engine"))
    output_dir: str = field(
        default="outputs/local", metadata=help_text("metrics.csv, tensorboard/, config.json, policy/")
    )
    save_steps: int = field(
        default=0,
        metadata=help_text(
            "trainer checkpoint (policy, optimizer, data position, RNG) every N steps and after the last "
            "(0: none); the final policy is always saved as a HF folder, output_dir/policy"
        ),
    )
    resume: bool = field(
        default=False, metadata=help_text("continue from the latest checkpoint in output_dir")
    )
    force_resume: bool = field(
        default=False,
        metadata=help_text(
            "resume even when the checkpoint's config differs in a field that changes what is trained "
            "(seed, lengths, model, ...; refused without it)"
        ),
    )
    use_wandb: bool = field(
        default=False, metadata=help_text("log to wandb too (offline unless WANDB_MODE says else)")
    )
    wandb_project: str = field(default="latr-sglang", metadata=help_text("wandb project name"))
    eval_prompts: int = field(
        default=0,
        metadata=help_text("evaluate before and after training on this many held-out prompts (0: no)"),
    )
    eval_dataset: str | None = field(
        default=None,
        metadata=help_text("eval set: a bundled name or JSONL (default: held-out countdown problems)"),
    )
    eval_n: int = field(default=8, metadata=help_text("samples per eval prompt (pass@k up to k = eval_n)"))
    eval_every: int = field(
        default=0,
        metadata=help_text(
            "also evaluate every N steps (eval_step{N}.json; --eval.steps; 0 or less: only before and after)"
        ),
    )
    eval_before: bool = field(
        default=True,
        metadata=help_text(
            "evaluate the starting policy too (false: reuse output_dir/eval_before.json, e.g. copied from an "
            "earlier run with the same seed, task and eval settings into a new output_dir, or that of a run "
            "resumed with --ckpt.load_enable)"
        ),
    )

    def __post_init__(self) -> None:
        def bad(name: str, why: Why) -> LocalConfigError:
            return LocalConfigError(name, getattr(self, name), why)

        if self.algo not in ("grpo", "dapo"):
            raise bad("algo", "must be 'grpo' or 'dapo'")
        if self.sampler not in ("latr", "stochastic"):
            raise bad("sampler", "must be 'latr' or 'stochastic'")
        if self.task not in TASKS:
            raise bad(
                "task",
                lambda n: (
                    f"expected one of {', '.join(TASKS)} (other problems: a JSONL file as {n('prompts')})"
                ),
            )
        if self.reward not in ("shaped", "accuracy"):
            raise bad("reward", "must be 'shaped' or 'accuracy'")
        if not isinstance(self.max_number, int) or self.max_number < 2:
            raise bad("max_number", "must be an integer >= 2")
        if not math.isfinite(self.kl_coef) or self.kl_coef < 0:
            raise bad("kl_coef", "must be a finite number >= 0")
        if not isinstance(self.overlong_buffer_len, int) or self.overlong_buffer_len < 0:
            raise bad("overlong_buffer_len", "must be an integer >= 0")
        if self.overlong_buffer_len > self.max_new_tokens:
            raise bad(
                "overlong_buffer_len",
                lambda n: (
                    f"must be <= {n('max_new_tokens', self.max_new_tokens)} (the penalty's window ends there)"
                ),
            )
        if not math.isfinite(self.overlong_penalty_factor) or self.overlong_penalty_factor < 0:
            raise bad("overlong_penalty_factor", "must be a finite number >= 0")
        for name in (
            "steps",
            "prompts_per_step",
            "n_samples_per_prompt",
            "max_new_tokens",
            "micro_batch_size",
            "max_sampling_rounds",
        ):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise bad(name, "must be a positive integer")
        if self.n_samples_per_prompt < 2:
            raise bad("n_samples_per_prompt", "group advantages need at least 2 samples per prompt")
        if not self.learning_rate > 0 or not math.isfinite(self.learning_rate):
            raise bad("learning_rate", "must be a positive number")
        if self.dynamic_filtering_rule not in ("std", "mean_range"):
            raise bad("dynamic_filtering_rule", "must be 'std' or 'mean_range'")
        low, high = self.dynamic_filtering_range
        if not low < high:
            raise bad("dynamic_filtering_range", "needs low < high")
        low_n, high_n = self.countdown_numbers
        if not 1 <= low_n <= high_n:
            raise bad("countdown_numbers", "needs 1 <= min <= max")
        if not isinstance(self.eval_prompts, int) or self.eval_prompts < 0:
            raise bad("eval_prompts", "must be an integer >= 0 (0: no evaluation)")
        if not isinstance(self.eval_n, int) or self.eval_n < 1:
            raise bad("eval_n", "must be a positive integer")
        if self.eval_prompts and self.prompts is None and self.eval_dataset is None:
            self._check_builtin_eval_prompts(bad)
        if self.input_key == self.label_key:
            raise bad(
                "label_key",
                lambda n: (
                    f"the same key as {n('input_key', self.input_key)}: the prompt would be its own label"
                ),
            )
        if self.eval_dataset is not None:
            from latr_sglang.evaluate import DATASETS

            if self.eval_dataset not in DATASETS and not Path(self.eval_dataset).is_file():
                raise bad("eval_dataset", f"neither a bundled set ({', '.join(DATASETS)}) nor a file")
        if self.eval_prompts and self.prompts is not None and self.eval_dataset is None:
            raise bad(
                "eval_prompts",
                lambda n: (
                    f"evaluating on a prompts file ({n('prompts', self.prompts)}) needs a held-out eval "
                    f"set: {n('eval_dataset')}"
                ),
            )
        import torch  # here, not at import: latr-train builds its --local.* flags from this module

        try:
            device = torch.device(self.device)
        except RuntimeError:
            raise bad("device", "not a device (cpu, cuda, cuda:N)") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise bad("device", "CUDA is not available on this machine")
        if device.type not in ("cpu", "cuda"):
            raise bad("device", "expected cpu or cuda[:N]")
        if not self.temperature > 0 or not math.isfinite(self.temperature):
            raise bad("temperature", "must be a positive number")

    def _check_builtin_eval_prompts(self, bad: Callable[[str, Why], ValueError]) -> None:
        """eval_prompts held-out problems of a built-in task: refused before any is generated when the task
        has too few distinct problems (some must stay for training), or past MAX_BUILTIN_EVAL_PROMPTS."""
        if self.eval_prompts > MAX_BUILTIN_EVAL_PROMPTS:
            raise bad(
                "eval_prompts",
                lambda n: (
                    f"a built-in task holds out at most {MAX_BUILTIN_EVAL_PROMPTS} problems (a larger "
                    f"evaluation reads a file: {n('eval_dataset')})"
                ),
            )
        distinct = builtin_distinct_problems(
            self.task, self.max_number, self.countdown_numbers, MAX_BUILTIN_EVAL_PROMPTS
        )
        if distinct is not None and self.eval_prompts >= distinct:
            fewshot = self.task == "countdown-fewshot"
            shape = f"max_number {self.max_number}" if fewshot else "one number per problem"
            raise bad(
                "eval_prompts",
                lambda n: (
                    f"the built-in task {self.task} ({shape}) has only {distinct} distinct problems, "
                    f"and training needs some of them: {n('eval_prompts')} must be below {distinct}"
                ),
            )

    @property
    def kl(self) -> float:
        return self.kl_coef

    @property
    def builtin_task(self) -> str | None:
        return None if self.prompts is not None else self.task

    @property
    def prefix(self) -> str:
        if self.response_prefix is not None:
            return self.response_prefix
        return " <answer>" if self.builtin_task == "countdown-fewshot" else ""

    @property
    def chat(self) -> bool:
        return self.apply_chat_template and self.builtin_task != "countdown-fewshot"

    @property
    def stops_at_newline(self) -> bool:
        if self.stop_at_newline is not None:
            return self.stop_at_newline
        return self.builtin_task == "countdown-fewshot"

    @property
    def filter_overlong(self) -> bool:
        return self.overlong_filtering if self.overlong_filtering is not None else self.algo == "dapo"

    @property
    def clip_high(self) -> float:
        return (
            self.eps_clip_high if self.eps_clip_high is not None else (0.2 if self.algo == "grpo" else 0.28)
        )
