"""Command-line values checked where they are parsed, for `latr-sglang` and the benchmarks alike.

Bad input ends in one line naming the flag and the value (exit 2), before a model loads: argparse types for
numbers, and checks of the files a command reads or writes.
"""

from __future__ import annotations

import argparse
import math
import os
import stat
import sys
import tempfile
from pathlib import Path

MAX_SEED = 2**63 - 1  # torch and numpy take seeds up to 2**64 - 1; a group's seed adds an offset to it


class UsageError(ValueError):
    """Bad input found after parsing (a file, a server); printed as one line, exit status 2."""


class OneLineErrorParser(argparse.ArgumentParser):
    """Errors in one line, with where to look: a usage of 40 lines of LATR flags hides the message."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


def seed_int(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{value}: a seed is an integer in 0..2**63-1")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def finite_float(text: str) -> float:
    # inf and nan parse as floats, then fail far from the flag (an OverflowError in int(), a NaN comparison)
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number >= 0")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number > 0")
    return value


def unit_float(text: str) -> float:
    value = finite_float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number in [0, 1]")
    return value


def readable_file(flag: str, path: str) -> Path:
    """`path` as a Path if it is a readable file, else a UsageError naming the flag and the path."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise UsageError(f"{flag} {path}: is a directory, expected a file")
    if not file.is_file():
        raise UsageError(f"{flag} {path}: no such file")
    if not os.access(file, os.R_OK):
        raise UsageError(f"{flag} {path}: not readable")
    return file


def writable_output(flag: str, path: str, make_parents: bool = False) -> None:
    """Refuses an output path the run could not write at its end, before anything is loaded. With
    make_parents (the writer creates missing folders) the nearest existing folder must take new entries."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise UsageError(f"{flag} {path}: is a directory, expected a file path")
    try:
        if file.exists():
            mode = file.stat().st_mode
            if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):  # opening a pipe waits for a reader
                raise UsageError(f"{flag} {path}: a pipe or socket, expected a file path")
            with open(file, "a"):  # append mode: the old contents stay until the run writes
                pass
            return
        parent = file.parent
        while make_parents and not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.exists():
            raise UsageError(f"{flag} {path}: folder {str(parent)!r} does not exist")
        if not parent.is_dir():
            raise UsageError(f"{flag} {path}: {str(parent)!r} is not a folder")
        # a real file, not os.access: root passes access() on read-only mounts and /proc alike
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".latr-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UsageError(f"{flag} {path}: not writable ({e.strerror or e})") from None


def same_file(a: str, b: str) -> bool:
    """Whether two paths name one file (the same path, or links to one file); False if either is missing."""
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve() or os.path.samefile(a, b)
    except OSError:
        return False


def model_argument(text: str) -> str:
    """A benchmark's --model: 'tiny' (a random model built on the fly), the embedded default's names, or a
    local Hugging Face folder that holds a config, weights and a tokenizer."""
    from latr_sglang.models import DEFAULT_MODEL_ALIASES, check_model_dir

    if text == "tiny" or text in DEFAULT_MODEL_ALIASES:
        return text
    folder = Path(text).expanduser()
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text!r}: not 'tiny', 'smollm2' or a local model folder (no such folder; nothing is downloaded)"
        )
    try:
        check_model_dir(folder)
    except (OSError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def device_argument(text: str) -> str:
    """cpu, cuda or cuda:N, checked here rather than by torch, so that a typo fails before a model loads."""
    import re

    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r}: expected cpu, cuda or cuda:N")
    if text.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: no CUDA device is available here")
        index = int(text.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return text


def bench_parser(description: str | None) -> OneLineErrorParser:
    """A benchmark's parser: its module docstring as the description, errors in one line, and the command as
    it was typed (`python -m latr_sglang.bench.engine`, not `engine.py`) in its usage line."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    prog = f"python -m {spec.name}" if spec is not None and spec.name.startswith("latr_sglang.") else None
    return OneLineErrorParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def check_output_flags(parser: argparse.ArgumentParser, **paths: str | None) -> None:
    """Each given output path (flag name without dashes -> path) must be writable, before anything runs: a
    benchmark that fails to write its figures at the end has wasted its whole run."""
    for name, path in paths.items():
        if path:
            try:
                writable_output("--" + name.replace("_", "-"), path)
            except UsageError as e:
                parser.error(str(e))
