"""What the data preparation scripts share: their one-line error, and the output folder they write into."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad input, named: the script prints it as one line and exits 2."""


def output_dir(value: str) -> Path:
    out = Path(value)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: is a file, expected a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"--out {out}: cannot create the folder ({e.strerror})") from None
    return out
