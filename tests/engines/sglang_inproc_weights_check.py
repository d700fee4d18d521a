"""SGLangInProcessEngine.update_weights with SGLang's own UpdateWeightsFromTensorReqInput and
MultiprocessingSerializer, into the stand-in engine (run as a subprocess: io_struct needs the torchvision
placeholder, no_torchvision.py).

argv: a model folder. Prints JSON {"before": ids, "after": ids, "loaded": [[names]], "payloads": n}.
"""

import asyncio
import json
import sys
from pathlib import Path

import no_torchvision

no_torchvision.install()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: server_helpers

import torch  # noqa: E402
from server_helpers import TorchBackedSGLangEngine  # noqa: E402

from latr_sglang.engines.base import GenerateRequest, SamplingParams  # noqa: E402
from latr_sglang.engines.sglang_inproc import SGLangInProcessEngine  # noqa: E402
from latr_sglang.engines.torch_engine import TorchEngine  # noqa: E402

engine = TorchEngine.from_pretrained(sys.argv[1])
stand_in = TorchBackedSGLangEngine(engine)
stand_in.tokenizer_manager.server_args.tp_size = 2  # one payload per tensor-parallel rank
adapter = SGLangInProcessEngine(stand_in)
request = GenerateRequest((1, 2, 3), SamplingParams(max_new_tokens=6, temperature=0.0, ignore_eos=True))
name = "lm_head.weight"
weight = torch.zeros_like(engine.hf_model.state_dict()[name])  # every logit 0: greedy picks token 0


async def main():
    before = (await adapter.generate([request]))[0]
    await adapter.update_weights({name: weight})
    after = (await adapter.generate([request]))[0]
    return before, after


before, after = asyncio.run(main())
manager = stand_in.tokenizer_manager
print(json.dumps({"before": before.output_ids, "after": after.output_ids, "loaded": manager.loaded}))
engine.close_sync()
