"""scripts/gpu-check.sh's CPU dry path (DRY_RUN=1): every step runs, on a tiny model, and the table it writes
has a value for each figure that does not need the SGLang runtime."""

import json
import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu-check.sh"


@pytest.mark.slow
def test_the_dry_run_fills_the_table(tmp_path):
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(tmp_path)}
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (tmp_path / "gpu-check.md").read_text()
    assert "failed:" not in table, table
    cells = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in table.splitlines()
        if line.startswith("| ")
    ]
    rows = {name: value for name, value in cells if set(name) != {"-"} and name != "figure"}
    needs_sglang = [name for name in rows if name.startswith("SGLang server")]
    assert len(needs_sglang) == 3 and all(rows[name] == "-" for name in needs_sglang)
    for name, value in rows.items():
        if name not in needs_sglang:
            assert float(value) > 0, (name, value)
    parts = json.loads((tmp_path / "gpu-check.json").read_text())["parts"]
    assert parts["http"]["latr_config"]["tree_part_interval"] > 0  # the HTTP run streamed its parts
