"""Start an SGLang server as a child process and wait until it serves (used by the Ray engine actor).

The command is SGLang's own `python -m sglang.launch_server`; any server speaking SGLang's HTTP API can
stand in (the tests launch `latr-sglang serve`, which needs no GPU).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

# LATR's fork rule reads raw (pre-temperature) top log-probs; SGLang returns those only when told to.
SGLANG_SERVER_ENV = {"SGLANG_RETURN_ORIGINAL_LOGPROB": "1"}


def sglang_server_command(
    model_path: str,
    port: int,
    tensor_parallel_size: int = 1,
    mem_fraction_static: float | None = None,
    seed: int = 0,
    enable_memory_saver: bool = False,
    extra_args: str = "",
    *,
    deterministic: bool = False,
) -> list[str]:
    """SGLang's launch_server command line (flag names checked against the pinned SGLang's ServerArgs).

    deterministic (--train.full_determinism_enable): --enable-deterministic-inference, SGLang's
    batch-invariant kernels and per-request seeded sampling, so that a request's output does not depend on
    what else is in the batch: same weights, prompts and seeds give the same rollouts, token for token.
    """
    cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", model_path]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--tp-size", str(tensor_parallel_size)]
    cmd += ["--random-seed", str(seed)]
    if mem_fraction_static is not None:
        cmd += ["--mem-fraction-static", str(mem_fraction_static)]
    if enable_memory_saver:  # lets /release_memory_occupation free weights and KV cache (colocation)
        cmd += ["--enable-memory-saver"]
    if deterministic:
        cmd += ["--enable-deterministic-inference"]
    return cmd + shlex.split(extra_args)


class ServerProcess:
    """A launched server: `url`, `stop()`. Its output goes to `log_path`."""

    def __init__(
        self,
        cmd: list[str],
        url: str,
        log_path: str | Path,
        timeout_s: float = 900.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.cmd, self.url, self.log_path = cmd, url.rstrip("/"), Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        try:
            self._wait_healthy(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with code {self.process.returncode} before serving: "
                    f"{shlex.join(self.cmd)}\n"
                    f"--- last lines of {self.log_path} ---\n{self._log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        raise TimeoutError(
            f"server not healthy at {self.url} after {timeout_s:.0f} s: {shlex.join(self.cmd)}\n"
            f"--- last lines of {self.log_path} ---\n{self._log_tail()}"
        )

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
