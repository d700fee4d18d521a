"""Ctrl-C during a local run (openrlhf_ext.local_trainer.train): one line saying the step it stopped at and
the checkpoint --ckpt.load_enable continues from, exit status 130, the engine closed; no traceback."""

from __future__ import annotations

import pytest

from latr_sglang.config import LATRConfig
from openrlhf_ext.checkpointing import CheckpointStore
from openrlhf_ext.local.config import LocalTrainConfig


def train(cfg):
    """local_trainer.train as latr-train calls it; a KeyboardInterrupt it lets out fails the test (instead of
    ending the test session)."""
    from openrlhf_ext.local_trainer import train

    try:
        return train(cfg, LATRConfig(), prog="latr-train")
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped train()")


class FakeTrainer:
    """Steps 1.. `interrupt_at`, which raises KeyboardInterrupt as Ctrl-C does; checkpoints after `saved`.
    Its fit() keeps step_started and step_finished as LocalTrainer.fit() does (SIGINT to a real run:
    tests/openrlhf_ext/cli/test_cli_messages.py)."""

    interrupt_at: int | None = 3
    saved: int | None = 2
    closed = False
    step_started: int | None = None
    step_finished: int | None = None

    def __init__(self, cfg, latr):
        self.cfg = cfg
        self.checkpoints = CheckpointStore(f"{cfg.output_dir}/checkpoints")
        if self.saved is not None:
            self.checkpoints.save(self.saved, {"state.json": "{}"})

    def train_step(self, step):
        if step == self.interrupt_at:
            raise KeyboardInterrupt
        return {}

    def fit(self):
        for step in range(1, self.cfg.steps + 1):
            self.step_started = step
            self.train_step(step)
            self.step_finished = step
        raise KeyboardInterrupt  # after the last step (the final evaluation, say)

    def close(self):
        type(self).closed = True


@pytest.mark.parametrize(
    ("interrupt_at", "saved", "save_steps", "expected"),
    [
        (
            3,
            2,
            1,
            "interrupted at step 3; --ckpt.load_enable continues from the checkpoint of step 2 ({ckpt})",
        ),
        (
            3,
            None,
            0,
            "interrupted at step 3; no checkpoint was saved (--ckpt.save_steps N saves one every N steps)",
        ),
        (3, None, 5, "interrupted at step 3; no checkpoint was saved"),
        (None, 4, 2, "interrupted after step 4; --ckpt.load_enable continues from the checkpoint of step 4"),
        (1, None, 0, "interrupted at step 1; no checkpoint"),
    ],
)
def test_ctrl_c_is_one_line_with_the_step_and_the_checkpoint(
    tmp_path, monkeypatch, capsys, interrupt_at, saved, save_steps, expected
):
    import openrlhf_ext.local_trainer as local_trainer

    monkeypatch.setattr(FakeTrainer, "interrupt_at", interrupt_at)
    monkeypatch.setattr(FakeTrainer, "saved", saved)
    monkeypatch.setattr(FakeTrainer, "closed", False)
    monkeypatch.setattr(local_trainer, "LocalTrainer", FakeTrainer)
    cfg = LocalTrainConfig(steps=4, save_steps=save_steps, output_dir=str(tmp_path))
    assert train(cfg) == 130
    err = capsys.readouterr().err
    ckpt = tmp_path / "checkpoints" / f"step_{saved}"
    assert err.startswith("latr-train: " + expected.format(ckpt=ckpt)) and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert FakeTrainer.closed  # the engine and reward workers are stopped as on any other exit


def test_ctrl_c_while_loading_is_one_line(tmp_path, monkeypatch, capsys):
    import openrlhf_ext.local_trainer as local_trainer

    def loading(cfg, latr):
        raise KeyboardInterrupt

    monkeypatch.setattr(local_trainer, "LocalTrainer", loading)
    assert train(LocalTrainConfig(output_dir=str(tmp_path))) == 130
    err = capsys.readouterr().err
    assert err == "latr-train: interrupted before training started (loading the model and data)\n"


def test_a_ctrl_c_whose_keyboardinterrupt_is_lost_still_ends_the_run(
    tmp_path, monkeypatch, capsys, tiny_model_dir
):
    """A KeyboardInterrupt raised where Python drops it (in a finalizer: "Exception ignored") must not let the
    run go on to its last step: train()'s handler notes the Ctrl-C, and fit() stops at the next step. Here a
    real SIGINT arrives during step 2's scoring and the code it lands in swallows the KeyboardInterrupt."""
    import contextlib
    import functools
    import os
    import signal

    import openrlhf_ext.local_trainer as local_trainer

    calls = []

    def reward_that_swallows_ctrl_c(prompt, response, label):
        calls.append(1)
        if len(calls) == 9:  # the first response of step 2 (2 prompts x 4 per step)
            with contextlib.suppress(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
        return float(len(response) % 2), float(len(response) % 2)

    monkeypatch.setattr(
        local_trainer,
        "LocalTrainer",
        functools.partial(local_trainer.LocalTrainer, reward_fn=reward_that_swallows_ctrl_c),
    )
    # Python's own SIGINT handler, as in a terminal (a harness may run the tests with SIGINT ignored)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    cfg = LocalTrainConfig(
        model=str(tiny_model_dir), steps=6, prompts_per_step=2, n_samples_per_prompt=4, max_new_tokens=8,
        output_dir=str(tmp_path / "run"), task="countdown", sampler="stochastic", eval_prompts=0,
    )  # fmt: skip
    try:
        assert train(cfg) == 130
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # train()'s handler is put back
    finally:
        signal.signal(signal.SIGINT, outer)
    err = capsys.readouterr().err
    assert "latr-train: interrupted after step 2; no checkpoint was saved" in err, err
    assert len(calls) == 16  # steps 3-6 never ran
