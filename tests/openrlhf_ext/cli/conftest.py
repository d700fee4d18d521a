"""latr-train's tests run in a fresh folder: local mode's default --ckpt.output_dir (outputs/local) is
relative, and --dry-run refuses one that holds an earlier run, as the run would (a demo run in the checkout
must not fail these tests)."""

import pytest


@pytest.fixture(autouse=True)
def _in_a_fresh_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
