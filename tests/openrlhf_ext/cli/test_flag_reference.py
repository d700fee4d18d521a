"""docs/FLAGS.md is generated from the config dataclasses and must match them."""

import dataclasses

from latr_sglang.config import LATRConfig
from openrlhf_ext.cli.flag_reference import OUTPUT, main, render
from openrlhf_ext.cli.train_ppo_ray import build_parser
from openrlhf_ext.options import EXTENSION_GROUPS


def test_committed_reference_is_current():
    assert main(["--check"]) == 0, "run: python -m openrlhf_ext.cli.flag_reference"
    assert OUTPUT.read_text() == render()


def test_every_documented_flag_exists_and_every_extension_flag_is_documented():
    text = render()
    parser_flags = set(build_parser()._option_string_actions)
    for prefix, cls in EXTENSION_GROUPS.items():
        for f in dataclasses.fields(cls):
            flag = f"--{prefix}{f.name}"
            assert f"`{flag}`" in text and flag in parser_flags, flag
    for f in dataclasses.fields(LATRConfig):
        assert f"`--latr.{f.name}`" in text and f"--latr.{f.name}" in parser_flags
