"""Validates /generate payloads with SGLang's own GenerateReqInput and SamplingParams (run as a subprocess).

Reads a JSON list of payloads on stdin; prints a JSON list of {"ok": bool, "error": str}.

It runs in its own process, since SGLang's io_struct needs torchvision's placeholder (no_torchvision.py).
"""

import json
import sys

import no_torchvision

no_torchvision.install()

from sglang.srt.managers.io_struct import GenerateReqInput  # noqa: E402
from sglang.srt.sampling.sampling_params import SamplingParams  # noqa: E402

results = []
for payload in json.load(sys.stdin):
    try:
        req = GenerateReqInput(**payload)
        req.normalize_batch_and_arguments()
        params = req.sampling_params if isinstance(req.sampling_params, list) else [req.sampling_params]
        for p in params:
            sp = SamplingParams(**p)
            sp.verify(10**6)
        results.append({"ok": True, "error": ""})
    except Exception as e:
        results.append({"ok": False, "error": f"{type(e).__name__}: {e}"})
print(json.dumps(results))
