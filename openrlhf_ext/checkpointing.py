"""Trainer checkpoints that a crash cannot leave half-written and that are verified before use.

    store = CheckpointStore(out_dir / "checkpoints")
    store.save(step, {"trainer_state.pt": state}, config=run_config)   # torch.save'd, or bytes, or a writer
    ckpt = store.load_latest(config=run_config, force=False)          # None when there is none
    state = ckpt.torch_load("trainer_state.pt")

A checkpoint is written into a temporary folder, every file fsynced, with manifest.json recording each file's
size and SHA-256, the step and the run's config; the folder is then renamed to step_N, and `latest` is
replaced through a temporary file and a rename. A kill at any moment leaves either the previous checkpoint or
the new one, never a mix. On load every file is checked against the manifest; a damaged or missing file makes
the loader warn, naming the file, and fall back to the previous intact checkpoint. A resume whose config
differs from the checkpoint's in a field that changes what is trained (seed, lengths, model, ...) is refused
with the differences named, unless forced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LATEST = "latest"
_STEP_DIR = re.compile(r"step_(\d+)")
# Config fields a resume may change (how long, how often, where to log): every other field must match the
# checkpoint's, or the resumed run would silently train something else than the run it continues.
RESUME_MAY_CHANGE = frozenset(
    {
        "steps",
        "save_steps",
        "resume",
        "force_resume",
        "use_wandb",
        "wandb_project",
        "eval_prompts",
        "eval_dataset",
        "eval_n",
        "eval_every",
        "device",
        "output_dir",
    }
)


class CheckpointError(RuntimeError):
    """No usable checkpoint, or a resume refused; the message names the files or fields."""


@dataclass
class Checkpoint:
    path: Path
    step: int
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, Any] | None:
        return self.manifest.get("config")

    def file(self, name: str) -> Path:
        return self.path / name

    def torch_load(self, name: str = "trainer_state.pt", **kwargs: Any) -> Any:
        import torch

        kwargs.setdefault("weights_only", False)  # our own state: optimizer, RNG states, python objects
        return torch.load(self.path / name, **kwargs)


Writer = Callable[[Path], None]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _jsonable(value: Any) -> Any:
    """A config as plain JSON (tuples as lists, dataclasses as dicts), for storing and comparing."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value, default=str))


def config_differences(
    saved: dict[str, Any] | None,
    current: dict[str, Any] | None,
    may_change: Iterable[str] = RESUME_MAY_CHANGE,
) -> list[str]:
    """'field: checkpoint X, now Y' for every field that differs, nested sections as 'section.field'."""
    if saved is None or current is None:
        return []
    allowed = set(may_change)
    out: list[str] = []

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if key in allowed:
                    continue
                walk(a.get(key, "<absent>"), b.get(key, "<absent>"), f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix[:-1]}: checkpoint {a!r}, now {b!r}")

    walk(_jsonable(saved), _jsonable(current), "")
    return out


class CheckpointStore:
    """step_N folders under `root`, each with a manifest, and `latest` naming the newest."""

    def __init__(self, root: str | Path, keep_last: int | None = None, verify: str = "sha256") -> None:
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last={keep_last}: must be >= 1 (or None: keep all)")
        if verify not in ("sha256", "size"):
            raise ValueError(f"verify={verify!r}: expected 'sha256' or 'size'")
        self.root = Path(root)
        self.keep_last = keep_last
        self.verify_mode = verify

    # ---- saving ------------------------------------------------------------------------------------------
    def save(
        self,
        step: int,
        files: dict[str, Any] | Writer,
        config: Any = None,
        extra: dict[str, Any] | None = None,
    ) -> Checkpoint:
        """Writes checkpoint `step` atomically. `files`: {name: object} (bytes/str written as they are, any
        other object torch.save'd), or a function that writes its files into the folder it is given."""
        if not isinstance(step, int) or step < 0:
            raise ValueError(f"step={step!r}: must be an integer >= 0")
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_leftovers()
        tmp = self.root / f".tmp-step_{step}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            if callable(files):
                files(tmp)
            else:
                for name, obj in files.items():
                    target = tmp / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if isinstance(obj, bytes | bytearray):
                        target.write_bytes(obj)
                    elif isinstance(obj, str):
                        target.write_text(obj)
                    else:
                        import torch

                        torch.save(obj, target)
            records = {}
            for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
                _fsync_file(path)
                records[path.relative_to(tmp).as_posix()] = {
                    "size": path.stat().st_size,
                    "sha256": file_digest(path),
                }
            if not records:
                raise ValueError("a checkpoint needs at least one file")
            manifest = {
                "step": step,
                "files": records,
                "config": _jsonable(config) if config is not None else None,
                "saved_at": time.time(),
                **({"extra": _jsonable(extra)} if extra else {}),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
            _fsync_file(tmp / MANIFEST)
            _fsync_dir(tmp)
            final = self.root / f"step_{step}"
            old = None
            if final.exists():  # the same step saved again: swap, then drop the old one
                old = self.root / f".old-step_{step}-{os.getpid()}"
                shutil.rmtree(old, ignore_errors=True)
                final.rename(old)
            tmp.rename(final)
            _fsync_dir(self.root)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._write_latest(final.name)
        self._prune()
        return Checkpoint(final, step, manifest)

    def _write_latest(self, name: str) -> None:
        tmp = self.root / f".{LATEST}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(name + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.root / LATEST)
        _fsync_dir(self.root)

    def _remove_leftovers(self) -> None:
        """Temporary folders and files a killed save left behind."""
        for path in self.root.glob(".tmp-step_*"):
            shutil.rmtree(path, ignore_errors=True)
        for path in self.root.glob(".old-step_*"):
            shutil.rmtree(path, ignore_errors=True)
        for path in self.root.glob(f".{LATEST}.tmp-*"):
            path.unlink(missing_ok=True)

    def _prune(self) -> None:
        if self.keep_last is None:
            return
        steps = self.steps()
        for step in steps[: -self.keep_last]:
            shutil.rmtree(self.root / f"step_{step}", ignore_errors=True)

    # ---- loading -----------------------------------------------------------------------------------------
    def steps(self) -> list[int]:
        """The steps of the step_N folders present, ascending (intact or not)."""
        if not self.root.is_dir():
            return []
        out = []
        for path in self.root.iterdir():
            m = _STEP_DIR.fullmatch(path.name)
            if m and path.is_dir():
                out.append(int(m.group(1)))
        return sorted(out)

    def latest_name(self) -> str | None:
        try:
            name = (self.root / LATEST).read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None
        return name if _STEP_DIR.fullmatch(name) else None

    def check(self, path: Path) -> str | None:
        """Why the checkpoint folder is not intact (naming the file), or None when it is."""
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            return f"{manifest_path} is missing"
        try:
            manifest = json.loads(manifest_path.read_text())
            records = manifest["files"]
            int(manifest["step"])
        except (OSError, ValueError, KeyError, TypeError):
            return f"{manifest_path} is unreadable"
        for name, record in records.items():
            file = path / name
            if not file.is_file():
                return f"{file} is missing"
            size = file.stat().st_size
            if size != record.get("size"):
                return f"{file} has {size} bytes, the manifest records {record.get('size')}"
            if self.verify_mode == "sha256" and file_digest(file) != record.get("sha256"):
                return f"{file} does not match its SHA-256 in the manifest"
        return None

    def load_latest(
        self,
        config: Any = None,
        force: bool = False,
        may_change: Iterable[str] = RESUME_MAY_CHANGE,
        force_hint: str = "force=True",
    ) -> Checkpoint | None:
        """The newest intact checkpoint (`latest` first, then the others from the newest step down), or None
        when there is none at all. A damaged one is skipped with a warning naming the file; when every one
        is damaged, CheckpointError. With `config`, a checkpoint written under a different config (fields
        outside `may_change`) is refused with CheckpointError unless `force`."""
        steps = self.steps()
        latest = self.latest_name()
        if not steps:
            if latest is not None:
                raise CheckpointError(f"{self.root / LATEST} names {latest}, which does not exist")
            return None
        order = sorted(steps, reverse=True)
        if latest is not None and int(latest.split("_")[1]) in order:
            order.remove(int(latest.split("_")[1]))
            order.insert(0, int(latest.split("_")[1]))
        elif latest is not None:
            self._warn(
                f"{self.root / LATEST} names {latest}, which does not exist; using the newest intact one"
            )
        elif (self.root / LATEST).exists():
            self._warn(f"{self.root / LATEST} is damaged; using the newest intact checkpoint")
        problems = []
        for i, step in enumerate(order):
            path = self.root / f"step_{step}"
            why = self.check(path)
            if why is not None:
                problems.append(why)
                fallback = f"trying step_{order[i + 1]}" if i + 1 < len(order) else "no other checkpoint left"
                self._warn(f"checkpoint step_{step} is damaged: {why}; {fallback}")
                continue
            manifest = json.loads((path / MANIFEST).read_text())
            ckpt = Checkpoint(path, int(manifest["step"]), manifest)
            if config is not None:
                diffs = config_differences(ckpt.config, _jsonable(config), may_change)
                if diffs and not force:
                    raise CheckpointError(
                        f"resume refused: {path} was written with a different config ({'; '.join(diffs)}); "
                        f"start a new output directory, or resume anyway with {force_hint}"
                    )
                if diffs:
                    self._warn(f"resuming {path} under a different config ({'; '.join(diffs)}), as forced")
            if problems:
                self._warn(f"resuming from {path} (step {ckpt.step}) instead")
            return ckpt
        raise CheckpointError(f"no intact checkpoint in {self.root}: " + "; ".join(problems))

    @staticmethod
    def _warn(message: str) -> None:
        logger.warning(message)  # without logging configured, Python prints it to stderr
