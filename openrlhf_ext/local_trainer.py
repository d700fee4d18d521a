"""Single-process GRPO/DAPO with LATR rollouts, built from OpenRLHF's components (CPU or one GPU).

    python -m openrlhf_ext.local_trainer --algo dapo --sampler latr --steps 20 --latr.preset countdown

Each step: sample groups with the LATR driver on our in-process torch engine, score them with the task reward,
keep the informative groups (DAPO: accuracy not all equal, over-sampling up to a bound), compute
group-normalized advantages, and update OpenRLHF's `Actor` with its `PolicyLoss` (clip-higher for DAPO,
token-level loss) and, for GRPO, the k3 KL to the initial policy. The new weights are pushed into the engine
through the engine contract's update_weights before the next rollout. Metrics use OpenRLHF's names, plus
`latr/*`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from latr_sglang.config import (
    LATRConfig,
    add_dataclass_arguments,
    add_latr_arguments,
    dataclass_overrides,
    help_text,
    latr_config_from_args,
)
from latr_sglang.driver import GroupResult, LATRSampler
from latr_sglang.engines.base import SamplingParams
from latr_sglang.metrics import rollout_metrics
from latr_sglang.tasks.prompts import (
    TASKS,
    encode_prompts,
    newline_token_ids,
    read_jsonl,
    split_problems,
    task_problems,
)
from openrlhf_ext.checkpointing import RESUME_MAY_CHANGE, CheckpointError, CheckpointStore
from openrlhf_ext.dapo import group_advantages, keep_group, overlong_mask, soft_overlong_penalty

RewardFn = Callable[[str, str, Any], tuple[float, float]]  # (prompt, response, label) -> (reward, accuracy)


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
            "update: run the prompt prefix a micro-batch shares once and the rest against its cache (same "
            "log-probs as the padded forward, a fraction of the compute when prompts share a few-shot prefix)"
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
            "evaluate the starting policy too (false: reuse output_dir/eval_before.json, e.g. of an earlier "
            "run with the same seed, task and eval settings)"
        ),
    )

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"LocalTrainConfig.{name}={getattr(self, name)!r}: {why}")

        if self.algo not in ("grpo", "dapo"):
            raise bad("algo", "must be 'grpo' or 'dapo'")
        if self.sampler not in ("latr", "stochastic"):
            raise bad("sampler", "must be 'latr' or 'stochastic'")
        if self.task not in TASKS:
            raise bad("task", f"expected one of {', '.join(TASKS)}")
        if self.reward not in ("shaped", "accuracy"):
            raise bad("reward", "must be 'shaped' or 'accuracy'")
        if not isinstance(self.max_number, int) or self.max_number < 2:
            raise bad("max_number", "must be an integer >= 2")
        if not math.isfinite(self.kl_coef) or self.kl_coef < 0:
            raise bad("kl_coef", "must be a finite number >= 0")
        if not isinstance(self.overlong_buffer_len, int) or self.overlong_buffer_len < 0:
            raise bad("overlong_buffer_len", "must be an integer >= 0")
        if self.overlong_buffer_len > self.max_new_tokens:
            raise bad("overlong_buffer_len", f"must be <= max_new_tokens ({self.max_new_tokens})")
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
        if self.eval_prompts < 0 or self.eval_n < 1:
            raise bad("eval_prompts" if self.eval_prompts < 0 else "eval_n", "must be >= 0 (eval_n >= 1)")
        if self.eval_dataset is not None:
            from latr_sglang.evaluate import DATASETS

            if self.eval_dataset not in DATASETS and not Path(self.eval_dataset).is_file():
                raise bad("eval_dataset", f"neither a bundled set ({', '.join(DATASETS)}) nor a file")
        if self.eval_prompts and self.prompts is not None and self.eval_dataset is None:
            raise bad("eval_dataset", "evaluating a custom prompts file needs a held-out eval_dataset")
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


def _step_line(step: int, m: dict[str, float]) -> str:
    """One row of the per-step table under the progress bar."""
    fields = [
        ("reward", "rollout/reward_mean", ".3f"),
        ("acc", "rollout/accuracy_mean", ".3f"),
        ("len", "rollout/response_length_mean", ".1f"),
        ("kept", "dynamic_filtering_pass_rate", ".2f"),
        ("loss", "policy_loss", ".4f"),
        ("grad", "grad_norm", ".3f"),
        ("forks", "latr/branches_created", ".2f"),
        ("s", "timing/step_total", ".1f"),
    ]
    cells = [f"{name} {m[key]:{fmt}}" for name, key, fmt in fields if key in m]
    return f"step {step:4d} | " + " | ".join(cells) + (" | skipped" if m.get("skipped_step") else "")


def default_reward(prompt: str, response: str, label: Any) -> tuple[float, float]:
    from latr_sglang.tasks.reward_func import score_one

    reward, accuracy, _ = score_one(prompt + response, prompt, label)
    return reward, accuracy


EVAL_SEED_OFFSET = 7919  # held-out problems come from another seed, minus any training duplicates
TRAIN_POOL = 2000  # built-in task problems drawn for training (the data order repeats after them)


def load_problems(cfg: LocalTrainConfig) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """(training problems, held-out problems) as (prompt, label). A built-in task holds out eval_prompts
    problems of its own (none of them is trained on, whatever order its numbers are shown in); a prompts
    file is evaluated on eval_dataset."""
    if cfg.prompts is not None:
        rows = read_jsonl(cfg.prompts, {cfg.input_key: str, cfg.label_key: object})
        return [(row[cfg.input_key], row[cfg.label_key]) for row in rows], []
    low, high = cfg.countdown_numbers
    options = dict(chat=cfg.apply_chat_template, min_numbers=low, max_numbers=high, max_number=cfg.max_number)
    train = task_problems(cfg.task, TRAIN_POOL, cfg.seed, **options)
    if not cfg.eval_prompts or cfg.eval_dataset:
        return train, []
    held_out = task_problems(cfg.task, 8 * cfg.eval_prompts + 200, cfg.seed + EVAL_SEED_OFFSET, **options)
    return split_problems(train, held_out, cfg.eval_prompts)


def load_prompts(cfg: LocalTrainConfig) -> list[tuple[str, Any]]:
    return load_problems(cfg)[0]


class NonFiniteWeights(RuntimeError):
    """The policy's weights stopped being finite: the run aborts before they reach the engine or a save."""


class NothingTrained(RuntimeError):
    """Every step was skipped: the run changed nothing."""


class LocalTrainer:
    def __init__(
        self, cfg: LocalTrainConfig, latr: LATRConfig | None = None, reward_fn: RewardFn | None = None
    ):
        from openrlhf_ext.cpu_compat import install

        install()
        from openrlhf.models import Actor, PolicyLoss

        from latr_sglang.engines.torch_engine import TorchEngine
        from latr_sglang.models import load_model_and_tokenizer, resolve_model_path

        self.cfg = cfg
        self.latr = latr or LATRConfig.preset("countdown")
        self.reward_fn = reward_fn or default_reward
        torch.manual_seed(cfg.seed)
        path = str(resolve_model_path(cfg.model))
        self.device = torch.device(cfg.device)
        self.actor = Actor(path, attn_implementation="sdpa", param_dtype="bf16").float().to(self.device)
        self.actor.model.config.use_cache = False
        self.reference = None
        if cfg.kl > 0:
            self.reference = (
                Actor(path, attn_implementation="sdpa", param_dtype="bf16").float().to(self.device).eval()
            )
            self.reference.requires_grad_(False)
        hf_model, self.tokenizer, _ = load_model_and_tokenizer(path, dtype="float32", device=cfg.device)
        self.engine = TorchEngine(hf_model, self.tokenizer, model_path=path, seed=cfg.seed)
        self.engine.update_weights_sync(
            self.actor.model.state_dict()
        )  # the engine serves the actor's weights
        self.optimizer = torch.optim.AdamW(self.actor.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
        self.policy_loss = PolicyLoss(
            clip_eps_low=cfg.eps_clip_low, clip_eps_high=cfg.clip_high, token_level_loss=True
        )
        self.stop_ids = newline_token_ids(self.tokenizer) if cfg.stops_at_newline else ()
        sampling = self.sampling_params()
        tok = self.tokenizer
        self.sampler = LATRSampler(
            self.engine, self.latr, sampling, self.engine.eos_ids, lambda t: tok.decode([t])
        )
        self.data, self.held_out = load_problems(cfg)
        random.Random(cfg.seed).shuffle(self.data)
        self.data_position = 0
        self.out = Path(cfg.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.checkpoints = CheckpointStore(self.out / "checkpoints")
        (self.out / "config.json").write_text(
            json.dumps({"train": dataclasses.asdict(cfg), "latr": self.latr.to_dict()}, indent=2)
        )
        # metrics.csv + TensorBoard (openrlhf_ext.run_log: whole rows; a resume cuts both back to the
        # checkpoint's step), opened once the starting step is known
        self.metrics_log = None
        self.wandb = None
        if cfg.use_wandb:
            import os

            import wandb

            os.environ.setdefault("WANDB_MODE", "offline")
            self.wandb = wandb.init(
                project=cfg.wandb_project,
                dir=str(self.out),
                resume="allow",
                config={"train": dataclasses.asdict(cfg), "latr": self.latr.to_dict()},
            )

    def sampling_params(self) -> SamplingParams:
        """Rollout and evaluation sampling: the same temperature, length limit and stops."""
        cfg = self.cfg
        return SamplingParams(
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, stop_token_ids=self.stop_ids
        )

    # ---- data -------------------------------------------------------------------------------------------
    def _next_prompts(self, count: int) -> list[tuple[str, Any]]:
        batch = []
        for _ in range(count):
            batch.append(self.data[self.data_position % len(self.data)])
            self.data_position += 1
        return batch

    def _encode(self, text: str) -> list[int]:
        return encode_prompts(
            self.tokenizer,
            [text],
            chat=self.cfg.chat,
            response_prefix=self.cfg.prefix,
        )[0]

    # ---- rollout ----------------------------------------------------------------------------------------
    def rollout(self, step: int) -> tuple[list[tuple[str, GroupResult, torch.Tensor, torch.Tensor]], dict]:
        """Groups for this step as (prompt text, group, rewards [n], accuracy [n]), and rollout metrics."""
        cfg = self.cfg
        eta = 0.0 if cfg.sampler == "stochastic" else None
        kept, seen, rounds = [], [], 0
        all_groups: list[GroupResult] = []
        max_rounds = cfg.max_sampling_rounds if cfg.algo == "dapo" else 1
        while len(kept) < cfg.prompts_per_step and rounds < max_rounds:
            batch = self._next_prompts(cfg.prompts_per_step)
            groups = self.sampler.sample_sync(
                [self._encode(p) for p, _ in batch],
                cfg.n_samples_per_prompt,
                step=step,
                eta=eta,
                seed=cfg.seed * 100_003 + step * 101 + rounds,
            )
            all_groups += groups
            for (prompt, label), group in zip(batch, groups):
                scored = [
                    self.reward_fn(
                        prompt,
                        cfg.prefix + self.tokenizer.decode(t.token_ids, skip_special_tokens=True),
                        label,
                    )
                    for t in group.trajectories
                ]
                accuracy = torch.tensor([a for _, a in scored])
                shaped = torch.tensor([r for r, _ in scored])
                rewards = accuracy.clone() if cfg.reward == "accuracy" else shaped
                if cfg.overlong_buffer_len:
                    lengths = torch.tensor([len(t.token_ids) for t in group.trajectories])
                    rewards = rewards + cfg.overlong_penalty_factor * soft_overlong_penalty(
                        lengths, cfg.max_new_tokens, cfg.overlong_buffer_len
                    )
                seen.append((prompt, group, rewards, accuracy))
            rounds += 1
            if cfg.algo == "dapo":
                low, high = cfg.dynamic_filtering_range
                column = 2 if cfg.dynamic_filtering_metric == "reward" else 3  # seen: (.., rewards, scores)
                kept = [
                    g for g in seen if keep_group(g[column].tolist(), cfg.dynamic_filtering_rule, low, high)
                ]
            else:
                kept = seen
        kept = kept[: cfg.prompts_per_step]
        rewards = torch.stack([g[2] for g in seen])
        accuracy = torch.stack([g[3] for g in seen])
        lengths = torch.tensor(
            [len(t.token_ids) for _, g, _, _ in seen for t in g.trajectories], dtype=torch.float
        )
        truncated = torch.tensor(
            [t.truncated for _, g, _, _ in seen for t in g.trajectories], dtype=torch.float
        )
        metrics = {
            "rollout/reward_mean": rewards.mean().item(),
            "rollout/reward_std": rewards.std().item(),
            "rollout/accuracy_mean": accuracy.mean().item(),
            "rollout/response_length_mean": lengths.mean().item(),
            "rollout/truncated_rate": truncated.mean().item(),
            "rollout/num_samples": float(len(seen) * cfg.n_samples_per_prompt),
            "dynamic_filtering_pass_rate": len(kept) / max(len(seen), 1) if cfg.algo == "dapo" else 1.0,
            "rollout/sampling_rounds": float(rounds),
            **rollout_metrics(all_groups, rewards=accuracy.tolist()),
        }
        return kept, metrics

    # ---- update -----------------------------------------------------------------------------------------
    def _batch_tensors(self, kept) -> dict[str, torch.Tensor]:
        """Left-padded prompts + right-padded responses, as OpenRLHF's Experience lays them out."""
        prompts, responses, rollout_logprobs, advantages, keep = [], [], [], [], []
        for prompt, group, rewards, _ in kept:
            ids = self._encode(prompt)
            adv = group_advantages(rewards[None])[0]
            truncated = torch.tensor([t.truncated for t in group.trajectories])
            mask = (
                overlong_mask(truncated[None])[0] if self.cfg.filter_overlong else torch.ones(len(truncated))
            )
            for t, a, m in zip(group.trajectories, adv.tolist(), mask.tolist()):
                prompts.append(ids)
                responses.append(t.token_ids)
                rollout_logprobs.append(t.logprobs)
                advantages.append(a)
                keep.append(m)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        p_len, r_len = max(map(len, prompts)), max(map(len, responses))
        b = len(prompts)
        sequences = torch.full((b, p_len + r_len), pad, dtype=torch.long)
        attention = torch.zeros((b, p_len + r_len), dtype=torch.long)
        action_mask = torch.zeros((b, r_len), dtype=torch.bool)
        rollout = torch.zeros((b, r_len))
        for i, (p, r, lp) in enumerate(zip(prompts, responses, rollout_logprobs)):
            sequences[i, p_len - len(p) : p_len] = torch.tensor(p)
            sequences[i, p_len : p_len + len(r)] = torch.tensor(r)
            attention[i, p_len - len(p) : p_len + len(r)] = 1
            action_mask[i, : len(r)] = True
            rollout[i, : len(r)] = torch.tensor(lp)
        loss_mask = action_mask.float() * torch.tensor(keep)[:, None]
        adv = torch.tensor(advantages)[:, None].expand(b, r_len)
        tensors = {
            "sequences": sequences,
            "attention": attention,
            "action_mask": action_mask,
            "rollout": rollout,
            "advantages": adv,
            "loss_mask": loss_mask,
        }
        out = {k: v.to(self.device) for k, v in tensors.items()}
        self._token_lists = (prompts, responses)  # for the shared-prefix forward
        return out

    def _action_logprobs(self, model, batch, sl: slice) -> torch.Tensor:
        """[micro-batch, r_len] action log-probs: the shared-prefix forward when the prompts share enough
        (openrlhf_ext.local.update), else OpenRLHF's Actor.forward on the padded batch."""
        from openrlhf_ext.local.update import (
            MIN_SHARED_PREFIX,
            common_prefix_len,
            shared_prefix_action_logprobs,
        )

        prompts, responses = (x[sl] for x in self._token_lists)
        shared = common_prefix_len(prompts) if self.cfg.shared_prefix else 0
        if shared >= MIN_SHARED_PREFIX:
            r_len = batch["action_mask"].shape[1]
            return shared_prefix_action_logprobs(model, prompts, responses, shared, self.device, r_len)
        return model(
            batch["sequences"][sl],
            action_mask=batch["action_mask"][sl],
            attention_mask=batch["attention"][sl],
        )

    def update(self, kept) -> dict[str, float]:
        batch = self._batch_tensors(kept)
        total_tokens = float(batch["loss_mask"].sum())
        metrics = {"overlong_filtered_fraction": 1.0 - float((batch["loss_mask"].sum(1) > 0).float().mean())}
        if total_tokens == 0:
            return {**metrics, "skipped_step": 1.0}
        # Old log-probs: one optimizer step covers the whole batch, so the policy that sampled (as the actor
        # computes it) is the one being differentiated, and pi_old = pi_theta.detach() exactly; a separate
        # no-grad pass (what OpenRLHF does, needed for several mini-batches per rollout) would cost a third
        # more compute for the same numbers. The engine's rollout log-probs come from continuously batched,
        # timing-dependent fp32 batches; they are only compared (logprob_mismatch).
        b = batch["sequences"].shape[0]
        self.actor.train()
        self.optimizer.zero_grad(set_to_none=True)
        sums = {"policy_loss": 0.0, "kl": 0.0, "ppo_clip_ratio": 0.0, "ppo_kl": 0.0, "logprob_mismatch": 0.0}
        n_micro = 0
        for start in range(0, b, self.cfg.micro_batch_size):
            sl = slice(start, start + self.cfg.micro_batch_size)
            mask = batch["loss_mask"][sl]
            action_mask = batch["action_mask"][sl]
            log_probs = self._action_logprobs(self.actor, batch, sl)
            loss, clip_ratio, ppo_kl, _, _ = self.policy_loss(
                log_probs,
                log_probs.detach(),
                batch["advantages"][sl],
                action_mask=mask,
                batch_num_tokens=total_tokens,
            )
            policy_loss_value = float(loss.detach())
            kl_value = torch.zeros(())
            if self.reference is not None:
                from openrlhf.models.utils import compute_approx_kl

                with torch.no_grad():
                    ref = self._action_logprobs(self.reference, batch, sl)
                kl = compute_approx_kl(log_probs, ref, kl_estimator="k3")
                kl_value = (kl * mask).sum() / total_tokens
                loss = loss + self.cfg.kl * kl_value
            loss.backward()
            n_micro += 1
            sums["policy_loss"] += policy_loss_value
            sums["kl"] += float(kl_value.detach())
            sums["ppo_clip_ratio"] += float(clip_ratio)
            sums["ppo_kl"] += float(ppo_kl)
            # the engine computed the rollout log-probs with the same weights: they should agree
            diff = (
                (log_probs.detach() - batch["rollout"][sl]).abs() * action_mask
            ).sum() / action_mask.sum().clamp(min=1)
            sums["logprob_mismatch"] += float(diff)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.actor.parameters(), self.cfg.grad_clip)
        metrics.update({k: v / n_micro for k, v in sums.items()})
        metrics["policy_loss"] = sums["policy_loss"]  # micro-batch losses are already global token means
        metrics["grad_norm"] = float(grad_norm)
        metrics["actor_lr"] = self.cfg.learning_rate
        if self.device.type == "cuda":
            metrics["memory/peak_allocated_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        # Checked after clipping, on what the optimizer would apply: a NaN/inf loss or gradient skips the
        # step (clipping cannot repair a NaN, it spreads it to every weight).
        grads_finite = all(
            bool(torch.isfinite(p.grad).all()) for p in self.actor.parameters() if p.grad is not None
        )
        if not (grads_finite and math.isfinite(float(grad_norm)) and math.isfinite(metrics["policy_loss"])):
            self.optimizer.zero_grad(set_to_none=True)
            print(
                f"non-finite loss or gradient (loss {metrics['policy_loss']}, grad norm {float(grad_norm)}): "
                "step skipped",
                flush=True,
            )
            return {**metrics, "skipped_step": 1.0, "nonfinite_step": 1.0}
        self.optimizer.step()
        bad = [n for n, p in self.actor.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:  # finite gradients and a finite step should never do this; never let such weights out
            raise NonFiniteWeights(
                f"non-finite weights after the optimizer step: {bad[0]} ({len(bad)} tensors)"
            )
        return {**metrics, "skipped_step": 0.0}

    def sync_weights(self) -> None:
        self.engine.update_weights_sync({k: v.detach() for k, v in self.actor.model.state_dict().items()})

    # ---- loop -------------------------------------------------------------------------------------------
    def train_step(self, step: int) -> dict[str, float]:
        t0 = time.perf_counter()
        kept, metrics = self.rollout(step)
        t1 = time.perf_counter()
        if kept:
            metrics.update(self.update(kept))
        else:
            metrics.update({"skipped_step": 1.0})
            print(
                f"step {step}: no informative group after {int(metrics['rollout/sampling_rounds'])} rounds; "
                "skipped",
                flush=True,
            )
        t2 = time.perf_counter()
        if not metrics.get("skipped_step"):
            self.sync_weights()
        t3 = time.perf_counter()
        metrics.update(
            {
                "train/global_step": float(step),
                "timing/generation": t1 - t0,
                "timing/ppo_train": t2 - t1,
                "timing/broadcast": t3 - t2,
                "timing/step_total": t3 - t0,
            }
        )
        self._log(step, metrics)
        return metrics

    def _log(self, step: int, metrics: dict[str, float]) -> None:
        if self.metrics_log is None:
            self.open_log(resume_step=None)
        self.metrics_log.log(step, metrics)
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def fit(self) -> list[dict[str, float]]:
        from tqdm import tqdm

        start = time.perf_counter()
        first = self.load_checkpoint() + 1 if self.cfg.resume else 1
        if self.metrics_log is None:
            self.open_log(resume_step=first - 1 if self.cfg.resume else None)
        before = None
        if self.cfg.eval_prompts and first == 1 and self.cfg.eval_before:
            before = self.evaluate("before")
        elif self.cfg.eval_prompts and (self.out / "eval_before.json").exists():
            before = json.loads((self.out / "eval_before.json").read_text())
        history = []
        train_start = time.perf_counter()
        bar = tqdm(
            range(first, self.cfg.steps + 1),
            desc=f"{self.cfg.algo}+{self.cfg.sampler}",
            unit="step",
            initial=first - 1,
            total=self.cfg.steps,
        )
        for step in bar:
            m = self.train_step(step)
            history.append(m)
            bar.set_postfix(
                reward=f"{m['rollout/reward_mean']:.3f}",
                acc=f"{m['rollout/accuracy_mean']:.3f}",
                loss=f"{m.get('policy_loss', float('nan')):.4f}",
            )
            bar.write(_step_line(step, m))
            every = self.cfg.eval_every
            if self.cfg.eval_prompts and every > 0 and step % every == 0 and step != self.cfg.steps:
                self.evaluate(f"step{step}")
            if self.cfg.save_steps and (step % self.cfg.save_steps == 0 or step == self.cfg.steps):
                self.save_checkpoint(step)
        train_s = time.perf_counter() - train_start
        trained = sum(1 for m in history if not m.get("skipped_step"))
        if history and not trained and first == 1:  # (a resumed run trained before its checkpoint)
            raise NothingTrained(self._nothing_trained_message(history))
        self.save_policy()
        if self.cfg.eval_prompts:
            after = self.evaluate("after")
            from openrlhf_ext.local.summary import summarize, write_summary

            steps_run, trained_run, train_s = self._steps_logged(len(history), trained, train_s)
            text, data = summarize(
                before,
                after,
                steps=steps_run,
                trained_steps=trained_run,
                train_s=train_s,
                total_s=time.perf_counter() - start,
            )
            print(text, flush=True)
            write_summary(self.out / "summary.json", data)
        return history

    def open_log(self, resume_step: int | None) -> None:
        from openrlhf_ext.run_log import MetricsLog

        self.metrics_log = MetricsLog(self.out, resume_step=resume_step)

    def _steps_logged(self, steps: int, trained: int, train_s: float) -> tuple[int, int, float]:
        """(steps, trained steps, training seconds) of the whole run: after a resume metrics.csv also holds
        the steps before it."""
        path = self.out / "metrics.csv"
        if not self.cfg.resume or not path.exists():
            return steps, trained, train_s
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        seconds = sum(float(r.get("timing/step_total") or 0.0) for r in rows)
        return len(rows), sum(1 for r in rows if r.get("skipped_step") in ("0.0", "0")), seconds

    def _nothing_trained_message(self, history: list[dict[str, float]]) -> str:
        cfg = self.cfg
        if any(m.get("nonfinite_step") for m in history):
            why = "the loss or gradient was not finite (check --actor.adam.lr and --local.grad_clip)"
        else:
            acc = statistics.fmean(m["rollout/accuracy_mean"] for m in history)
            why = (
                f"no group had rewards that differ (every sample of a prompt scored the same; mean accuracy "
                f"{acc:.3f}), so every advantage was 0"
            )
        hints = [
            "--local.task countdown-fewshot (a task the embedded 135M model solves about 1 time in 6)",
            "--rollout.temperature 1.0 or higher",
            "--rollout.n_samples_per_prompt 8 or more",
            "--algo.dynamic_filtering_enable --dapo.max_sampling_rounds 4 (over-sample until groups differ)",
        ]
        if cfg.reward == "accuracy" or cfg.dynamic_filtering_metric == "score":
            hints.append("--dapo.dynamic_filtering_metric reward (keep groups whose shaped reward differs)")
        return (
            f"nothing trained: all {len(history)} steps were skipped: {why}. The policy is unchanged and "
            f"was not saved. Flags that make groups differ: " + "; ".join(hints)
        )

    # ---- evaluation -------------------------------------------------------------------------------------
    def eval_items(self):
        from latr_sglang.evaluate import EvalItem, load_eval_set

        cfg = self.cfg
        if cfg.eval_dataset:
            return load_eval_set(cfg.eval_dataset, cfg.eval_prompts)
        return [EvalItem(p, lab) for p, lab in self.held_out]

    def evaluate(self, tag: str) -> dict[str, Any]:
        """The current policy on held-out prompts (plain sampling, n = eval_n): eval_{tag}.json."""
        from latr_sglang.evaluate import evaluate, write_results

        cfg = self.cfg
        sampling = self.sampling_params()
        metrics = evaluate(
            self.engine,
            self.tokenizer,
            self.eval_items(),
            n=cfg.eval_n,
            sampling=sampling,
            chat=cfg.chat,
            response_prefix=cfg.prefix,
            seed=cfg.seed + EVAL_SEED_OFFSET,
        )
        write_results(self.out / f"eval_{tag}.json", metrics)
        print(
            f"eval ({tag}): reward {metrics['reward_mean']:.4f}  pass@1 {metrics['pass@1']:.4f}  "
            f"pass@{cfg.eval_n} {metrics[f'pass@{cfg.eval_n}']:.4f}  "
            f"well-formed {metrics['well_formed_rate']:.3f}  "
            f"distinct answers {metrics['distinct_answers_mean']:.2f}",
            flush=True,
        )
        return metrics

    # ---- checkpoints ------------------------------------------------------------------------------------
    def save_policy(self) -> Path:
        """The trained policy as a HF folder (output_dir/policy): what eval scripts and SGLang load."""
        path = self.out / "policy"
        self.actor.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        return path

    def save_checkpoint(self, step: int) -> Path:
        """Policy, optimizer, data position, step and RNG: enough to continue exactly where it stopped.
        Written atomically and with a checksum manifest (openrlhf_ext.checkpointing)."""
        state = {
            "step": step,
            "data_position": self.data_position,
            "model": self.actor.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
        }  # the engine needs no RNG state: the driver seeds every sampled request, greedy ones use none
        return self.checkpoints.save(step, {"trainer_state.pt": state}, config=self._resume_config()).path

    def _resume_config(self) -> dict[str, Any]:
        """What a resume must agree with: the run's config and its LATR config."""
        return {**dataclasses.asdict(self.cfg), "latr": self.latr.to_dict()}

    def load_checkpoint(self) -> int:
        """Restores the latest intact checkpoint; returns its step (0 when there is none). A damaged latest
        falls back to the previous intact one (with a warning naming the file); a changed config is refused
        (CheckpointError) unless --local.force_resume."""
        ckpt = self.checkpoints.load_latest(
            config=self._resume_config(),
            force=self.cfg.force_resume,
            force_hint="--local.force_resume",
            may_change=RESUME_MAY_CHANGE | {"eval_before"},
        )
        if ckpt is None:
            print(f"no checkpoint in {self.checkpoints.root}: starting from step 1", flush=True)
            return 0
        state = ckpt.torch_load("trainer_state.pt")
        self.actor.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.data_position = state["data_position"]
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        self.sync_weights()
        print(f"resumed from {ckpt.path.name} (step {state['step']})", flush=True)
        return int(state["step"])

    def close(self) -> None:
        self.engine.close_sync()
        if self.metrics_log is not None:
            self.metrics_log.close()
        if self.wandb is not None:
            self.wandb.finish()


def main(argv: list[str] | None = None) -> int:
    import sys

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_dataclass_arguments(parser.add_argument_group("training"), LocalTrainConfig)
    add_latr_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = LocalTrainConfig(**dataclass_overrides(args, LocalTrainConfig))
        latr = latr_config_from_args(args, default_preset="countdown")
    except ValueError as e:
        print(f"local_trainer: error: {e}", file=sys.stderr)
        return 2
    return train(cfg, latr)


def train(cfg: LocalTrainConfig, latr: LATRConfig) -> int:
    """Runs a whole local training job (the local_trainer CLI and `latr-train --trainer.mode local`)."""
    import sys

    try:
        trainer = LocalTrainer(cfg, latr)
    except (ValueError, FileNotFoundError) as e:  # a bad prompts file, eval set or model path, named
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        trainer.fit()
    except NothingTrained as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except NonFiniteWeights as e:
        print(f"error: {e}; aborted, nothing saved from this step on", file=sys.stderr)
        return 4
    except CheckpointError as e:  # no intact checkpoint, or a resume with a different config
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        trainer.close()
    print(f"metrics: {trainer.out / 'metrics.csv'}, tensorboard: {trainer.out / 'tensorboard'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
