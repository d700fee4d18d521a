"""metrics.csv and TensorBoard: rows whole, a torn row dropped, a resume cut back to the checkpoint's step."""

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from openrlhf_ext.run_log import STEP_KEY, MetricsLog, read_metrics, repair_metrics


def steps_in(path):
    return [float(r[STEP_KEY]) for r in read_metrics(path)[1]]


def tb_scalars(out, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_rows_then_a_resume_cuts_csv_and_tensorboard_back_to_the_checkpoint(tmp_path):
    log = MetricsLog(tmp_path)
    for step in range(1, 8):  # the killed run got to step 7; its checkpoint is at step 5
        log.log(step, {"reward": step / 10, "loss": -step})
    log.close()
    resumed = MetricsLog(tmp_path, resume_step=5)
    assert resumed.repair.rows_after_step == 2
    for step in range(6, 9):
        resumed.log(step, {"reward": 1 + step / 10, "loss": -step})
    resumed.close()
    assert steps_in(tmp_path / "metrics.csv") == [1, 2, 3, 4, 5, 6, 7, 8]
    rewards = [float(r["reward"]) for r in read_metrics(tmp_path / "metrics.csv")[1]]
    assert rewards[5:] == [1.6, 1.7, 1.8]  # the resumed run's values, not the killed run's
    scalars = tb_scalars(tmp_path, "reward")
    assert [s for s, _ in scalars] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [round(v, 4) for s, v in scalars if s > 5] == [1.6, 1.7, 1.8]


def test_a_fresh_run_in_an_old_directory_starts_clean(tmp_path):
    log = MetricsLog(tmp_path)
    for step in range(1, 4):
        log.log(step, {"reward": 9.0})
    log.close()
    log = MetricsLog(tmp_path)
    log.log(1, {"reward": 0.5})
    log.close()
    assert steps_in(tmp_path / "metrics.csv") == [1]
    assert tb_scalars(tmp_path, "reward") == [(1, 0.5)]


@pytest.mark.parametrize(
    "tail",
    [
        "9.0,0.4",  # the last row lost its newline: cut mid-write
        "9.0,0.4,1,2\n",  # too many fields
        "9",  # a fragment
    ],
)
def test_a_torn_last_row_is_dropped(tmp_path, tail):
    path = tmp_path / "metrics.csv"
    path.write_text(f"{STEP_KEY},reward\n1.0,0.1\n2.0,0.2\n" + tail)
    header, rows, torn = read_metrics(path)
    assert header == [STEP_KEY, "reward"] and len(rows) == 2 and torn == 1
    report = repair_metrics(path)
    assert report.torn_rows == 1 and path.read_text() == f"{STEP_KEY},reward\n1.0,0.1\n2.0,0.2\n"


def test_duplicated_steps_keep_the_last_written(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(f"{STEP_KEY},reward\n1.0,0.1\n2.0,0.2\n3.0,0.3\n2.0,0.25\n3.0,0.35\n")
    report = repair_metrics(path)
    assert report.duplicate_rows == 2
    assert [r["reward"] for r in read_metrics(path)[1]] == ["0.1", "0.25", "0.35"]


def test_a_new_metric_extends_the_header_and_keeps_every_row(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False)
    log.log(1, {"a": 1.0})
    log.log(2, {"a": 2.0, "b": 3.0})
    log.close()
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["a"], r["b"]) for r in rows] == [("1.0", ""), ("2.0", "3.0")]


def test_a_sigkilled_writer_leaves_only_whole_rows(tmp_path):
    """A real kill, mid-stream: every row read back is complete and the steps are 1..k without gaps."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(os.getcwd())!r})
        from openrlhf_ext.run_log import MetricsLog
        log = MetricsLog({str(tmp_path)!r}, tensorboard=False)
        print("ready", flush=True)
        step = 0
        while True:
            step += 1
            log.log(step, {{"x" * 50 + str(i): float(step * i) for i in range(200)}})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 60
    while len(read_metrics(tmp_path / "metrics.csv")[1]) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()
    header, rows, _ = read_metrics(tmp_path / "metrics.csv")
    assert len(rows) >= 20 and len(header) == 201
    assert [float(r[STEP_KEY]) for r in rows] == list(range(1, len(rows) + 1))
    assert all(float(r["x" * 50 + "7"]) == 7 * float(r[STEP_KEY]) for r in rows)
    resumed = MetricsLog(tmp_path, resume_step=10, tensorboard=False)
    resumed.close()
    assert steps_in(tmp_path / "metrics.csv") == list(range(1, 11))
