"""What `latr-train` adds inside OpenRLHF's Ray trainer, applied in every Ray worker (vllm_shim's setup hook).

Each wrapper does nothing unless `args.latr_ext` (set by latr-train) asks for it:
- `SamplesGenerator._generate_vllm`: DAPO dynamic sampling. OpenRLHF keeps a group when its mean score lies
  in a range and replaces a dropped prompt with a new one until the dataloader runs out; here the rule is
  selectable (`std`: scores not all equal, DAPO's) and over-sampling is bounded: at most
  `max_sampling_rounds` x the groups still needed per call, the count logged.
- `SamplesGenerator.generate_samples`: tells the LATR engines the training step (the mix-ratio schedule),
  which is OpenRLHF's global step (restored from a checkpoint on resume) + 1; keeps the batch shape every
  actor rank expects: a batch that dynamic sampling could not fill is held back (its groups stay in
  OpenRLHF's sample buffer) and the step is skipped, logged, so that the next call tops it up; OpenRLHF's
  fit loop skips an empty batch on every rank alike (ppo_trainer.py:535-539). `dynamic_filtering_pass_rate`
  is the fraction of generated groups kept (the local trainer's meaning), not OpenRLHF's x100 per sample.
  Every batch it returns has the same per-sample metric names on each sample (a missing one is 0, warned):
  OpenRLHF merges `info` name by name and splits the batch by index.
- `generate_eval_samples`: switches the engines to plain sampling for the evaluation (as the paper validates).
- `RemoteExperienceMaker.compute_advantages_and_returns`: DAPO overlong filtering. A truncated sample's action
  mask is cleared (and its advantages zeroed), so OpenRLHF's loss (policy, KL and entropy terms, and the
  token-mean denominator, which it sums from the action masks) leaves it out entirely. It still counts in
  its group's advantage statistics, as in DAPO.
- `SamplesGenerator._generate_vllm` without dynamic sampling, and the groups dynamic sampling keeps: in
  dispatch order (OpenRLHF collects them in the order the engine calls finish), and
  `ActorPPOTrainer.ppo_train`: its replay-buffer shuffle seeded from the run's seed and DeepSpeed's restored
  optimizer-step count. Together they make a step's micro-batches, and so its logged update metrics,
  independent of timing and of whether the run was resumed.
- `BasePPOTrainer.init_checkpoint_states` / `train_step` (also on the class Ray ships for the PPOTrainer
  actor): record the global step for the above, add the rollout's dynamic-sampling counts (`dapo/*`) to the
  step's logged metrics, and (LATR_SYNC_CHECK_FILE, for tests) record engine 0's greedy response after the
  step's weight broadcast. With `compute_advantages_and_returns` they also report to latr-train's RunRecord
  actor the step a run started from and, per step, whether any sample had a non-zero advantage, so that a
  run that trained nothing exits 3 instead of 0.
- `ActorPPOTrainer._init_vllm_sync_group`: the same weight-sync group, but an engine that cannot join (an
  SGLang server refusing the master address, say) fails the run at once with its error, instead of after
  the trainer's 300 s wait for it.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

import torch

from openrlhf_ext.dapo import keep_group

log = logging.getLogger("latr.ray_patches")


def _ext(obj: Any) -> dict | None:
    args = getattr(obj, "args", None) or getattr(getattr(obj, "strategy", None), "args", None)
    return getattr(args, "latr_ext", None)


RUN_RECORD_KEY = "run_record"  # args.latr_ext[RUN_RECORD_KEY]: the name of latr-train's RunRecord actor


class RunRecord:
    """What OpenRLHF's PPOTrainer actor did, for latr-train's exit status: OpenRLHF's train() returns nothing
    and its trainer runs in a Ray actor of its own, so the patches below report here (a named actor that
    latr-train makes and reads after train() returns). A run that trained nothing must not exit 0."""

    def __init__(self) -> None:
        self.start_step = 0  # OpenRLHF's global step when fit() began (> 0: resumed from a checkpoint)
        self.steps = 0  # train_step calls: batches the trainer updated on
        self.informative_steps = 0  # of those, steps with a sample whose advantage was not 0

    def started(self, global_step: int) -> None:
        self.start_step = global_step

    def trained(self, informative_samples: int) -> None:
        self.steps += 1
        self.informative_steps += informative_samples > 0

    def summary(self) -> dict[str, int]:
        return dict(vars(self))


def _run_record(obj: Any) -> Any | None:
    ext = _ext(obj)
    name = ext.get(RUN_RECORD_KEY) if ext else None
    if not name:
        return None
    import ray

    try:
        return ray.get_actor(name)
    except ValueError:  # not made by this driver (a test calling the patches directly)
        return None


def informative_samples(experiences: list) -> int:
    """Samples of a rollout batch with an advantage that is not 0 somewhere: the ones the policy loss learns
    from (every group of a batch tied: none)."""
    count = 0
    for exp in experiences:
        if exp.advantages is not None:
            count += int((exp.advantages != 0).reshape(exp.advantages.shape[0], -1).any(dim=1).sum())
    return count


def _counters(generator: Any) -> dict[str, float]:
    """Dynamic-sampling counts since the last training step (a held-back batch's included)."""
    if getattr(generator, "_latr_counts", None) is None:
        generator._latr_counts = {
            "groups_generated": 0.0,
            "groups_kept": 0.0,
            "prompts_drawn": 0.0,
            "calls": 0.0,
        }
    return generator._latr_counts


def generate_with_dynamic_sampling(self: Any, dataloader_iter: Any, num_prompts: int, **generate_kwargs: Any):
    """OpenRLHF's `_generate_vllm` contract: (accepted experiences, prompts consumed, exhausted). Targets the
    groups the sample buffer still lacks (`_latr_target_groups`, set by generate_samples), at most
    `num_prompts`."""
    import ray
    from openrlhf.trainer.ppo_utils.samples_generator import _collect_prompt_batch, logger
    from tqdm import tqdm

    dapo = _ext(self)["dapo"]
    low, high = self.args.algo.dynamic_filtering_range
    field = "rewards" if dapo["dynamic_filtering_metric"] == "reward" else "scores"
    target = max(1, min(num_prompts, getattr(self, "_latr_target_groups", None) or num_prompts))
    budget = dapo["max_sampling_rounds"] * target  # prompts this call may consume, replacements included
    prompts, labels, images, exhausted = _collect_prompt_batch(dataloader_iter, target)
    if not prompts:
        return [], 0, True
    counts = _counters(self)
    consumed, kept_groups, generated = len(prompts), 0, 0
    accepted: list[tuple[int, list]] = []  # (dispatch number, group)
    pending = self._dispatch_prompts_to_vllm(prompts, labels, images=images, **generate_kwargs)
    dispatched = {ref: k for k, ref in enumerate(pending)}
    bar = tqdm(total=len(prompts), desc="Generate samples (dynamic sampling)")
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=10.0)
        for ref in ready:
            group = [self._process_response_into_experience(r, **generate_kwargs) for r in ray.get(ref)]
            generated += 1
            scores = [float(getattr(e, field)[0]) for e in group if getattr(e, field) is not None]
            if len(scores) < len(group) or keep_group(scores, dapo["dynamic_filtering_rule"], low, high):
                accepted.append((dispatched[ref], group))
                kept_groups += 1
                bar.update()
                continue
            if consumed < budget and not exhausted:
                new_prompts, new_labels, new_images, exhausted = _collect_prompt_batch(dataloader_iter, 1)
                consumed += len(new_prompts)
                if new_prompts:
                    new_refs = self._dispatch_prompts_to_vllm(
                        new_prompts, new_labels, images=new_images, **generate_kwargs
                    )
                    dispatched.update((r, len(dispatched) + i) for i, r in enumerate(new_refs))
                    pending += new_refs
    bar.close()
    counts["groups_generated"] += generated
    counts["groups_kept"] += kept_groups
    counts["prompts_drawn"] += consumed
    counts["calls"] += 1
    logger.info(
        f"dynamic sampling ({dapo['dynamic_filtering_rule']}): kept {kept_groups}/{target} groups "
        f"from {consumed} prompts (bound {budget})"
    )
    # in dispatch order, not finish order: which groups are kept does not depend on the order, but the replay
    # buffer's order (and so the micro-batches its shuffle makes) must not depend on which call finished first
    return [e for _, group in sorted(accepted, key=lambda item: item[0]) for e in group], consumed, exhausted


def generate_in_dispatch_order(self: Any, dataloader_iter: Any, num_prompts: int, **generate_kwargs: Any):
    """OpenRLHF's `_generate_vllm` without filtering (samples_generator.py:140-193), but the groups come back
    in dispatch (= prompt dataloader) order rather than in the order the engine calls finished (its
    `ray.wait(num_returns=1)`, :162). The original waits for every call too, so nothing is slower; what it
    changes is that the replay buffer's order, and with it the micro-batches OpenRLHF's shuffle makes and the
    logged policy_loss/kl (weighted per micro-batch, ppo_actor.py:207-219, :253-254), no longer depend on
    timing: a resumed step reproduces the uninterrupted one."""
    import ray
    from openrlhf.trainer.ppo_utils.samples_generator import _collect_prompt_batch

    prompts, labels, images, exhausted = _collect_prompt_batch(dataloader_iter, num_prompts)
    if not prompts:
        return [], 0, True
    refs = self._dispatch_prompts_to_vllm(prompts, labels, images=images, **generate_kwargs)
    experiences = [
        self._process_response_into_experience(response, **generate_kwargs)
        for group in ray.get(refs)  # ray.get of a list keeps the list's order
        for response in group
    ]
    return experiences, len(prompts), exhausted


def shuffle_seed(train_seed: int, optimizer_steps: int) -> int:
    """The torch seed OpenRLHF's replay-buffer shuffle draws from at a training step: a function of the run's
    seed and the optimizer-step count, which DeepSpeed saves in every checkpoint and restores on load
    (deepspeed/runtime/engine.py `global_steps`), so a resumed step shuffles exactly as the uninterrupted one
    (the process RNG, which OpenRLHF seeds once per process and no checkpoint saves, would not)."""
    return zlib.crc32(f"{train_seed}:ppo_train:{optimizer_steps}".encode())


def zero_truncated_advantages(experiences: list) -> None:
    """DAPO overlong filtering on OpenRLHF's Experience batches: truncated samples leave the loss."""
    for exp in experiences:
        if exp.truncated is None or exp.advantages is None:
            continue
        truncated = exp.truncated.bool()  # [B]
        keep = (~truncated).to(exp.advantages.dtype)
        exp.advantages = exp.advantages * keep[:, None]
        if exp.returns is not None:
            exp.returns = exp.returns * keep[:, None].to(exp.returns.dtype)
        if exp.action_mask is not None:
            # OpenRLHF's policy, KL and entropy losses all aggregate over action_mask (ppo_actor.py:304-351),
            # and the token-mean denominator is summed from it (utils/loss_utils.py:54-72)
            exp.action_mask = exp.action_mask & ~truncated[:, None].to(exp.action_mask.device)
        exp.info["overlong_filtered"] = truncated.float()


def overlong_filter(experiences: list) -> None:
    """Masks truncated samples out, unless that would leave no action token in the whole rollout batch (a 0/0
    token mean in OpenRLHF's loss): then their advantages are zeroed only, and a warning says so."""
    import torch

    truncated = [e.truncated.bool() for e in experiences if e.truncated is not None]
    if truncated and bool(torch.cat(truncated).all()):
        log.warning(
            "overlong filtering: every sample of this rollout is truncated; masking them all would leave no "
            "token to average the loss over, so only their advantages are zeroed this step"
        )
        for exp in experiences:
            if exp.truncated is not None and exp.advantages is not None:
                exp.advantages = exp.advantages * 0
                exp.info["overlong_filtered"] = exp.truncated.float()
        return
    zero_truncated_advantages(experiences)


# A check for tests and debugging: with this set to a file path, after every training step (after OpenRLHF's
# weight broadcast) engine 0's greedy response to a fixed prompt is appended to it as a JSON line, so that it
# can be compared with the trained policy's own greedy response (the saved HF weights of that step).
SYNC_CHECK_ENV = "LATR_SYNC_CHECK_FILE"
SYNC_CHECK_PROMPT = "Using the numbers [1, 2], make 3."


def align_info_keys(experiences: list) -> list[str]:
    """Gives every sample of a batch the same per-sample metric names, a missing one as 0; returns the names
    that were missing somewhere. OpenRLHF merges `info` key by key (Experience._merge_item) and later splits
    the batch by index, so a name that only some samples carry (a reward file's extra_logs that change between
    calls, or a group whose reward call timed out before any names were known) would misalign or crash it."""
    names: dict[str, None] = {}
    for e in experiences:
        names.update(dict.fromkeys(e.info or {}))
    missing = [name for name in names if any(name not in (e.info or {}) for e in experiences)]
    for e in experiences:
        if e.info is None:
            e.info = {}
        for name in missing:
            if name not in e.info:
                e.info[name] = torch.zeros(len(e.sequences))
    return missing


def record_engine_greedy(trainer: Any, step: int) -> None:
    import json
    import os

    path = os.environ.get(SYNC_CHECK_ENV)
    engines = getattr(trainer, "vllm_engines", None)
    if not path or not engines or _ext(trainer)["rollout"]["backend"] == "vllm":
        return
    import ray

    tokens = ray.get(engines[0].greedy.remote(SYNC_CHECK_PROMPT, 8))
    with open(path, "a") as f:
        f.write(json.dumps({"step": step, "prompt": SYNC_CHECK_PROMPT, "tokens": tokens}) + "\n")


def init_weight_sync_group(actor: Any, backend: str) -> None:
    """OpenRLHF's `ActorPPOTrainer._init_vllm_sync_group` (ppo_actor.py:108-151), the same group, but an
    engine that fails to join stops the run at once with its own error. OpenRLHF asks the engines to join and
    then blocks in its own side of the group until every rank arrived, reading the engines' replies only
    afterwards: an engine's refusal (e.g. an SGLang server that does not allow the master address) surfaced
    after the store's 300 s timeout as "1/2 clients joined". Here the trainer's side waits in a daemon thread
    while the engines' replies are read as they come. (latr-train refuses --vllm.sync_with_ray up front.)"""
    import socket
    import threading
    from concurrent.futures import Future
    from concurrent.futures import TimeoutError as FutureTimeout

    import ray
    from openrlhf.trainer.ray import ppo_actor

    from openrlhf_ext.vllm_shim import OPENRLHF_GROUP_NAME

    master_address = ray._private.services.get_node_ip_address()
    with socket.socket() as sock:
        sock.bind(("", 0))
        master_port = sock.getsockname()[1]
    vllm = actor.strategy.args.vllm
    world_size = vllm.num_engines * vllm.tensor_parallel_size + 1
    replies = [
        engine.init_process_group.remote(
            master_address,
            master_port,
            i * vllm.tensor_parallel_size + 1,
            world_size,
            OPENRLHF_GROUP_NAME,
            backend=backend,
            use_ray=False,
        )
        for i, engine in enumerate(actor.vllm_engines)
    ]
    group: Future = Future()

    def join() -> None:  # rank 0 hosts the store: this returns once every engine rank has joined
        try:
            group.set_result(
                ppo_actor.stateless_init_process_group(
                    master_address, master_port, 0, world_size, torch.cuda.current_device()
                )
            )
        except BaseException as e:
            group.set_exception(e)

    threading.Thread(target=join, name="latr-weight-sync-group", daemon=True).start()
    pending = replies
    while True:
        try:
            actor._model_update_group = group.result(timeout=0.5)
            break
        except FutureTimeout:
            pass
        if pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
            ray.get(ready)  # an engine that could not join raises here, with its error
    ray.get(replies)


def _align_and_warn(samples: list) -> None:
    missing = align_info_keys(samples)
    if missing:
        log.warning(
            "per-sample metrics missing on some samples of the batch, logged as 0 there: %s (a reward "
            "file's extra_logs names should be the same on every call)",
            ", ".join(missing),
        )


def apply() -> None:
    import ray
    from openrlhf.trainer import ppo_trainer
    from openrlhf.trainer.ppo_utils import experience_maker, samples_generator
    from openrlhf.trainer.ray import ppo_actor
    from openrlhf.trainer.ray.vllm_engine import batch_vllm_engine_call

    generator = samples_generator.SamplesGenerator
    if getattr(generator, "_latr_patched", False):
        return
    original_generate = generator._generate_vllm
    original_samples = generator.generate_samples
    original_eval = generator.generate_eval_samples
    maker = experience_maker.RemoteExperienceMaker
    original_advantages = maker.compute_advantages_and_returns
    trainer = ppo_trainer.BasePPOTrainer
    original_states = trainer.init_checkpoint_states
    original_train_step = trainer.train_step
    original_ppo_train = ppo_actor.ActorPPOTrainer.ppo_train
    original_sync_group = ppo_actor.ActorPPOTrainer._init_vllm_sync_group

    def _init_vllm_sync_group(self, backend):
        if _ext(self) is None:
            return original_sync_group(self, backend)
        return init_weight_sync_group(self, backend)

    def _generate_vllm(self, dataloader_iter, num_prompts, dynamic_filtering, **kwargs):
        if _ext(self) is None:
            return original_generate(self, dataloader_iter, num_prompts, dynamic_filtering, **kwargs)
        if dynamic_filtering:
            return generate_with_dynamic_sampling(self, dataloader_iter, num_prompts, **kwargs)
        return generate_in_dispatch_order(self, dataloader_iter, num_prompts, **kwargs)

    def ppo_train(self, kl_ctl):
        # self.actor.model is the DeepSpeed engine (ppo_actor.py:564/577); every DP rank gets one seed. An
        # engine without the step count keeps OpenRLHF's own shuffle (a fixed seed would repeat one order).
        steps = getattr(getattr(self, "actor", None) and self.actor.model, "global_steps", None)
        if _ext(self) is not None and steps is not None:
            torch.manual_seed(shuffle_seed(self.args.train.seed, int(steps)))
        return original_ppo_train(self, kl_ctl)

    def generate_samples(self, **kwargs):
        ext = _ext(self)
        if ext is None:
            return original_samples(self, **kwargs)
        if ext["rollout"]["backend"] != "vllm":
            # the rollout being made is for step global_step + 1 (OpenRLHF's step, restored on resume)
            step = getattr(self, "_latr_global_step", 0) + 1
            batch_vllm_engine_call(self.vllm_engines, "set_training_step", step)
        if not self.args.algo.dynamic_filtering_enable:
            samples, *rest = original_samples(self, **kwargs)
            _align_and_warn(samples)
            return (samples, *rest)
        n = self.args.rollout.n_samples_per_prompt
        chunk = self.args.rollout.batch_size * n
        self._latr_target_groups = max(1, (chunk - len(getattr(self, "_sample_buffer", None) or [])) // n)
        samples, _, consumed, exhausted = original_samples(self, **kwargs)
        counts = _counters(self)
        rate = counts["groups_kept"] / counts["groups_generated"] if counts["groups_generated"] else None
        if len(samples) < chunk:
            # a batch every actor rank can split alike, or none: hold the groups back for the next call
            if exhausted:
                log.warning(
                    f"dynamic sampling: the dataloader ran out with {len(samples) // n} of "
                    f"{chunk // n} informative groups; that last partial batch is dropped"
                )
                return [], rate, consumed, True
            log.warning(
                f"dynamic sampling: {len(samples) // n} of {chunk // n} informative groups within the bound "
                "(--dapo.max_sampling_rounds); step skipped on every rank, the groups kept for the next call"
            )
            self._sample_buffer = samples + (self._sample_buffer or [])
            counts["skipped_calls"] = counts.get("skipped_calls", 0.0) + 1
            return [], rate, consumed, False
        _align_and_warn(samples)
        return samples, rate, consumed, exhausted

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
            overlong_filter(experiences)
        if ext is not None:  # for the run record: did this step have anything to learn from
            self._latr_informative = getattr(self, "_latr_informative", 0) + informative_samples(experiences)
        return experiences

    def init_checkpoint_states(self):
        states = original_states(self)
        if _ext(self) is not None:
            start = int(states.get("global_step", 0))
            self.samples_generator._latr_global_step = start
            record = _run_record(self)
            if record is not None:
                ray.get(record.started.remote(start))
        return states

    def train_step(self, rollout_samples, global_step):
        status, next_step = original_train_step(self, rollout_samples, global_step)
        if _ext(self) is not None:
            gen = self.samples_generator
            gen._latr_global_step = next_step
            record = _run_record(self)
            if record is not None:
                maker = self.experience_maker
                ray.get(record.trained.remote(getattr(maker, "_latr_informative", 0)))
                maker._latr_informative = 0
            record_engine_greedy(self, next_step)
            if self.args.algo.dynamic_filtering_enable:
                counts = _counters(gen)
                status.update({f"dapo/{k}": v for k, v in counts.items()})
                gen._latr_counts = None
        return status, next_step

    generator._generate_vllm = _generate_vllm
    generator.generate_samples = generate_samples
    generator.generate_eval_samples = generate_eval_samples
    maker.compute_advantages_and_returns = compute_advantages_and_returns
    trainer.init_checkpoint_states = init_checkpoint_states
    trainer.train_step = train_step
    # a plain class, built inside the PolicyModelActor worker (ppo_actor.py:585): patching it there reaches it
    ppo_actor.ActorPPOTrainer.ppo_train = ppo_train
    ppo_actor.ActorPPOTrainer._init_vllm_sync_group = _init_vllm_sync_group
    # PPOTrainer is a Ray actor class: Ray copied its methods onto the class it ships to the actor process
    # when the module was imported (ppo_trainer.py:449 `@ray.remote`), so the base-class patch above does not
    # reach it. The shipped class is pickled from this (the driver's) process, with these attributes.
    metadata = getattr(ppo_trainer.PPOTrainer, "__ray_metadata__", None)
    if metadata is not None:
        metadata.modified_class.init_checkpoint_states = init_checkpoint_states
        metadata.modified_class.train_step = train_step
    generator._latr_patched = True
