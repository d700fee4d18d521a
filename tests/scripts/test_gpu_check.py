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


@pytest.mark.parametrize("budget", ["1", "soon"])
def test_the_time_budget_bounds_the_run_and_the_table_says_what_did_not_run(tmp_path, budget):
    """BUDGET_S bounds the whole run (a device machine lends minutes): with 1 s no step starts, and the
    table names them; a budget that is not a number of seconds is refused."""
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(tmp_path), "BUDGET_S": budget}
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    if budget == "soon":
        assert proc.returncode == 2 and "BUDGET_S=soon: expected seconds" in proc.stderr
        return
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (tmp_path / "gpu-check.md").read_text()
    assert "not run, out of time: engine, http, reference, rollout, shared_prefix (BUDGET_S)" in table, table
    assert not list(tmp_path.glob("*.log"))  # nothing was started
