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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from latr_sglang.compare import encode_prompts, read_jsonl
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
from openrlhf_ext.dapo import group_advantages, keep_group, overlong_mask

RewardFn = Callable[[str, str, Any], tuple[float, float]]  # (prompt, response, label) -> (reward, accuracy)


@dataclass
class LocalTrainConfig:
    model: str = field(
        default="smollm2", metadata=help_text("local HF folder, or 'smollm2' (embedded default)")
    )
    prompts: str | None = field(
        default=None, metadata=help_text("JSONL with prompt/label (default: countdown)")
    )
    input_key: str = field(default="prompt", metadata=help_text("JSONL key of the prompt"))
    label_key: str = field(default="label", metadata=help_text("JSONL key of the label"))
    apply_chat_template: bool = field(default=True, metadata=help_text("wrap prompts in the chat template"))
    response_prefix: str = field(
        default="",
        metadata=help_text(
            "text the assistant's turn starts with (a prefill, e.g. '<answer>'); the reward sees it"
        ),
    )
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
    kl_coef: float | None = field(
        default=None, metadata=help_text("k3 KL coefficient (default: GRPO 0.01, DAPO 0)")
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

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"LocalTrainConfig.{name}={getattr(self, name)!r}: {why}")

        if self.algo not in ("grpo", "dapo"):
            raise bad("algo", "must be 'grpo' or 'dapo'")
        if self.sampler not in ("latr", "stochastic"):
            raise bad("sampler", "must be 'latr' or 'stochastic'")
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
        return self.kl_coef if self.kl_coef is not None else (0.01 if self.algo == "grpo" else 0.0)

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


EVAL_SEED_OFFSET = 7919  # held-out countdown problems come from another seed, minus any training duplicates


def _countdown(cfg: LocalTrainConfig, count: int, seed: int) -> list[tuple[str, Any]]:
    from latr_sglang.tasks.countdown import generate

    template = "chat" if cfg.apply_chat_template else "raw"
    low, high = cfg.countdown_numbers
    problems = generate(count, seed=seed, min_numbers=low, max_numbers=high)
    return [(p.prompt(template), p.label()) for p in problems]


def load_prompts(cfg: LocalTrainConfig) -> list[tuple[str, Any]]:
    if cfg.prompts is None:
        return _countdown(cfg, 2000, cfg.seed)
    rows = read_jsonl(cfg.prompts, {cfg.input_key: str, cfg.label_key: object})
    return [(row[cfg.input_key], row[cfg.label_key]) for row in rows]


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
        sampling = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature)
        tok = self.tokenizer
        self.sampler = LATRSampler(
            self.engine, self.latr, sampling, self.engine.eos_ids, lambda t: tok.decode([t])
        )
        self.data = load_prompts(cfg)
        random.Random(cfg.seed).shuffle(self.data)
        self.data_position = 0
        self.out = Path(cfg.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.json").write_text(
            json.dumps({"train": dataclasses.asdict(cfg), "latr": self.latr.to_dict()}, indent=2)
        )
        self._csv_keys: list[str] | None = None
        from torch.utils.tensorboard import SummaryWriter

        self.tensorboard = SummaryWriter(str(self.out / "tensorboard"))
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
            chat=self.cfg.apply_chat_template,
            response_prefix=self.cfg.response_prefix,
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
                        cfg.response_prefix + self.tokenizer.decode(t.token_ids, skip_special_tokens=True),
                        label,
                    )
                    for t in group.trajectories
                ]
                rewards = torch.tensor([r for r, _ in scored])
                accuracy = torch.tensor([a for _, a in scored])
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
        return {k: v.to(self.device) for k, v in tensors.items()}

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
            log_probs = self.actor(
                batch["sequences"][sl], action_mask=action_mask, attention_mask=batch["attention"][sl]
            )
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
                    ref = self.reference(
                        batch["sequences"][sl], action_mask=action_mask, attention_mask=batch["attention"][sl]
                    )
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
        if not math.isfinite(float(grad_norm)) or not math.isfinite(metrics["policy_loss"]):
            self.optimizer.zero_grad(set_to_none=True)
            print(
                f"non-finite loss or gradient (loss {metrics['policy_loss']}, grad norm {float(grad_norm)}): "
                "step skipped",
                flush=True,
            )
            return {**metrics, "skipped_step": 1.0}
        self.optimizer.step()
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
        path = self.out / "metrics.csv"
        if self._csv_keys is None and self.cfg.resume and path.exists():
            with open(path, newline="") as f:
                self._csv_keys = next(csv.reader(f), None)
        if self._csv_keys is None:
            self._csv_keys = sorted(metrics)
            with open(path, "w", newline="") as f:
                csv.writer(f).writerow(self._csv_keys)
        with open(path, "a", newline="") as f:
            csv.writer(f).writerow([metrics.get(k, "") for k in self._csv_keys])
        for k, v in metrics.items():
            self.tensorboard.add_scalar(k, v, step)
        self.tensorboard.flush()
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def fit(self) -> list[dict[str, float]]:
        from tqdm import tqdm

        first = self.load_checkpoint() + 1 if self.cfg.resume else 1
        if self.cfg.eval_prompts and first == 1:
            self.evaluate("before")
        history = []
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
            if self.cfg.save_steps and (step % self.cfg.save_steps == 0 or step == self.cfg.steps):
                self.save_checkpoint(step)
        self.save_policy()
        if self.cfg.eval_prompts:
            self.evaluate("after")
        return history

    # ---- evaluation -------------------------------------------------------------------------------------
    def eval_items(self):
        from latr_sglang.evaluate import EvalItem, load_eval_set

        cfg = self.cfg
        if cfg.eval_dataset:
            return load_eval_set(cfg.eval_dataset, cfg.eval_prompts)
        train = {p for p, _ in self.data}
        held_out = _countdown(cfg, 4 * cfg.eval_prompts, cfg.seed + EVAL_SEED_OFFSET)
        return [EvalItem(p, lab) for p, lab in held_out if p not in train][: cfg.eval_prompts]

    def evaluate(self, tag: str) -> dict[str, Any]:
        """The current policy on held-out prompts (plain sampling, n = eval_n): eval_{tag}.json."""
        from latr_sglang.evaluate import evaluate, write_results

        cfg = self.cfg
        sampling = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature)
        metrics = evaluate(
            self.engine,
            self.tokenizer,
            self.eval_items(),
            n=cfg.eval_n,
            sampling=sampling,
            chat=cfg.apply_chat_template,
            response_prefix=cfg.response_prefix,
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
        """Policy, optimizer, data position, step and RNG: enough to continue exactly where it stopped."""
        path = self.out / "checkpoints" / f"step_{step}"
        path.mkdir(parents=True, exist_ok=True)
        state = {
            "step": step,
            "data_position": self.data_position,
            "model": self.actor.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
        }  # the engine needs no RNG state: the driver seeds every sampled request, greedy ones use none
        torch.save(state, path / "trainer_state.pt")
        (self.out / "checkpoints" / "latest").write_text(path.name)
        return path

    def load_checkpoint(self) -> int:
        """Restores the latest checkpoint; returns its step (0 when there is none)."""
        latest = self.out / "checkpoints" / "latest"
        if not latest.exists():
            print(f"no checkpoint in {self.out / 'checkpoints'}: starting from step 1", flush=True)
            return 0
        state = torch.load(
            self.out / "checkpoints" / latest.read_text().strip() / "trainer_state.pt", weights_only=False
        )
        self.actor.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.data_position = state["data_position"]
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        self.sync_weights()
        print(f"resumed from {latest.read_text().strip()} (step {state['step']})", flush=True)
        return int(state["step"])

    def close(self) -> None:
        self.engine.close_sync()
        self.tensorboard.close()
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
    finally:
        trainer.close()
    print(f"metrics: {trainer.out / 'metrics.csv'}, tensorboard: {trainer.out / 'tensorboard'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
