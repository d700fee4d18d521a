"""The local trainer's update: one optimizer step of OpenRLHF's `PolicyLoss` (token-level, clip-higher for
DAPO) plus the k3 KL to the reference policy, over the kept groups' sequences laid out as OpenRLHF's
Experience lays them out; the forward runs what a micro-batch's rows share once: the few-shot examples, each
group's prompt, LATR branches' response prefixes (openrlhf_ext.shared_prefix).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from openrlhf_ext.dapo import group_advantages, overlong_mask
from openrlhf_ext.local.config import LocalTrainConfig
from openrlhf_ext.local.rollout import ScoredGroup
from openrlhf_ext.shared_prefix import PrefixTree, actor_action_logprobs


class NonFiniteWeights(RuntimeError):
    """The policy's weights stopped being finite: the run aborts before they reach the engine or a save."""


class PolicyUpdate:
    def __init__(
        self,
        cfg: LocalTrainConfig,
        actor: Any,
        reference: Any | None,
        tokenizer: Any,
        encode: Callable[[str], list[int]],
        device: torch.device,
    ) -> None:
        from openrlhf.models import PolicyLoss

        self.cfg = cfg
        self.actor = actor  # OpenRLHF Actor (trained)
        self.reference = reference  # OpenRLHF Actor (frozen) or None (no KL loss)
        self.tokenizer = tokenizer
        self.encode = encode
        self.device = device
        self.optimizer = torch.optim.AdamW(actor.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
        self.policy_loss = PolicyLoss(
            clip_eps_low=cfg.eps_clip_low, clip_eps_high=cfg.clip_high, token_level_loss=True
        )

    def batch_tensors(
        self, kept: Sequence[ScoredGroup]
    ) -> tuple[dict[str, torch.Tensor], list[list[int]], list[list[int]]]:
        """Left-padded prompts + right-padded responses, as OpenRLHF's Experience lays them out, and the
        rows' prompt and response ids (what the shared-prefix forward slices per micro-batch)."""
        prompts, responses, rollout_logprobs, advantages, keep = [], [], [], [], []
        for prompt, group, rewards, _ in kept:
            ids = self.encode(prompt)
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
        return {k: v.to(self.device) for k, v in tensors.items()}, prompts, responses

    def action_logprobs(
        self, model: Any, batch: dict[str, torch.Tensor], sl: slice, tree: PrefixTree | None
    ) -> torch.Tensor:
        """[micro-batch, r_len] action log-probs of the rows `sl`: on their prefix tree (shared tokens
        forwarded once, openrlhf_ext.shared_prefix), or OpenRLHF's Actor.forward on the padded batch."""
        if tree is not None:
            return actor_action_logprobs(model, tree, batch["action_mask"].shape[1])
        return model(
            batch["sequences"][sl],
            action_mask=batch["action_mask"][sl],
            attention_mask=batch["attention"][sl],
        )

    def __call__(self, kept: Sequence[ScoredGroup]) -> dict[str, float]:
        batch, all_prompts, all_responses = self.batch_tensors(kept)
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
        n_micro, forwarded, row_tokens = 0, 0, 0
        for start in range(0, b, self.cfg.micro_batch_size):
            sl = slice(start, start + self.cfg.micro_batch_size)
            mask = batch["loss_mask"][sl]
            action_mask = batch["action_mask"][sl]
            # one tree for the actor and the reference model
            tree = PrefixTree(all_prompts[sl], all_responses[sl]) if self.cfg.shared_prefix else None
            if tree is not None:
                forwarded += tree.forwarded_tokens
                row_tokens += tree.row_tokens
            log_probs = self.action_logprobs(self.actor, batch, sl, tree)
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
                    ref = self.action_logprobs(self.reference, batch, sl, tree)
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
        if row_tokens:  # tokens the forward ran / tokens of the padded rows (what sharing saved)
            metrics["forward_token_fraction"] = forwarded / row_tokens
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
