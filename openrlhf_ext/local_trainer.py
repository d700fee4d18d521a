"""Single-process GRPO/DAPO with LATR rollouts, built from OpenRLHF's components (CPU or one GPU).

    python -m openrlhf_ext.local_trainer --algo dapo --sampler latr --steps 20 --latr.preset countdown

Each step: sample groups with the LATR driver on our in-process torch engine, score them with the task reward,
keep the informative groups (DAPO: accuracy not all equal, over-sampling up to a bound), compute group-
normalized advantages, and update OpenRLHF's `Actor` with its `PolicyLoss` (clip-higher for DAPO, token-level
loss) and the k3 KL to the initial policy (GRPO and DAPO; kl_coef 0 turns it off). The new weights are pushed
into the engine through the engine contract's update_weights before the next rollout. Metrics use OpenRLHF's
names, plus `latr/*`.

This module is the orchestration; each part has its own module under openrlhf_ext/local/: `config`
(LocalTrainConfig), `data` (problems, reward, data order), `rollout` (sampling, scoring, dynamic sampling),
`update` (the policy-gradient step), `checkpoint` (save/resume), `summary` (the end-of-run report).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from latr_sglang.config import (
    LATRConfig,
    add_dataclass_arguments,
    add_latr_arguments,
    dataclass_overrides,
    latr_config_from_args,
)
from latr_sglang.driver import LATRSampler
from latr_sglang.engines.base import SamplingParams
from latr_sglang.tasks.prompts import encode_prompts, newline_token_ids
from openrlhf_ext.checkpointing import CheckpointError, CheckpointStore
from openrlhf_ext.local.checkpoint import load_trainer_state, prepare_output_dir, save_trainer_state
from openrlhf_ext.local.config import NO_VALUE, LocalTrainConfig
from openrlhf_ext.local.custom_reward import RewardFn
from openrlhf_ext.local.data import (
    EVAL_SEED_OFFSET,
    PromptStream,
    default_reward,
    load_problems,
    load_prompts,
)
from openrlhf_ext.local.rollout import GroupRollout, ScoredGroup, custom_reward_for
from openrlhf_ext.local.summary import diverged_message, nothing_trained_message, summarize, write_summary
from openrlhf_ext.local.update import NonFiniteWeights, PolicyUpdate
from openrlhf_ext.run_log import step_line

__all__ = [
    "Diverged",
    "LocalTrainConfig",
    "LocalTrainer",
    "NonFiniteWeights",
    "NothingTrained",
    "default_reward",
    "load_problems",
    "load_prompts",
    "main",
    "train",
]


# consecutive steps with a non-finite loss or gradient, after a trained step, that mean the run diverged
# (a skipped step leaves the weights as they were, so the next ones would fail the same way); the run's last
# step failing so also counts
DIVERGED_AFTER = 2


class NothingTrained(RuntimeError):
    """Every step was skipped: the run changed nothing."""


class Diverged(RuntimeError):
    """Steps failed with non-finite losses after training: the weights are broken and are not saved."""


class LocalTrainer:
    """Orchestration only: the parts live in openrlhf_ext.local (config, data, rollout, update, checkpoint,
    summary) and openrlhf_ext.run_log (metrics.csv + TensorBoard)."""

    interrupted = False  # set by train()'s Ctrl-C handler: fit() stops at the next step boundary

    def __init__(
        self,
        cfg: LocalTrainConfig,
        latr: LATRConfig | None = None,
        reward_fn: RewardFn | None = None,
        reward_timeout_s: float = 0.0,
    ):
        """`reward_fn(prompt, response, label) -> (reward, accuracy)` replaces the task's verifier (None: the
        verifier). It is checked and a response it raises on scores 0 (openrlhf_ext.local.custom_reward);
        `reward_timeout_s` > 0 runs it in worker processes under that many CPU seconds per response (it must
        then be picklable), 0 calls it in this process, unbounded."""
        self.cfg = cfg
        self.latr = latr or LATRConfig.preset("countdown")
        custom_reward = custom_reward_for(reward_fn, reward_timeout_s)  # checked before the models load
        # what needs no model first, before the training stack is even imported: the output directory, the
        # problems and the eval set (a bad value fails in seconds)
        self.out = prepare_output_dir(cfg.output_dir, resume=cfg.resume)
        problems, self.held_out = load_problems(cfg)
        self.prompts = PromptStream(problems, cfg.seed)
        self.eval_set = self._load_eval_set()
        from openrlhf_ext.cpu_compat import install

        install()
        if torch.device(cfg.device).type == "cpu" and "deepspeed" not in sys.modules:
            # the device is chosen: DeepSpeed (imported by openrlhf.models) need not guess it and warn
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        from openrlhf.models import Actor

        from latr_sglang.engines.torch_engine import TorchEngine
        from latr_sglang.models import load_model_and_tokenizer, resolve_model_path

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
        self.stop_ids = newline_token_ids(self.tokenizer) if cfg.stops_at_newline else ()
        tok = self.tokenizer
        sampler = LATRSampler(
            self.engine, self.latr, self.sampling_params(), self.engine.eos_ids, lambda t: tok.decode([t])
        )
        self.rollouts = GroupRollout(cfg, sampler, self.tokenizer, custom_reward)
        self.updater = PolicyUpdate(
            cfg, self.actor, self.reference, self.tokenizer, self.rollouts.encode, self.device
        )
        try:
            self.check_prompt_lengths(problems)
        except ValueError:
            self.engine.close_sync()
            raise
        self.checkpoints = CheckpointStore(self.out / "checkpoints")
        (self.out / "config.json").write_text(
            json.dumps({"train": dataclasses.asdict(cfg), "latr": self.latr.to_dict()}, indent=2)
        )
        # metrics.csv + TensorBoard (openrlhf_ext.run_log: whole rows; a resume cuts both back to the
        # checkpoint's step), opened once the starting step is known
        self.metrics_log = None
        self.wandb = None
        # The step fit() is in and the last it finished, for the line a Ctrl-C ends the run with.
        self.step_started: int | None = None
        self.step_finished: int | None = None
        if cfg.use_wandb:
            import wandb

            os.environ.setdefault("WANDB_MODE", "offline")
            self.wandb = wandb.init(
                project=cfg.wandb_project,
                dir=str(self.out),
                resume="allow",
                config={"train": dataclasses.asdict(cfg), "latr": self.latr.to_dict()},
            )

    def _load_eval_set(self) -> list[Any]:
        """The held-out prompts evaluate() runs on (none without eval_prompts), read once, at the start."""
        from latr_sglang.evaluate import EvalItem, load_eval_set

        cfg = self.cfg
        if not cfg.eval_prompts:
            return []
        if cfg.eval_dataset:
            return load_eval_set(cfg.eval_dataset, cfg.eval_prompts)
        return [EvalItem(p, lab) for p, lab in self.held_out]

    def check_prompt_lengths(self, problems: list[tuple[str, Any]]) -> None:
        """Every prompt as the engine will get it (chat template, few-shot examples, response prefix) must
        leave room for a generated token in the model's context: a ValueError naming the file, the row and the
        token counts, before any sampling. Prompts that leave fewer than max_new_tokens get one warning (their
        responses end at the context, as truncated)."""
        cfg = self.cfg
        context = self.engine.context_length
        prefix = len(self.tokenizer(cfg.prefix, add_special_tokens=False).input_ids) if cfg.prefix else 0
        if prefix >= context:
            raise ValueError(
                f"--local.response_prefix is {prefix} tokens, the model's context length is {context}: "
                "no room for the prompt or a response"
            )
        if cfg.prompts is not None:
            source, unit = f"--data.prompt_dataset {cfg.prompts}", "row"
        else:
            source, unit = f"the built-in task {cfg.task}", "problem"
        eval_source = f"--eval.dataset {cfg.eval_dataset}" if cfg.eval_dataset else "held-out"
        added = ["the chat template"] if cfg.chat else []
        if prefix:
            added.append(f"the {prefix}-token response prefix")
        parts = f" (with {' and '.join(added)})" if added else ""
        short = 0
        for where, what, texts in (
            (source, unit, [p for p, _ in problems]),
            (eval_source, "row" if cfg.eval_dataset else "problem", [item.prompt for item in self.eval_set]),
        ):
            unique = list(dict.fromkeys(texts))  # a built-in task repeats its prompts
            lengths: dict[str, int] = {}
            for at in range(0, len(unique), 1024):  # the engine's encoding, a chunk at a time
                chunk = unique[at : at + 1024]
                ids = encode_prompts(self.tokenizer, chunk, chat=cfg.chat, response_prefix=cfg.prefix)
                lengths.update(zip(chunk, map(len, ids)))
            for i, text in enumerate(texts):
                n = lengths[text]
                if n >= context:
                    raise ValueError(
                        f"{where}: {what} {i + 1} has {n} tokens{parts}, the model's context length "
                        f"is {context}: no room to generate"
                    )
                short += n + cfg.max_new_tokens > context
        if short:
            print(
                f"warning: {short} prompts leave fewer than --rollout.max_new_tokens {cfg.max_new_tokens} "
                f"tokens in the model's context ({context}): their responses end there, as truncated",
                flush=True,
            )

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.updater.optimizer

    @property
    def policy_loss(self) -> Any:
        return self.updater.policy_loss

    def sampling_params(self) -> SamplingParams:
        """Rollout and evaluation sampling: the same temperature, length limit and stops."""
        cfg = self.cfg
        return SamplingParams(
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, stop_token_ids=self.stop_ids
        )

    # ---- one step: rollout, update, weight sync ---------------------------------------------------------
    def rollout(self, step: int) -> tuple[list[ScoredGroup], dict[str, float]]:
        """The groups this step trains on, and the rollout metrics."""
        return self.rollouts.collect(step, self.prompts)

    def update(self, kept: list[ScoredGroup]) -> dict[str, float]:
        return self.updater(kept)

    def sync_weights(self) -> None:
        self.engine.update_weights_sync({k: v.detach() for k, v in self.actor.model.state_dict().items()})

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

    # ---- the run ------------------------------------------------------------------------------------------
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
        elif self.cfg.eval_prompts and first == 1:
            print(
                f"warning: --local.eval_before false and no {self.out / 'eval_before.json'} to reuse: the "
                "summary compares nothing (no gain over the starting policy); copy one from a run of the "
                "same flags, or leave eval_before on",
                flush=True,
            )
        history = []
        last_trained = first - 1 if first > 1 else None  # a resumed run trained before its checkpoint
        nonfinite: list[int] = []  # the steps with a non-finite loss since the last trained one
        train_start = time.perf_counter()
        bar = tqdm(
            range(first, self.cfg.steps + 1),
            desc=f"{self.cfg.algo}+{self.cfg.sampler}",
            unit="step",
            initial=first - 1,
            total=self.cfg.steps,
        )
        for step in bar:
            self._stop_if_interrupted()
            self.step_started = step
            m = self.train_step(step)
            self.step_finished = step
            history.append(m)
            bar.set_postfix(
                reward=f"{m['rollout/reward_mean']:.3f}",
                acc=f"{m['rollout/accuracy_mean']:.3f}",
                loss=f"{m.get('policy_loss', float('nan')):.4f}",
            )
            bar.write(step_line(step, m))
            if m.get("nonfinite_step"):
                nonfinite.append(step)
            elif not m.get("skipped_step"):
                last_trained, nonfinite = step, []
            if (
                last_trained is not None
                and nonfinite
                and (len(nonfinite) >= DIVERGED_AFTER or step == self.cfg.steps)
            ):  # stopped before this step's checkpoint, evaluation or the policy's save
                raise Diverged(diverged_message(self.cfg, history, nonfinite[0], last_trained))
            every = self.cfg.eval_every
            if self.cfg.eval_prompts and every > 0 and step % every == 0 and step != self.cfg.steps:
                self.evaluate(f"step{step}")
            if self.cfg.save_steps and (step % self.cfg.save_steps == 0 or step == self.cfg.steps):
                self.save_checkpoint(step)
        self._stop_if_interrupted()
        train_s = time.perf_counter() - train_start
        trained = sum(1 for m in history if not m.get("skipped_step"))
        if history and not trained and first == 1:  # (a resumed run trained before its checkpoint)
            raise NothingTrained(nothing_trained_message(self.cfg, history))
        self.save_policy()
        if self.cfg.eval_prompts:
            after = self.evaluate("after")
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

    def _stop_if_interrupted(self) -> None:
        """A Ctrl-C whose KeyboardInterrupt was lost (raised inside a finalizer or a callback, which Python
        reports as "Exception ignored" and goes on) still ends the run, at the next step boundary."""
        if self.interrupted:
            raise KeyboardInterrupt

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

    # ---- evaluation -------------------------------------------------------------------------------------
    def eval_items(self) -> list[Any]:
        return self.eval_set

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
        return save_trainer_state(
            self.checkpoints,
            step,
            self.actor.model,
            self.optimizer,
            self.prompts.position,
            self._resume_config(),
        )

    def _resume_config(self) -> dict[str, Any]:
        """What a resume must agree with: the run's config and its LATR config."""
        return {**dataclasses.asdict(self.cfg), "latr": self.latr.to_dict()}

    def load_checkpoint(self) -> int:
        """Restores the latest intact checkpoint (openrlhf_ext.local.checkpoint); returns its step, 0 when
        there is none."""
        restored = load_trainer_state(
            self.checkpoints, self.actor.model, self.optimizer, self._resume_config(), self.cfg.force_resume
        )
        if restored is None:
            print(f"no checkpoint in {self.checkpoints.root}: starting from step 1", flush=True)
            return 0
        step, self.prompts.position = restored
        self.sync_weights()
        return step

    def close(self) -> None:
        self.engine.close_sync()
        self.rollouts.close()
        if self.metrics_log is not None:
            self.metrics_log.close()
        if self.wandb is not None:
            self.wandb.finish()


PROG = (
    "python -m openrlhf_ext.local_trainer"  # its messages' prefix; `latr-train --trainer.mode local` its own
)


def main(argv: list[str] | None = None) -> int:
    from latr_sglang.argtypes import OneLineErrorParser
    from openrlhf_ext.local.config import LocalConfigError

    parser = OneLineErrorParser(
        prog=PROG,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataclass_arguments(parser.add_argument_group("training"), LocalTrainConfig)
    add_latr_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = LocalTrainConfig(**dataclass_overrides(args, LocalTrainConfig))
        latr = latr_config_from_args(args, default_preset="countdown")
    except LocalConfigError as e:  # named as this command line's flags: --steps 0
        print(f"{PROG}: error: {e.message(_flag_name)}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    return train(cfg, latr, prog=PROG)


def _flag_name(field: str, value: Any = NO_VALUE) -> str:
    """A LocalTrainConfig field as this module's command line spells it: `--steps 0`."""
    if value is NO_VALUE:
        return f"--{field}"
    if isinstance(value, tuple | list):
        return f"--{field} " + ",".join(map(str, value))
    return f"--{field} {str(value).lower() if isinstance(value, bool) else value}"


def train(cfg: LocalTrainConfig, latr: LATRConfig, prog: str | None = None) -> int:
    """Runs a whole local training job (the local_trainer CLI and `latr-train --trainer.mode local`) and
    returns its exit status: 0 done, 2 bad input, 3 nothing trained, 4 diverged, 130 interrupted. Each
    failure is one line on stderr, `{prog}: error: ...`; Ctrl-C ends the run with one line saying the step it
    stopped at and, when a checkpoint was saved, that --ckpt.load_enable continues from it."""
    lead = f"{prog}: " if prog else ""

    def fail(message: object, code: int) -> int:
        print(f"{lead}error: {message}", file=sys.stderr)
        return code

    try:
        trainer = LocalTrainer(cfg, latr)
    except (ValueError, FileNotFoundError) as e:  # a bad prompts file, eval set or model path, named
        return fail(e, 2)
    except KeyboardInterrupt:
        print(f"{lead}interrupted before training started (loading the model and data)", file=sys.stderr)
        return 130
    try:
        with ctrl_c_noted(trainer):
            trainer.fit()
    except KeyboardInterrupt:
        _end_progress_bars()
        print(f"{lead}{interrupted_message(trainer)}", file=sys.stderr, flush=True)
        return 130
    except NothingTrained as e:
        return fail(e, 3)
    except NonFiniteWeights as e:
        return fail(f"{e}; aborted, nothing saved from this step on", 4)
    except Diverged as e:
        return fail(e, 4)
    except CheckpointError as e:  # no intact checkpoint, or a resume with a different config
        return fail(e, 2)
    finally:
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C while the engine stops: it is stopping
            trainer.close()
    print(f"metrics: {trainer.out / 'metrics.csv'}, tensorboard: {trainer.out / 'tensorboard'}")
    return 0


@contextlib.contextmanager
def ctrl_c_noted(trainer: LocalTrainer):
    """Ctrl-C raises KeyboardInterrupt as before, and is also noted on the trainer (`interrupted`), so that
    fit() stops at the next step boundary if that KeyboardInterrupt is lost: one raised while Python runs a
    finalizer (`__del__`, a weakref callback) is printed as "Exception ignored" and dropped. (With a handler
    of ours installed, asyncio.run raises the KeyboardInterrupt itself rather than cancel its task first.)
    Only where Python's own handler is in place: a process started with SIGINT ignored (a background job)
    keeps ignoring it, as Python and asyncio do."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return

    def on_sigint(signum, frame):
        trainer.interrupted = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _end_progress_bars() -> None:
    """Closes fit()'s progress bar where Ctrl-C left it, so that what follows starts on a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def interrupted_message(trainer: LocalTrainer) -> str:
    """Where a Ctrl-C stopped fit(), and the checkpoint --ckpt.load_enable would continue from."""
    started, finished = trainer.step_started, trainer.step_finished
    if started is None:
        where = "before the first step"
    elif started != finished:
        where = f"at step {started}"
    else:
        where = f"after step {finished}"
    store = trainer.checkpoints
    latest = store.latest_name()
    if latest is None:
        saves = "" if trainer.cfg.save_steps else " (--ckpt.save_steps N saves one every N steps)"
        return f"interrupted {where}; no checkpoint was saved{saves}"
    step = latest.removeprefix("step_")
    return (
        f"interrupted {where}; --ckpt.load_enable continues from the checkpoint of step {step} "
        f"({store.root / latest}), with the same flags"
    )


if __name__ == "__main__":
    raise SystemExit(main())
