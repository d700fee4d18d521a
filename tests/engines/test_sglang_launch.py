"""Launching an SGLang-API server as a child process: SGLang's own parser accepts our command, and a server
that dies is reported with its log. (Starting, serving and stopping: tests/test_server.py,
test_cli_serve_subprocess.)"""

import argparse
import sys

import pytest

from latr_sglang.engines.sglang_launch import ServerProcess, sglang_server_command


def test_command_parses_with_sglangs_own_server_args():
    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    cmd = sglang_server_command("/m", 1234, 2, 0.7, 3, True, "--dtype bfloat16 --chunked-prefill-size 4096")
    assert cmd[1:3] == ["-m", "sglang.launch_server"]
    args = parser.parse_args(cmd[3:])
    assert (args.model_path, args.port, args.tp_size, args.random_seed) == ("/m", 1234, 2, 3)
    assert args.mem_fraction_static == 0.7 and args.enable_memory_saver and args.host == "127.0.0.1"
    assert args.dtype == "bfloat16" and args.chunked_prefill_size == 4096


def test_full_determinism_adds_sglangs_deterministic_inference_flag():
    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    plain = parser.parse_args(sglang_server_command("/m", 1)[3:])
    det = sglang_server_command("/m", 1, deterministic=True)
    assert "--enable-deterministic-inference" in det
    assert parser.parse_args(det[3:]).enable_deterministic_inference
    assert not plain.enable_deterministic_inference


def test_a_server_that_dies_is_reported_with_its_log(tmp_path):
    cmd = [sys.executable, "-c", "import sys; print('bad flag --nope'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match=r"(?s)exited with code 3.*bad flag --nope"):
        ServerProcess(cmd, "http://127.0.0.1:9", tmp_path / "server.log", timeout_s=30)
