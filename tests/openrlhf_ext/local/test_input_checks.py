"""The local trainer's refusals of bad input and its handling of a diverged run, checked on the functions
that do them (no model run): rewards scored as one batch, divergence, prompt lengths, the output directory,
eval_prompts, resume into another model, the prompt and label keys."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from openrlhf_ext.local.config import LocalTrainConfig


# ---- H3: a sampling round's rewards are one reward_func batch ----------------------------------------------
class _Tok:
    """decode([i]) -> texts[i]: a trajectory's ids stand for the response text under test."""

    def __init__(self, texts):
        self.texts = texts

    def decode(self, ids, skip_special_tokens=True):
        return self.texts[ids[0]]


def _groups(sizes):
    at, out = 0, []
    for n in sizes:
        out.append(SimpleNamespace(trajectories=[SimpleNamespace(token_ids=[at + i]) for i in range(n)]))
        at += n
    return out


def test_a_rounds_rewards_are_one_batch_with_the_per_sample_values(monkeypatch):
    from latr_sglang.tasks import reward_func as rf
    from openrlhf_ext.local.data import default_reward
    from openrlhf_ext.local.rollout import GroupRollout

    countdown = json.dumps({"numbers": [3, 5], "target": 8})
    problems = [("Numbers 3 5, target 8\n", countdown), ("What is 2 + 3?\n", "5")]
    texts = [
        "<answer> 3 + 5 </answer>",  # correct
        "<answer> 3 * 5 </answer>",  # well formed, wrong
        "no answer",
        "<answer> 5 + 3 </answer>",
        "Answer: 5",  # math, correct
        "Answer: \\boxed{5}",
        "Answer: 4",
        "",
    ]
    calls = []
    real = rf.reward_func

    def counting(queries, prompts, labels, **kwargs):
        calls.append(len(queries))
        return real(queries, prompts, labels, **kwargs)

    monkeypatch.setattr(rf, "reward_func", counting)
    cfg = LocalTrainConfig(response_prefix="", n_samples_per_prompt=4, reward="shaped")
    rollout = GroupRollout(cfg, sampler=None, tokenizer=_Tok(texts))
    scored = rollout.score_groups(problems, _groups([4, 4]))
    assert calls == [8]  # one batch (one CPU budget) for the whole round, not one call per sample
    expected = [
        default_reward(p, t, lab) for (p, lab), chunk in zip(problems, (texts[:4], texts[4:])) for t in chunk
    ]
    got = [(r, a) for g in scored for r, a in zip(g.rewards.tolist(), g.accuracy.tolist())]
    assert got == [(float(torch.tensor(r)), float(torch.tensor(a))) for r, a in expected]
    assert got[0] == (1.0, 1.0) and got[4][1] == 1.0 and got[6][1] == 0.0
    # a custom reward function is still called once per sample, with (prompt, response, label)
    seen = []
    custom = GroupRollout(cfg, None, _Tok(texts), reward_fn=lambda p, r, lab: seen.append(r) or (0.5, 0.0))
    assert [g.rewards.tolist() for g in custom.score_groups(problems, _groups([4, 4]))] == [[0.5] * 4] * 2
    assert seen == texts and calls == [8]


# ---- H4 + L3: a run that diverges exits non-zero, saves nothing, names what to check -----------------------
TRAINED = {"skipped_step": 0.0, "rollout/reward_mean": 0.5, "rollout/accuracy_mean": 0.5}
NONFINITE = {
    "skipped_step": 1.0,
    "nonfinite_step": 1.0,
    "rollout/reward_mean": 0.5,
    "rollout/accuracy_mean": 0.0,
}
TIED = {"skipped_step": 1.0, "rollout/reward_mean": 0.0, "rollout/accuracy_mean": 0.0}


def _scripted_trainer(tmp_path, script, **overrides):
    """A LocalTrainer without models whose steps return `script`'s metrics; records what it saved."""
    from openrlhf_ext.local_trainer import LocalTrainer

    trainer = LocalTrainer.__new__(LocalTrainer)
    trainer.cfg = LocalTrainConfig(steps=len(script), output_dir=str(tmp_path), **overrides)
    trainer.out = tmp_path
    trainer.metrics_log = object()  # opened
    trainer.ran, trainer.saved = [], []
    trainer.train_step = lambda step: trainer.ran.append(step) or dict(script[step - 1])
    trainer.save_policy = lambda: trainer.saved.append("policy")
    trainer.save_checkpoint = lambda step: trainer.saved.append(step)
    return trainer


def test_divergence_rule(tmp_path):
    from openrlhf_ext.local_trainer import Diverged, NothingTrained

    # recovered: one non-finite step between trained ones is skipped and the run goes on
    trainer = _scripted_trainer(tmp_path, [TRAINED, NONFINITE, TRAINED, TRAINED])
    assert len(trainer.fit()) == 4 and trainer.saved == ["policy"]
    # two in a row after training (a tied step between them changes nothing): stopped there, at step 4
    trainer = _scripted_trainer(tmp_path, [TRAINED, NONFINITE, TIED, NONFINITE, TRAINED], save_steps=1)
    with pytest.raises(Diverged, match=r"^training diverged at step 2: step 1 trained") as e:
        trainer.fit()
    assert trainer.ran == [1, 2, 3, 4] and trainer.saved == [1, 2, 3]  # no step 4, no policy
    assert "earlier checkpoints may hold them already" in str(e.value)
    # the last step non-finite after training: diverged too (its weights would be saved as the policy)
    trainer = _scripted_trainer(tmp_path, [TRAINED, TRAINED, NONFINITE])
    with pytest.raises(Diverged, match="at step 3: step 2 trained"):
        trainer.fit()
    assert trainer.saved == []
    # non-finite before anything trained is not divergence
    trainer = _scripted_trainer(tmp_path, [NONFINITE, TRAINED, TRAINED])
    assert len(trainer.fit()) == 3 and trainer.saved == ["policy"]
    trainer = _scripted_trainer(tmp_path, [NONFINITE, NONFINITE])
    with pytest.raises(NothingTrained, match="not finite"):
        trainer.fit()


@pytest.mark.parametrize(
    ("overrides", "named", "not_named"),
    [
        (dict(learning_rate=1e30), "--actor.adam.lr 1e+30", "--reward.overlong_penalty_factor"),
        (
            dict(overlong_buffer_len=4, overlong_penalty_factor=1e308),
            "--reward.overlong_penalty_factor 1e+308",
            "adam.lr",
        ),
        (dict(kl_coef=1e308), "--algo.kl.init_coef 1e+308", "adam.lr"),
        (dict(grad_clip=float("inf")), "--local.grad_clip inf", "adam.lr"),
    ],
)
def test_non_finite_hints_name_the_suspicious_setting(overrides, named, not_named):
    from openrlhf_ext.local.summary import diverged_message, nothing_trained_message

    cfg = LocalTrainConfig(**overrides)
    for text in (
        diverged_message(cfg, [TRAINED, NONFINITE], 2, 1),
        nothing_trained_message(cfg, [NONFINITE]),
    ):
        assert named in text and not_named not in text, text
        assert "make groups differ" not in text  # ties were not the problem


def test_non_finite_hints_list_every_cause_when_nothing_stands_out():
    from openrlhf_ext.local.summary import nonfinite_causes

    text = nonfinite_causes(LocalTrainConfig(learning_rate=1e-6, overlong_buffer_len=4), [NONFINITE])
    for flag in ("--actor.adam.lr 1e-06", "--local.grad_clip 1", "--algo.kl.init_coef 0.01"):
        assert flag in text
    assert "--reward.overlong_penalty_factor 1" in text and "reward function" in text
    infinite = dict(NONFINITE, **{"rollout/reward_mean": float("-inf")})
    assert "the rewards were not finite" in nonfinite_causes(LocalTrainConfig(), [infinite])


# ---- M1: prompts longer than the context are refused before sampling ---------------------------------------
def _length_checker(tmp_path, tokenizer, context, rows, **overrides):
    from openrlhf_ext.local.rollout import GroupRollout
    from openrlhf_ext.local_trainer import LocalTrainer

    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "label": "1"}) + "\n" for p in rows))
    trainer = LocalTrainer.__new__(LocalTrainer)
    trainer.cfg = LocalTrainConfig(prompts=str(path), output_dir=str(tmp_path / "run"), **overrides)
    trainer.engine = SimpleNamespace(context_length=context)
    trainer.tokenizer = tokenizer
    trainer.rollouts = GroupRollout(trainer.cfg, None, tokenizer)
    trainer.eval_set = []
    return trainer, [(p, "1") for p in rows]


def test_prompts_longer_than_the_context_are_refused_naming_file_row_and_counts(
    tmp_path, tiny_model_dir, capsys
):
    from transformers import AutoTokenizer

    from latr_sglang.tasks.prompts import encode_prompts

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = ["short", "word " * 300]
    long_ids = len(encode_prompts(tok, rows[1:], chat=True)[0])
    trainer, problems = _length_checker(tmp_path, tok, 200, rows, max_new_tokens=8)
    with pytest.raises(ValueError) as e:
        trainer.check_prompt_lengths(problems)
    assert str(e.value) == (
        f"--data.prompt_dataset {tmp_path / 'p.jsonl'}: row 2 has {long_ids} tokens (with the chat "
        "template), the model's context length is 200: no room to generate"
    )
    trainer, problems = _length_checker(tmp_path, tok, long_ids + 1, rows, max_new_tokens=8)
    trainer.check_prompt_lengths(problems)  # one token of room: accepted, with a warning
    assert "warning: 1 prompts leave fewer than --rollout.max_new_tokens 8" in capsys.readouterr().out
    # the response prefix counts; alone too long, it is named
    trainer, problems = _length_checker(tmp_path, tok, 50, ["short"], response_prefix="x " * 60)
    with pytest.raises(
        ValueError, match=r"^--local.response_prefix is \d+ tokens, the model's context length is 50"
    ):
        trainer.check_prompt_lengths(problems)
    trainer, problems = _length_checker(tmp_path, tok, 80, ["a " * 40], response_prefix="x " * 30)
    with pytest.raises(
        ValueError, match=r"row 1 has \d+ tokens \(with the chat template and the \d+-token response prefix\)"
    ):
        trainer.check_prompt_lengths(problems)


# ---- M8 + L7: the output directory -------------------------------------------------------------------------
def test_output_dir_that_is_a_file_or_under_one_is_refused(tmp_path):
    from openrlhf_ext.local.checkpoint import prepare_output_dir

    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ValueError, match=rf"^--ckpt.output_dir {afile}: is a file, not a directory$"):
        prepare_output_dir(str(afile), resume=False)
    with pytest.raises(ValueError, match=rf"^--ckpt.output_dir {afile}/sub/x: {afile} is a file"):
        prepare_output_dir(str(afile / "sub" / "x"), resume=False)
    assert prepare_output_dir(str(tmp_path / "a" / "b"), resume=False).is_dir()  # parents created


def test_output_dir_errors_come_before_any_model_loads(tmp_path, capsys):
    from latr_sglang.config import LATRConfig
    from openrlhf_ext.local_trainer import train

    afile = tmp_path / "afile"
    afile.write_text("x")
    cfg = LocalTrainConfig(model=str(tmp_path / "no-such-model"), output_dir=str(afile))
    assert train(cfg, LATRConfig()) == 2  # the model path is never looked at
    assert capsys.readouterr().err == f"error: --ckpt.output_dir {afile}: is a file, not a directory\n"


def test_a_new_run_into_an_earlier_runs_dir_is_refused_unless_resuming(tmp_path):
    from openrlhf_ext.local.checkpoint import prepare_output_dir

    out = tmp_path / "run"
    out.mkdir()
    (out / "eval_before.json").write_text("{}")  # not a run by itself (eval_before=false reuses it)
    assert prepare_output_dir(str(out), resume=False) == out
    (out / "config.json").write_text("{}")
    (out / "checkpoints").mkdir()
    with pytest.raises(ValueError) as e:
        prepare_output_dir(str(out), resume=False)
    assert str(e.value).startswith(
        f"--ckpt.output_dir {out}: holds an earlier run (config.json, checkpoints/)"
    )
    assert "--ckpt.load_enable" in str(e.value) and "another --ckpt.output_dir" in str(e.value)
    assert prepare_output_dir(str(out), resume=True) == out  # --ckpt.load_enable continues it


# ---- M3: eval_prompts past what the built-in task has ------------------------------------------------------
def test_eval_prompts_beyond_the_task_are_refused_before_any_problem_is_generated():
    import time

    t = time.perf_counter()
    with pytest.raises(ValueError, match=r"eval_prompts=1000000: a built-in task holds out at most 4096"):
        LocalTrainConfig(eval_prompts=1_000_000)
    with pytest.raises(
        ValueError, match=r"countdown-fewshot \(max_number 12\) has only 221 distinct problems"
    ):
        LocalTrainConfig(eval_prompts=221)
    with pytest.raises(ValueError, match=r"countdown \(one number per problem\) has only 100 distinct"):
        LocalTrainConfig(task="countdown", countdown_numbers=(1, 1), eval_prompts=100)
    assert time.perf_counter() - t < 1.0
    LocalTrainConfig(eval_prompts=220)
    LocalTrainConfig(eval_prompts=4096, max_number=100)
    LocalTrainConfig(eval_prompts=10**6, eval_dataset="countdown")  # a file's size is its own limit


# ---- L5: a resume into another model, and the force hint's syntax ------------------------------------------
def test_resume_into_a_model_of_another_shape_is_one_line_and_the_hint_has_the_flags_value(tmp_path):
    from openrlhf_ext.checkpointing import CheckpointError, CheckpointStore
    from openrlhf_ext.local.checkpoint import load_trainer_state, save_trainer_state

    store = CheckpointStore(tmp_path / "checkpoints")
    model = torch.nn.Linear(4, 4)
    save_trainer_state(store, 1, model, torch.optim.AdamW(model.parameters()), 8, {"model": "a", "seed": 0})
    other = torch.nn.Linear(4, 2)
    with pytest.raises(CheckpointError, match=r"--local.force_resume true"):
        load_trainer_state(
            store, other, torch.optim.AdamW(other.parameters()), {"model": "b", "seed": 0}, False
        )
    with pytest.raises(CheckpointError) as e:
        load_trainer_state(
            store, other, torch.optim.AdamW(other.parameters()), {"model": "b", "seed": 0}, True
        )
    assert (
        "holds another model's weights (weight: [4, 4] in the checkpoint, [2, 4] in the model (and 1 more))"
        in (str(e.value))
    )
    assert "\n" not in str(e.value)
    same = torch.nn.Linear(4, 4)
    assert load_trainer_state(
        store, same, torch.optim.AdamW(same.parameters()), {"model": "a", "seed": 0}, False
    ) == (
        1,
        8,
    )
    assert torch.equal(same.weight, model.weight)


# ---- L6: one key for prompt and label ----------------------------------------------------------------------
def test_the_same_key_for_prompt_and_label_is_refused_naming_both():
    with pytest.raises(ValueError, match=r"label_key='prompt': the same key as input_key='prompt'"):
        LocalTrainConfig(prompts="p.jsonl", input_key="prompt", label_key="prompt")
    LocalTrainConfig(input_key="question", label_key="answer")
