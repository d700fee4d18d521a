"""Bucketed weight sync over gloo: SGLang's flattened_bucket layout, several tensors per call against our
server (real HTTP, a real gloo group), the per-tensor fallback; colocated update_weights_from_tensor."""

import asyncio
import socket
import threading

import pytest
import torch

from latr_sglang.engines.sglang_http import SGLangHTTPEngine
from latr_sglang.engines.weight_sync import (
    WeightSyncGroup,
    flatten_bucket,
    plan_buckets,
    push_weights,
    receive_flattened_bucket,
    unflatten_bucket,
)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _named(seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        ("a", torch.randn(3, 5, generator=g)),
        ("b", torch.randn(7, generator=g)),
        ("c", torch.randn(2, 2, 2, generator=g).to(torch.bfloat16)),
        ("d", torch.randn(40, generator=g)),
    ]


def test_buckets_respect_the_size_and_one_dtype_each():
    named = _named()
    buckets = plan_buckets(named, bucket_bytes=80)
    assert [[n for n, _ in b] for b in buckets] == [
        ["a"],
        ["b"],
        ["c"],
        ["d"],
    ]  # 60 + 28 > 80; c: a new dtype
    assert [[n for n, _ in b] for b in plan_buckets(named, 10**6)] == [["a", "b"], ["c"], ["d"]]
    with pytest.raises(ValueError, match="bucket_bytes=0"):
        plan_buckets(named, 0)


def test_flattened_layout_is_sglangs_flattened_tensor_bucket():
    from sglang.srt.weight_sync.tensor_bucket import FlattenedTensorBucket

    bucket = [("a", torch.randn(3, 5)), ("b", torch.randn(7)), ("c", torch.randn(2, 3))]
    flat = flatten_bucket(bucket)
    theirs = FlattenedTensorBucket(named_tensors=bucket)
    assert torch.equal(flat, theirs.get_flattened_tensor())
    names, dtypes, shapes = ["a", "b", "c"], ["float32"] * 3, [[3, 5], [7], [2, 3]]
    received = FlattenedTensorBucket.empty(names, dtypes, shapes, "cpu")
    received.get_flattened_tensor().copy_(flat)
    for (n1, t1), (n2, t2) in zip(
        received.reconstruct_tensors(), unflatten_bucket(flat, names, dtypes, shapes)
    ):
        assert n1 == n2 and torch.equal(t1, t2)
    with pytest.raises(ValueError, match="announce"):
        unflatten_bucket(flat[:-4], names, dtypes, shapes)


class FlattenedReceiver:
    """The receiving half of load_format='flattened_bucket' as SGLang's scheduler runs it (one broadcast per
    call into a uint8 buffer, then views), over its own gloo rank; what it received is kept."""

    def __init__(self, port: int) -> None:
        self.group: WeightSyncGroup | None = None
        self.received: dict[str, torch.Tensor] = {}
        self.calls = 0
        self._thread = threading.Thread(target=self._join, args=(port,))
        self._thread.start()

    def _join(self, port: int) -> None:
        self.group = WeightSyncGroup("127.0.0.1", port, 1, 2, "gloo")

    async def update_weights_from_distributed(
        self, names, dtypes, shapes, group_name, flush_cache, load_format
    ):
        assert load_format == "flattened_bucket"
        self.calls += 1
        dtypes = [str(d).removeprefix("torch.") for d in dtypes]
        got = await asyncio.to_thread(receive_flattened_bucket, self.group, names, dtypes, shapes)
        self.received.update({n: t.clone() for n, t in got})


def test_flattened_push_sends_one_broadcast_per_bucket():
    port = _port()
    receiver = FlattenedReceiver(port)
    trainer = WeightSyncGroup("127.0.0.1", port, 0, 2, "gloo")
    receiver._thread.join()
    named = _named(1)
    calls = asyncio.run(push_weights(trainer, receiver, named, mode="flattened", bucket_mb=1.0))
    assert calls == receiver.calls == 3  # float32 a+b, bfloat16 c, float32 d
    for name, tensor in named:
        assert torch.equal(receiver.received[name], tensor)


@pytest.fixture(scope="module")
def weights_server(tiny_engine):
    from latr_sglang.server import ServerThread

    with ServerThread(tiny_engine, enable_weight_updates=True) as server:
        yield server


@pytest.mark.parametrize("mode", ["multi", "per_tensor"])
def test_push_into_our_server_updates_its_weights(weights_server, tiny_engine, mode):
    """Against `latr-sglang serve`: several names per /update_weights_from_distributed call (or one each)."""
    params = {k: v.detach().clone() for k, v in tiny_engine.hf_model.state_dict().items()}
    new = [(k, v + 0.01 * (i + 1)) for i, (k, v) in enumerate(params.items())]
    port = _port()
    client = SGLangHTTPEngine(weights_server.url)

    async def run() -> int:
        _, trainer = await asyncio.gather(
            client.init_weights_update_group("127.0.0.1", port, 1, 2, f"g-{mode}", backend="gloo"),
            asyncio.to_thread(WeightSyncGroup, "127.0.0.1", port, 0, 2, "gloo", f"g-{mode}", timeout_s=30),
        )
        calls = await push_weights(trainer, client, new, mode=mode, bucket_mb=0.05, group_name=f"g-{mode}")
        await client.close()
        return calls

    try:
        calls = asyncio.run(run())
        assert calls == (len(new) if mode == "per_tensor" else len(plan_buckets(new, int(0.05 * 2**20))))
        assert mode == "per_tensor" or calls < len(new)
        state = tiny_engine.hf_model.state_dict()
        for name, tensor in new:
            assert torch.equal(state[name], tensor), name
    finally:
        tiny_engine.update_weights_sync(params)


def test_colocated_update_weights_from_tensor(weights_server, tiny_engine):
    params = {k: v.detach().clone() for k, v in tiny_engine.hf_model.state_dict().items()}
    name = "model.norm.weight"
    client = SGLangHTTPEngine(weights_server.url)

    async def run() -> None:
        await client.update_weights_from_tensor({name: params[name] * 2})
        with pytest.raises(ValueError, match="serializer="):
            await client.update_weights_from_tensor({name: params[name]}, serializer="pickle")
        await client.close()

    try:
        asyncio.run(run())
        assert torch.equal(tiny_engine.hf_model.state_dict()[name], params[name] * 2)
    finally:
        tiny_engine.update_weights_sync(params)
