"""What `latr-train` adds inside OpenRLHF's Ray trainer, applied in every Ray worker (vllm_shim's setup hook).

Four methods are wrapped, each doing nothing unless `args.latr_ext` (set by latr-train) asks for it:
- `SamplesGenerator._generate_vllm`: DAPO dynamic sampling. OpenRLHF keeps a group when its mean score lies
  in a range and replaces a dropped prompt with a new one until the dataloader runs out; here the rule is
  selectable (`std`: scores not all equal, DAPO's) and over-sampling is bounded: at most
  `max_sampling_rounds` x the prompt batch per call, the count logged.
- `SamplesGenerator.generate_samples`: tells the LATR engines the training step (the mix-ratio schedule);
  `generate_eval_samples`: switches them to plain sampling for the evaluation (as the paper validates).
- `RemoteExperienceMaker.compute_advantages_and_returns`: DAPO overlong filtering; a truncated sample's
  advantages are zeroed, so it adds no gradient. It still counts in its group's statistics and in the
  token-mean denominator (OpenRLHF's loss has no per-sample mask to drop it from).
"""

from __future__ import annotations

from typing import Any

from openrlhf_ext.dapo import keep_group


def _ext(obj: Any) -> dict | None:
    args = getattr(obj, "args", None) or getattr(getattr(obj, "strategy", None), "args", None)
    return getattr(args, "latr_ext", None)


def generate_with_dynamic_sampling(self: Any, dataloader_iter: Any, num_prompts: int, **generate_kwargs: Any):
    """OpenRLHF's `_generate_vllm` contract: (accepted experiences, prompts consumed, exhausted)."""
    import ray
    from openrlhf.trainer.ppo_utils.samples_generator import _collect_prompt_batch, logger
    from tqdm import tqdm

    dapo = _ext(self)["dapo"]
    low, high = self.args.algo.dynamic_filtering_range
    field = "rewards" if dapo["dynamic_filtering_metric"] == "reward" else "scores"
    budget = dapo["max_sampling_rounds"] * num_prompts  # prompts this call may consume, replacements included
    prompts, labels, images, exhausted = _collect_prompt_batch(dataloader_iter, num_prompts)
    if not prompts:
        return [], 0, True
    consumed, kept_groups, accepted = len(prompts), 0, []
    pending = self._dispatch_prompts_to_vllm(prompts, labels, images=images, **generate_kwargs)
    bar = tqdm(total=len(prompts), desc="Generate samples (dynamic sampling)")
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=10.0)
        for ref in ready:
            group = [self._process_response_into_experience(r, **generate_kwargs) for r in ray.get(ref)]
            scores = [float(getattr(e, field)[0]) for e in group if getattr(e, field) is not None]
            if len(scores) < len(group) or keep_group(scores, dapo["dynamic_filtering_rule"], low, high):
                accepted.extend(group)
                kept_groups += 1
                bar.update()
                continue
            if consumed < budget and not exhausted:
                new_prompts, new_labels, new_images, exhausted = _collect_prompt_batch(dataloader_iter, 1)
                consumed += len(new_prompts)
                if new_prompts:
                    pending += self._dispatch_prompts_to_vllm(
                        new_prompts, new_labels, images=new_images, **generate_kwargs
                    )
    bar.close()
    logger.info(
        f"dynamic sampling ({dapo['dynamic_filtering_rule']}): kept {kept_groups}/{num_prompts} groups "
        f"from {consumed} prompts (bound {budget})"
    )
    return accepted, consumed, exhausted


def zero_truncated_advantages(experiences: list) -> None:
    for exp in experiences:
        if exp.truncated is None or exp.advantages is None:
            continue
        keep = (~exp.truncated.bool()).to(exp.advantages.dtype)  # [B]
        exp.advantages = exp.advantages * keep[:, None]
        exp.info["overlong_filtered"] = 1.0 - keep.float()
        if exp.returns is not None:
            exp.returns = exp.returns * keep[:, None].to(exp.returns.dtype)


def apply() -> None:
    from openrlhf.trainer.ppo_utils import experience_maker, samples_generator
    from openrlhf.trainer.ray.vllm_engine import batch_vllm_engine_call

    generator = samples_generator.SamplesGenerator
    if getattr(generator, "_latr_patched", False):
        return
    original_generate = generator._generate_vllm
    original_samples = generator.generate_samples
    original_eval = generator.generate_eval_samples
    maker = experience_maker.RemoteExperienceMaker
    original_advantages = maker.compute_advantages_and_returns

    def _generate_vllm(self, dataloader_iter, num_prompts, dynamic_filtering, **kwargs):
        if dynamic_filtering and _ext(self) is not None:
            return generate_with_dynamic_sampling(self, dataloader_iter, num_prompts, **kwargs)
        return original_generate(self, dataloader_iter, num_prompts, dynamic_filtering, **kwargs)

    def generate_samples(self, **kwargs):
        ext = _ext(self)
        if ext is not None and ext["rollout"]["backend"] != "vllm":
            self._latr_step = getattr(self, "_latr_step", 0) + 1
            batch_vllm_engine_call(self.vllm_engines, "set_training_step", self._latr_step)
        return original_samples(self, **kwargs)

    def generate_eval_samples(self, **kwargs):
        ext = _ext(self)
        if ext is None or ext["rollout"]["backend"] == "vllm":
            return original_eval(self, **kwargs)
        batch_vllm_engine_call(self.vllm_engines, "set_eval_mode", True)
        try:
            return original_eval(self, **kwargs)
        finally:
            batch_vllm_engine_call(self.vllm_engines, "set_eval_mode", False)

    def compute_advantages_and_returns(self, experiences):
        experiences = original_advantages(self, experiences)
        ext = _ext(self)
        if ext is not None and ext["dapo"]["overlong_filtering"]:
            zero_truncated_advantages(experiences)
        return experiences

    generator._generate_vllm = _generate_vllm
    generator.generate_samples = generate_samples
    generator.generate_eval_samples = generate_eval_samples
    maker.compute_advantages_and_returns = compute_advantages_and_returns
    generator._latr_patched = True
