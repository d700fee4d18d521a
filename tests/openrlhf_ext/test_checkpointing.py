"""Checkpoints: atomic writes (a kill mid-save leaves the previous one), verification on load, fallback from
a damaged latest with a warning naming the file, and a resume under another config refused unless forced."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from openrlhf_ext.checkpointing import CheckpointError, CheckpointStore, config_differences

CONFIG = {"model": "tiny", "seed": 0, "max_new_tokens": 64, "steps": 10, "save_steps": 2}


def state(step):
    return {"step": step, "w": torch.full((64,), float(step))}


def saved_store(tmp_path, steps=(2, 4, 6)):
    store = CheckpointStore(tmp_path / "checkpoints")
    for step in steps:
        store.save(step, {"trainer_state.pt": state(step), "note.txt": f"step {step}"}, config=CONFIG)
    return store


def test_save_and_load_round_trip(tmp_path):
    store = saved_store(tmp_path)
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_6"
    ckpt = store.load_latest(config=CONFIG)
    assert ckpt.step == 6 and ckpt.torch_load()["w"][0].item() == 6.0
    manifest = json.loads((ckpt.path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"trainer_state.pt", "note.txt"} and manifest["config"] == CONFIG
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]  # no temporaries


def test_no_checkpoint_is_none(tmp_path):
    assert CheckpointStore(tmp_path / "nothing").load_latest() is None


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda d: (d / "trainer_state.pt").write_bytes(b"truncated"), "trainer_state.pt has 9 bytes"),
        (lambda d: (d / "trainer_state.pt").unlink(), "trainer_state.pt is missing"),
        (lambda d: (d / "manifest.json").write_text("{"), "manifest.json is unreadable"),
        (lambda d: (d / "manifest.json").unlink(), "manifest.json is missing"),
        (lambda d: _flip_a_byte(d / "trainer_state.pt"), "trainer_state.pt does not match its SHA-256"),
    ],
)
def test_a_damaged_latest_falls_back_to_the_previous_intact_one(tmp_path, caplog, damage, named):
    store = saved_store(tmp_path)
    damage(tmp_path / "checkpoints" / "step_6")
    with caplog.at_level("WARNING"):
        ckpt = store.load_latest(config=CONFIG)
    assert ckpt.step == 4 and ckpt.torch_load()["w"][0].item() == 4.0
    assert named in caplog.text and "step_6" in caplog.text and "step_4" in caplog.text


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_damaged_latest_file_uses_the_newest_intact(tmp_path, caplog):
    store = saved_store(tmp_path)
    (tmp_path / "checkpoints" / "latest").write_text("garbage\x00")
    with caplog.at_level("WARNING"):
        assert store.load_latest().step == 6
    assert "latest is damaged" in caplog.text
    (tmp_path / "checkpoints" / "latest").write_text("step_99")
    assert store.load_latest().step == 6


def test_every_checkpoint_damaged_is_an_error_naming_the_files(tmp_path):
    store = saved_store(tmp_path, steps=(2, 4))
    for step in (2, 4):
        (tmp_path / "checkpoints" / f"step_{step}" / "trainer_state.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no intact checkpoint.*step_4/trainer_state.pt.*step_2"):
        store.load_latest()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"seed": 1}, "seed: checkpoint 0, now 1"),
        ({"max_new_tokens": 128}, "max_new_tokens: checkpoint 64, now 128"),
        ({"model": "other"}, "model: checkpoint 'tiny', now 'other'"),
        ({"new_field": True}, "new_field: checkpoint '<absent>', now True"),
    ],
)
def test_a_resume_under_another_config_is_refused_unless_forced(tmp_path, change, named, caplog):
    store = saved_store(tmp_path)
    current = {**CONFIG, **change}
    with pytest.raises(CheckpointError, match="resume refused") as exc:
        store.load_latest(config=current, force_hint="--local.force_resume")
    assert named in str(exc.value) and "--local.force_resume" in str(exc.value)
    with caplog.at_level("WARNING"):
        assert store.load_latest(config=current, force=True).step == 6
    assert "as forced" in caplog.text


def test_a_resume_may_change_the_length_and_cadence(tmp_path):
    store = saved_store(tmp_path)
    assert store.load_latest(config={**CONFIG, "steps": 50, "save_steps": 5}).step == 6
    assert config_differences({"a": {"b": [1, 2]}}, {"a": {"b": (1, 2)}}) == []  # tuples are lists in JSON
    assert config_differences({"a": {"b": 1}}, {"a": {"b": 2}}) == ["a.b: checkpoint 1, now 2"]


def test_saving_the_same_step_again_replaces_it_and_keep_last_prunes(tmp_path):
    store = CheckpointStore(tmp_path / "c", keep_last=2)
    for step in (1, 2, 3):
        store.save(step, {"s.pt": state(step)})
    store.save(3, {"s.pt": state(33)})
    assert store.steps() == [2, 3] and store.load_latest().torch_load("s.pt")["step"] == 33


def test_a_writer_function_and_bad_arguments(tmp_path):
    store = CheckpointStore(tmp_path / "c")
    store.save(1, lambda d: (d / "sub").mkdir() or (d / "sub" / "x.bin").write_bytes(b"abc"))
    assert (store.load_latest().path / "sub" / "x.bin").read_bytes() == b"abc"
    with pytest.raises(ValueError, match="at least one file"):
        store.save(2, {})
    assert store.steps() == [1] and not list((tmp_path / "c").glob(".tmp-*"))
    with pytest.raises(ValueError, match="keep_last=0"):
        CheckpointStore(tmp_path, keep_last=0)


def test_a_sigkill_mid_save_leaves_the_previous_checkpoint(tmp_path):
    """A real kill while a large checkpoint is being written, repeatedly: what loads is always intact."""
    root = tmp_path / "checkpoints"
    script = textwrap.dedent(
        f"""
        import sys, torch
        sys.path.insert(0, {os.getcwd()!r})
        from openrlhf_ext.checkpointing import CheckpointStore
        store = CheckpointStore({str(root)!r}, keep_last=3)
        step = 0
        while True:
            step += 1
            w = torch.full((2_000_000,), float(step))
            store.save(step, {{"trainer_state.pt": {{"step": step, "w": w}}}})
            print(step, flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "1"
    proc.stdout.readline()
    time.sleep(0.13)  # somewhere inside a later save
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()
    store = CheckpointStore(root)
    ckpt = store.load_latest()
    assert ckpt is not None and ckpt.step >= 2
    loaded = ckpt.torch_load()
    assert loaded["step"] == ckpt.step and loaded["w"][-1].item() == float(ckpt.step)
    store.save(ckpt.step + 1, {"trainer_state.pt": {"step": ckpt.step + 1}})  # leftovers are cleaned up
    assert not [p for p in root.iterdir() if p.name.startswith(".")]
