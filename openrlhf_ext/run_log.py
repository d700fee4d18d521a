"""A run's metrics log: metrics.csv and TensorBoard that a kill or a resume never leaves wrong.

Each row is formatted in memory and written with one `write` on a file opened for appending, then flushed
(and optionally fsynced), so a killed run leaves at most one torn last row; reading drops it. On resume from a
checkpoint at step k the CSV is cut back to the rows of steps <= k (atomically: a temporary file renamed over
the old one) and TensorBoard is opened with purge_step = k + 1, so its readers discard what the killed run
wrote after the checkpoint. Without that, a resumed run's steps k+1.. appear twice and plots mix the two.

    log = MetricsLog(out_dir, resume_step=None)      # a fresh run: metrics.csv starts empty
    log = MetricsLog(out_dir, resume_step=ckpt.step)  # a resume: rows after the checkpoint are dropped
    log.log(step, {"rollout/reward_mean": 0.3, ...})
    log.close()
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STEP_KEY = "train/global_step"  # the column holding each row's step (what `latr-sglang report` reads)
CSV_NAME = "metrics.csv"


@dataclass
class Repair:
    """What `repair_metrics` found and removed."""

    rows_kept: int = 0
    torn_rows: int = 0  # a last row without its newline, or a row with the wrong number of fields
    rows_after_step: int = 0  # rows past the checkpoint's step (a killed run's steps that will be redone)
    duplicate_rows: int = 0  # an earlier row for a step that a later row repeats

    @property
    def changed(self) -> bool:
        return bool(self.torn_rows or self.rows_after_step or self.duplicate_rows)


def _row_step(row: dict[str, str]) -> float | None:
    try:
        step = float(row.get(STEP_KEY, ""))
    except ValueError:
        return None
    return step if math.isfinite(step) else None


def read_metrics(path: str | Path) -> tuple[list[str], list[dict[str, str]], int]:
    """(header, complete rows, number of torn rows dropped). A row is complete when it ends in a newline and
    has exactly the header's fields."""
    path = Path(path)
    if not path.exists():
        return [], [], 0
    with open(path, newline="") as f:
        text = f.read()
    if not text:
        return [], [], 0
    torn = 0
    if not text.endswith("\n"):  # the last write was cut off
        cut = text.rfind("\n")
        text = text[: cut + 1] if cut >= 0 else ""
        torn += 1
    records = list(csv.reader(io.StringIO(text, newline="")))
    if not records:
        return [], [], torn
    header, rows = records[0], []
    for record in records[1:]:
        if len(record) != len(header):
            torn += 1
            continue
        rows.append(dict(zip(header, record)))
    return header, rows, torn


def _write_atomic(path: Path, header: list[str], rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow([row.get(k, "") for k in header])
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def repair_metrics(path: str | Path, keep_through_step: float | None = None) -> Repair:
    """Rewrites metrics.csv without torn rows, without rows past `keep_through_step` (None: keep all) and with
    one row per step (the last written: a step redone after a resume supersedes the old one)."""
    path = Path(path)
    header, rows, torn = read_metrics(path)
    report = Repair(torn_rows=torn)
    kept: list[dict[str, str]] = []
    index: dict[float, int] = {}
    for row in rows:
        step = _row_step(row)
        if keep_through_step is not None and step is not None and step > keep_through_step:
            report.rows_after_step += 1
            continue
        if step is not None and step in index:
            report.duplicate_rows += 1
            kept[index[step]] = row
            continue
        if step is not None:
            index[step] = len(kept)
        kept.append(row)
    report.rows_kept = len(kept)
    if report.changed and header:
        _write_atomic(path, header, kept)
    return report


def _scalar(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # a 0-d tensor or numpy scalar
        try:
            return float(value.item())
        except (TypeError, ValueError):
            return None
    return None


class MetricsLog:
    """metrics.csv (+ TensorBoard) of one run directory; see the module docstring."""

    def __init__(
        self,
        out_dir: str | Path,
        resume_step: int | None = None,
        tensorboard: bool = True,
        fsync: bool = False,
    ) -> None:
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.path = self.out / CSV_NAME
        self.fsync = fsync
        self.repair = Repair()
        self.header: list[str] = []
        if resume_step is None:
            self.path.unlink(missing_ok=True)  # a fresh run: an old file's rows are not this run's
        else:
            self.repair = repair_metrics(self.path, keep_through_step=resume_step)
            if self.repair.changed:
                logger.warning(
                    "%s: resuming at step %d: dropped %d row(s) past the checkpoint, %d torn, %d duplicated",
                    self.path,
                    resume_step,
                    self.repair.rows_after_step,
                    self.repair.torn_rows,
                    self.repair.duplicate_rows,
                )
            self.header = read_metrics(self.path)[0]
        self.tensorboard = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: TensorBoard readers drop earlier events from this step on: a killed run's past
            # the checkpoint, or (0) an older run's in the same directory
            purge = 0 if resume_step is None else resume_step + 1
            self.tensorboard = SummaryWriter(str(self.out / "tensorboard"), purge_step=purge)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """One row, written whole and flushed; every numeric metric also to TensorBoard at `step`."""
        row = {STEP_KEY: float(step), **metrics}
        new_keys = [k for k in row if k not in self.header]
        if new_keys:
            # a metric first seen now (or the first row): the header grows; earlier rows get empty cells
            _, rows, _ = read_metrics(self.path)
            self.header = self.header + sorted(new_keys) if self.header else sorted(row)
            _write_atomic(self.path, self.header, rows)
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([_cell(row.get(k, "")) for k in self.header])
        line = buf.getvalue().encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, line)
            while written < len(line):  # a short write (rare, on a full disk or a signal): finish the row
                written += os.write(fd, line[written:])
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if self.tensorboard is not None:
            for key, value in metrics.items():
                x = _scalar(value)
                if x is not None:
                    self.tensorboard.add_scalar(key, x, step)
            self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None


def _cell(value: Any) -> Any:
    x = _scalar(value)
    return x if x is not None else value


def step_line(step: int, m: dict[str, float]) -> str:
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
