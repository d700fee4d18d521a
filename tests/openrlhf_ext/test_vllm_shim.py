"""The vLLM stand-in: exactly the names OpenRLHF imports, OpenRLHF's modules import with it, nothing more."""

import subprocess
import sys
import textwrap


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )


def test_openrlhf_modules_that_import_vllm_load_with_the_stand_in():
    proc = run("""
        from openrlhf_ext import cpu_compat, vllm_shim
        assert vllm_shim.install()
        cpu_compat.install()  # flash-attn's padding helpers, which OpenRLHF's models import
        import openrlhf.trainer.ray.vllm_engine, openrlhf.trainer.ppo_utils.samples_generator
        import openrlhf.cli.train_ppo_ray, openrlhf.utils.distributed_util
        import vllm
        assert vllm.__version__ == vllm_shim.SHIM_VERSION
        params = vllm.SamplingParams(temperature=0.6, top_p=0.95, top_k=20, max_tokens=8, logprobs=1)
        assert params.top_k == 20
        try:
            vllm.SamplingParams(beam_width=2)
        except TypeError as e:
            assert "beam_width" in str(e)
        else:
            raise AssertionError("an unknown field was accepted")
        try:
            vllm.AsyncLLMEngine.from_engine_args(None)
        except RuntimeError as e:
            assert "--rollout.backend vllm" in str(e)
        else:
            raise AssertionError("the stand-in pretended to be an engine")
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_an_imported_vllm_is_never_replaced():
    proc = run("""
        import sys, types
        sys.modules["vllm"] = types.ModuleType("vllm")  # stands for a real vLLM already imported
        from openrlhf_ext import vllm_shim
        assert vllm_shim.install() is False and not vllm_shim.is_installed()
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
