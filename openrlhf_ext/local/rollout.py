"""The local trainer's rollout: sample groups with the LATR driver, score them, and (DAPO) keep sampling
until enough groups are informative.

The same pieces serve the Ray path: the driver (latr_sglang.driver), the rollout metrics
(latr_sglang.metrics), DAPO's keep rule and overlong shaping (openrlhf_ext.dapo); what differs there is
only who loops (OpenRLHF's experience maker, patched in openrlhf_ext.ray_patches).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from latr_sglang.driver import GroupResult, LATRSampler
from latr_sglang.metrics import rollout_metrics
from latr_sglang.tasks.prompts import encode_prompts
from openrlhf_ext.dapo import keep_group, soft_overlong_penalty
from openrlhf_ext.local.config import LocalTrainConfig
from openrlhf_ext.local.custom_reward import CustomReward, RewardCounts, RewardFn
from openrlhf_ext.local.data import PromptStream, default_reward, default_rewards


class ScoredGroup(NamedTuple):
    prompt: str  # the prompt's text (the reward and the update re-encode it the same way)
    group: GroupResult  # the n trajectories and their tree metadata
    rewards: torch.Tensor  # [n] what the advantages use (shaped or accuracy, plus any overlong penalty)
    accuracy: torch.Tensor  # [n] 1/0 correctness by the verifier


def custom_reward_for(
    reward_fn: RewardFn | CustomReward | None, timeout_s: float = 0.0
) -> CustomReward | None:
    """None for the task's verifier (no reward_fn, or default_reward), scored one batch per sampling round
    (default_rewards); else a user's function, called once per sample and checked (custom_reward)."""
    if reward_fn is None or reward_fn is default_reward:
        return None
    return reward_fn if isinstance(reward_fn, CustomReward) else CustomReward(reward_fn, timeout_s)


class GroupRollout:
    def __init__(
        self,
        cfg: LocalTrainConfig,
        sampler: LATRSampler,
        tokenizer: Any,
        reward_fn: RewardFn | CustomReward | None = None,
        reward_timeout_s: float = 0.0,
    ):
        self.cfg = cfg
        self.sampler = sampler
        self.tokenizer = tokenizer
        self.custom_reward = custom_reward_for(reward_fn, reward_timeout_s)
        self.reward_counts = RewardCounts()  # this step's custom-reward errors and timeouts

    def encode(self, text: str) -> list[int]:
        """A prompt's ids as the engine sees them: chat template or raw, then the response prefix."""
        return encode_prompts(self.tokenizer, [text], chat=self.cfg.chat, response_prefix=self.cfg.prefix)[0]

    def score(self, prompt: str, label: Any, group: GroupResult) -> ScoredGroup:
        return self.score_groups([(prompt, label)], [group])[0]

    def score_groups(self, problems: list[tuple[str, Any]], groups: list[GroupResult]) -> list[ScoredGroup]:
        """The groups of one sampling round, scored together: the task's verifier gets every response of the
        round as one batch (one CPU budget shared by all, math answers verified concurrently)."""
        cfg = self.cfg
        rows = [
            (prompt, cfg.prefix + self.tokenizer.decode(t.token_ids, skip_special_tokens=True), label)
            for (prompt, label), group in zip(problems, groups)
            for t in group.trajectories
        ]
        if self.custom_reward is None:
            prompts, responses, labels = zip(*rows) if rows else ((), (), ())
            scored = default_rewards(prompts, responses, labels)
        else:
            scored, counts = self.custom_reward.score(rows)
            self.reward_counts.errors += counts.errors
            self.reward_counts.timeouts += counts.timeouts
        out, at = [], 0
        for (prompt, _), group in zip(problems, groups):
            n = len(group.trajectories)
            out.append(self._scored(prompt, group, scored[at : at + n]))
            at += n
        return out

    def _scored(self, prompt: str, group: GroupResult, scored: list[tuple[float, float]]) -> ScoredGroup:
        cfg = self.cfg
        accuracy = torch.tensor([a for _, a in scored])
        shaped = torch.tensor([r for r, _ in scored])
        rewards = accuracy.clone() if cfg.reward == "accuracy" else shaped
        if cfg.overlong_buffer_len:
            lengths = torch.tensor([len(t.token_ids) for t in group.trajectories])
            rewards = rewards + cfg.overlong_penalty_factor * soft_overlong_penalty(
                lengths, cfg.max_new_tokens, cfg.overlong_buffer_len
            )
        return ScoredGroup(prompt, group, rewards, accuracy)

    def collect(self, step: int, prompts: PromptStream) -> tuple[list[ScoredGroup], dict[str, float]]:
        """The groups this step trains on, and the rollout metrics (over every group sampled, dynamic
        sampling rounds included)."""
        cfg = self.cfg
        eta = 0.0 if cfg.sampler == "stochastic" else None  # None: the LATR schedule's eta for this step
        kept: list[ScoredGroup] = []
        seen: list[ScoredGroup] = []
        rounds = 0
        self.reward_counts = RewardCounts()
        max_rounds = cfg.max_sampling_rounds if cfg.algo == "dapo" else 1
        while len(kept) < cfg.prompts_per_step and rounds < max_rounds:
            batch = prompts.take(cfg.prompts_per_step)
            groups = self.sampler.sample_sync(
                [self.encode(p) for p, _ in batch],
                cfg.n_samples_per_prompt,
                step=step,
                eta=eta,
                seed=cfg.seed * 100_003 + step * 101 + rounds,
            )
            seen += self.score_groups(batch, groups)
            rounds += 1
            if cfg.algo == "dapo":
                low, high = cfg.dynamic_filtering_range
                metric = "rewards" if cfg.dynamic_filtering_metric == "reward" else "accuracy"
                kept = [
                    g
                    for g in seen
                    if keep_group(getattr(g, metric).tolist(), cfg.dynamic_filtering_rule, low, high)
                ]
            else:
                kept = seen
        kept = kept[: cfg.prompts_per_step]
        return kept, self.metrics(seen, kept, rounds)

    def metrics(self, seen: list[ScoredGroup], kept: list[ScoredGroup], rounds: int) -> dict[str, float]:
        rewards = torch.stack([g.rewards for g in seen])
        accuracy = torch.stack([g.accuracy for g in seen])
        trajectories = [t for g in seen for t in g.group.trajectories]
        lengths = torch.tensor([len(t.token_ids) for t in trajectories], dtype=torch.float)
        truncated = torch.tensor([t.truncated for t in trajectories], dtype=torch.float)
        dapo = self.cfg.algo == "dapo"
        return {
            "rollout/reward_mean": rewards.mean().item(),
            "rollout/reward_std": rewards.std().item(),
            "rollout/accuracy_mean": accuracy.mean().item(),
            "rollout/response_length_mean": lengths.mean().item(),
            "rollout/truncated_rate": truncated.mean().item(),
            "rollout/num_samples": float(len(trajectories)),
            "dynamic_filtering_pass_rate": len(kept) / max(len(seen), 1) if dapo else 1.0,
            "rollout/sampling_rounds": float(rounds),
            **rollout_metrics([g.group for g in seen], rewards=accuracy.tolist()),
            **(
                {
                    "rollout/reward_errors": float(self.reward_counts.errors),
                    "rollout/reward_timeouts": float(self.reward_counts.timeouts),
                }
                if self.custom_reward is not None
                else {}
            ),
        }

    def close(self) -> None:
        if self.custom_reward is not None:
            self.custom_reward.close()
