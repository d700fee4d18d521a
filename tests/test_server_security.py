"""`latr-sglang serve` under hostile callers: the API key, the control-endpoint gate, weight-update groups
that must be refused, set up off the request threads and time out, and weight payloads never written."""

import base64
import concurrent.futures
import json
import socket
import time

import httpx
import pytest
import requests
import torch
from server_helpers import free_port, join_weight_group, weight_group_body

from latr_sglang.engines.wire import encode_named_tensors
from latr_sglang.server import ServerThread, create_app

KEY = "s3cret-key"
CONTROL = [
    ("POST", "/update_weights_from_disk", {"model_path": "/"}),
    ("POST", "/update_weights_from_tensor", {"serialized_named_tensors": ["AA=="]}),
    (
        "POST",
        "/init_weights_update_group",
        {"master_address": "127.0.0.1", "master_port": 1, "rank_offset": 1, "world_size": 2},
    ),
    ("POST", "/update_weights_from_distributed", {"names": ["x"], "dtypes": ["float32"], "shapes": [[1]]}),
    ("POST", "/destroy_weights_update_group", {}),
    ("POST", "/release_memory_occupation", {}),
    ("GET", "/release_memory_occupation", None),
    ("POST", "/resume_memory_occupation", {}),
]
EVERY_PATH = [
    ("GET", "/get_model_info"),
    ("GET", "/get_server_info"),
    ("GET", "/health_generate"),
    ("GET", "/metrics"),
    ("POST", "/generate"),
    ("POST", "/tokenize"),
    ("POST", "/detokenize"),
    ("POST", "/abort_request"),
    ("GET", "/v1/models"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/flush_cache"),
    ("GET", "/nope"),
    ("POST", "/update_weights_from_disk"),
]


def snapshot(engine):
    return {k: v.detach().clone() for k, v in engine.hf_model.state_dict().items()}


def assert_unchanged(engine, before):
    after = engine.hf_model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items()), "the served weights changed"


@pytest.fixture(scope="module")
def keyed_server(tiny_engine):
    with ServerThread(tiny_engine, api_key=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def control_server(tiny_engine):
    with ServerThread(tiny_engine, enable_weight_updates=True, weight_update_timeout_s=2.0) as server:
        yield server


@pytest.mark.parametrize(("method", "path"), EVERY_PATH)
@pytest.mark.parametrize(
    "header", [None, "Bearer wrong", f"Basic {KEY}", f"Bearer {KEY}x", f"Bearer{KEY}", "Bearer "]
)
def test_api_key_guards_every_path_but_health(keyed_server, method, path, header):
    headers = {"Authorization": header} if header else {}
    r = requests.request(method, keyed_server.url + path, headers=headers, json={}, timeout=10)
    assert r.status_code == 401, (path, r.text)
    assert r.json()["error"]["code"] == 401 and "API key" in r.json()["error"]["message"]
    assert r.headers["WWW-Authenticate"] == "Bearer"


def test_api_key_lets_the_right_key_through_and_health_stays_open(keyed_server):
    ok = {"Authorization": f"Bearer {KEY}"}
    assert requests.get(keyed_server.url + "/health", timeout=10).status_code == 200
    assert requests.get(keyed_server.url + "/get_model_info", headers=ok, timeout=10).status_code == 200
    r = requests.post(
        keyed_server.url + "/generate",
        headers={"authorization": f"bearer {KEY}"},
        json={"input_ids": [1, 2], "sampling_params": {"max_new_tokens": 2}},
        timeout=30,
    )
    assert r.status_code == 200 and len(r.json()["output_ids"]) <= 2


@pytest.mark.parametrize(("method", "path", "body"), CONTROL)
def test_control_endpoints_are_refused_without_key_or_switch(tiny_server, tiny_engine, method, path, body):
    before = snapshot(tiny_engine)
    r = requests.request(method, tiny_server.url + path, json=body, timeout=10)
    assert r.status_code == 403, r.text
    assert "--api-key" in r.json()["message"] and r.json()["success"] is False
    assert_unchanged(tiny_engine, before)
    one = {"input_ids": [1], "sampling_params": {"max_new_tokens": 1}}
    assert requests.post(tiny_server.url + "/generate", json=one, timeout=30).status_code == 200


def test_control_switch_admits_only_loopback_callers_and_the_key_admits_anyone(tiny_engine):
    """The caller's address as the ASGI server reports it (httpx's in-process transport sets it)."""
    import asyncio

    async def call(app, client_host, headers=None):
        transport = httpx.ASGITransport(app=app, client=(client_host, 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/resume_memory_occupation", json={}, headers=headers or {})

    switch = create_app(tiny_engine, enable_weight_updates=True)
    assert asyncio.run(call(switch, "127.0.0.1")).status_code == 200
    assert asyncio.run(call(switch, "::1")).status_code == 200
    remote = asyncio.run(call(switch, "10.1.2.3"))
    assert remote.status_code == 403 and "10.1.2.3" in remote.json()["message"]
    keyed = create_app(tiny_engine, api_key=KEY)
    assert asyncio.run(call(keyed, "10.1.2.3")).status_code == 401
    assert asyncio.run(call(keyed, "10.1.2.3", {"Authorization": f"Bearer {KEY}"})).status_code == 200


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"rank_offset": 0}, "rank_offset"),
        ({"rank_offset": -1}, "rank_offset"),
        ({"world_size": 1, "rank_offset": 0}, "rank_offset"),
        ({"world_size": 1}, "world_size"),
        ({"rank_offset": 2, "world_size": 2}, "rank_offset"),
        ({"world_size": 10**9}, "world_size"),
        ({"world_size": True}, "world_size"),
        ({"master_port": 0}, "master_port"),
        ({"master_port": 70000}, "master_port"),
        ({"master_port": "29500"}, "master_port"),
        ({"master_port": 29500.5}, "master_port"),
        ({"master_address": "8.8.8.8"}, "master_address"),
        ({"master_address": "203.0.113.77"}, "master_address"),  # TEST-NET-3: nobody's own address
        ({"master_address": "no-such-host.invalid"}, "master_address"),
        ({"master_address": ""}, "master_address"),
        ({"master_address": 127}, "master_address"),
        ({"group_name": "../../etc"}, "group_name"),
        ({"group_name": "x" * 200}, "group_name"),
        ({"backend": "mpi"}, "backend"),
        ({"extra": 1}, "extra"),
    ],
)
def test_weight_group_set_up_is_validated_before_anything_opens(control_server, change, needle):
    port = free_port()
    body = {**weight_group_body(port, "v"), **change}
    t0 = time.monotonic()
    r = requests.post(control_server.url + "/init_weights_update_group", json=body, timeout=30)
    assert r.status_code == 400 and needle in r.json()["message"], r.text
    assert time.monotonic() - t0 < 1.5  # refused at once, no rendezvous attempted
    with socket.socket() as s:  # the server did not open a listener on the port it was given
        s.bind(("0.0.0.0", port))


def outbound_address() -> str | None:
    """This machine's address on its outbound interface, found as Ray finds its node IP (a UDP socket's
    connect sends nothing), or None where it has only loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("203.0.113.1", 9))  # TEST-NET-3: only the route is looked up
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") else address


def test_a_master_on_another_address_of_this_machine_is_allowed(control_server):
    """OpenRLHF's trainer names Ray's node IP as the group's master, not loopback: on this machine it is as
    trusted as loopback (the server is bound to 127.0.0.1 here, and 8.8.8.8 stays refused, above)."""
    address = outbound_address()
    if address is None:
        pytest.skip("this machine has no address but loopback")
    body = {**weight_group_body(free_port(), "own"), "master_address": address}
    # (a refused server never joins: the group's store gives up after 10 s, failing the test)
    group, joined = join_weight_group(control_server.url, body, timeout=30, timeout_s=10)
    assert joined is not None and joined.json()["success"], joined and joined.text
    del group
    destroy = {"group_name": "own"}
    requests.post(control_server.url + "/destroy_weights_update_group", json=destroy, timeout=10)


def test_weight_group_json_errors_are_400(control_server):
    for raw in (b"{bad", b"[1]", b"", b'{"master_port": 1e400}', b"\xff\xfe"):
        r = requests.post(control_server.url + "/init_weights_update_group", data=raw, timeout=10)
        assert r.status_code == 400 and r.json()["success"] is False, raw


def test_unreachable_masters_neither_hang_the_server_nor_pile_up(control_server):
    """Six set-ups against a master nobody serves: each answers within the 2 s timeout (one waits, the
    others are refused at once), and /flush_cache answers meanwhile."""
    port = free_port()

    def init(i):
        t0 = time.monotonic()
        r = requests.post(
            control_server.url + "/init_weights_update_group",
            json=weight_group_body(port, f"u{i}"),
            timeout=30,
        )
        return r.status_code, r.json()["message"], time.monotonic() - t0

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(init, i) for i in range(6)]
        time.sleep(0.3)
        t0 = time.monotonic()
        assert requests.post(control_server.url + "/flush_cache", timeout=10).status_code == 200
        assert requests.get(control_server.url + "/health", timeout=10).status_code == 200
        assert time.monotonic() - t0 < 1.0
        results = [f.result() for f in futures]
    assert all(status in (400, 409) for status, _, _ in results), results
    assert all(elapsed < 10 for _, _, elapsed in results), results
    assert any("within 2s" in message for _, message, _ in results), results


def test_a_broadcast_that_never_comes_writes_nothing(control_server, tiny_engine):
    """The trainer joins the group but never broadcasts: the receive times out, no tensor is written, the
    group is closed."""
    body = weight_group_body(free_port(), "silent")
    trainer, joined = join_weight_group(control_server.url, body, timeout=30, timeout_s=10)
    assert joined.json()["success"], joined.text
    name, param = next(iter(tiny_engine.hf_model.state_dict().items()))
    before = snapshot(tiny_engine)
    payload = {"names": [name], "dtypes": ["float32"], "shapes": [list(param.shape)], "group_name": "silent"}
    r = requests.post(control_server.url + "/update_weights_from_distributed", json=payload, timeout=30)
    assert r.status_code == 400 and "no weight was written" in r.json()["message"], r.text
    assert_unchanged(tiny_engine, before)
    again = requests.post(control_server.url + "/update_weights_from_distributed", json=payload, timeout=30)
    assert again.status_code == 400 and "init_weights_update_group" in again.json()["message"]
    del trainer


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"names": ["no.such.weight"]}, "no such parameter"),
        ({"shapes": [[1, 2]]}, "shapes[0]"),
        ({"shapes": [[True]]}, "shapes[0]"),
        ({"shapes": [[10**12, 10**12]]}, "shapes[0]"),
        ({"dtypes": ["complex1024"]}, "dtypes[0]"),
        ({"dtypes": ["float32", "float32"]}, "differ in length"),
        ({"names": "x"}, "names"),
        ({"flush_cache": "yes"}, "flush_cache"),
        ({"load_format": "direct"}, "load_format"),
    ],
)
def test_distributed_update_plans_are_checked_against_the_model(control_server, tiny_engine, change, needle):
    name, param = next(iter(tiny_engine.hf_model.state_dict().items()))
    payload = {"names": [name], "dtypes": ["float32"], "shapes": [list(param.shape)], **change}
    group = weight_group_body(free_port())  # SGLang's default group name
    trainer, _ = join_weight_group(control_server.url, group, timeout=30, timeout_s=10)
    try:
        before = snapshot(tiny_engine)
        r = requests.post(control_server.url + "/update_weights_from_distributed", json=payload, timeout=30)
        assert r.status_code == 400 and needle in r.json()["message"], r.text
        assert_unchanged(tiny_engine, before)
    finally:
        requests.post(control_server.url + "/destroy_weights_update_group", json={}, timeout=10)
        del trainer


def test_update_weights_from_tensor_round_trip_and_refusals(control_server, tiny_engine):
    before = snapshot(tiny_engine)
    name = "model.norm.weight"
    url = control_server.url + "/update_weights_from_tensor"
    new = torch.full_like(before[name], 0.5)
    try:
        r = requests.post(
            url, json={"serialized_named_tensors": [encode_named_tensors({name: new})]}, timeout=30
        )
        assert r.status_code == 200 and r.json()["success"], r.text
        assert torch.equal(tiny_engine.hf_model.state_dict()[name], new)
    finally:
        tiny_engine.update_weights_sync(before)
    import pickle

    pickled = base64.b64encode(pickle.dumps({name: new})).decode()
    bad = [
        ({"serialized_named_tensors": ["%%%"]}, "base64"),
        ({"serialized_named_tensors": [pickled]}, "safetensors"),
        (
            {"serialized_named_tensors": [encode_named_tensors({name: new})], "load_format": "direct"},
            "pickled",
        ),
        ({"serialized_named_tensors": [encode_named_tensors({"nope": new})]}, "nope"),
        ({"serialized_named_tensors": [encode_named_tensors({name: torch.ones(3)})]}, "shape"),
        ({"serialized_named_tensors": [encode_named_tensors({name: new.to(torch.int64)})]}, "dtype"),
        ({"serialized_named_tensors": []}, "serialized_named_tensors"),
        ({"serialized_named_tensors": [7]}, "serialized_named_tensors[0]"),
        ({"serialized_named_tensors": [encode_named_tensors({name: new})], "flush_cache": 1}, "flush_cache"),
    ]
    for body, needle in bad:
        r = requests.post(url, json=body, timeout=30)
        assert r.status_code == 400 and needle in r.json()["message"], (needle, r.text)
        assert_unchanged(tiny_engine, before)


def test_update_weights_from_disk_refuses_corrupt_and_mismatched_folders(
    control_server, tiny_engine, tmp_path
):
    from safetensors.torch import save_file

    url = control_server.url + "/update_weights_from_disk"
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    save_file({"model.norm.weight": torch.ones(64)}, str(truncated / "model.safetensors"))
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) - 40])
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    save_file({"model.norm.weight": torch.ones(3)}, str(wrong / "model.safetensors"))
    file_path = wrong / "model.safetensors"
    before = snapshot(tiny_engine)
    cases = [
        ({"model_path": str(corrupt)}, "model.safetensors"),
        ({"model_path": str(truncated)}, "model.safetensors"),
        ({"model_path": str(wrong)}, "shape"),
        ({"model_path": str(file_path)}, "folder"),
        ({"model_path": str(tmp_path / "none")}, "folder"),
        ({"model_path": 5}, "model_path"),
        ({}, "model_path"),
        ({"model_path": str(wrong), "bogus": 1}, "bogus"),
    ]
    for body, needle in cases:
        r = requests.post(url, data=json.dumps(body), timeout=30)
        assert r.status_code == 400 and needle in r.json()["message"], (body, r.text)
        assert_unchanged(tiny_engine, before)


CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def test_a_client_chat_template_never_runs_and_template_errors_are_400(tiny_server, tiny_engine, monkeypatch):
    """chat_template_kwargs may set the model template's plain variables, never the template itself (a
    client's template is client code run on the server: `'ab ' * 10**7` took 76 s); the server's own
    template failing on a request is a 400 naming the problem; the guard on text length applies to the
    rendered prompt, not only to the message contents."""
    from latr_sglang.server.generation import max_text_chars

    url = tiny_server.url + "/v1/chat/completions"
    refused = [
        ({"chat_template": "{{ raise_exception('boom') }}"}, "chat_template_kwargs.chat_template"),
        ({"chat_template": "{{ 'ab ' * 10000000 }}"}, "chat_template_kwargs.chat_template"),
        ({"tokenize": False}, "chat_template_kwargs.tokenize"),
        ({"tools": [{"type": "function"}]}, "chat_template_kwargs.tools"),
        ({"loop_over": list(range(1000))}, "chat_template_kwargs.loop_over"),
    ]
    for kwargs, param in refused:
        started = time.monotonic()
        r = requests.post(url, json={**CHAT, "chat_template_kwargs": kwargs}, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (kwargs, r.text[:300])
        assert param in r.json()["error"]["message"] and time.monotonic() - started < 5
    ok = requests.post(url, json={**CHAT, "chat_template_kwargs": {"enable_thinking": False}}, timeout=60)
    assert ok.status_code == 200, ok.text  # a plain variable the template may read stays allowed

    tok = tiny_engine.tokenizer
    own = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    failing = [
        ("{{ raise_exception('the first message must be a system message') }}" + own, "system message"),
        ("{{ messages[0].content.no.such }}" + own, "UndefinedError"),
        ("{% for %}" + own, "TemplateSyntaxError"),
    ]
    for template, needle in failing:
        monkeypatch.setattr(tok, "chat_template", template)
        r = requests.post(url, json=CHAT, timeout=60)
        assert r.status_code == 400 and needle in r.json()["error"]["message"], (template, r.text[:300])
    monkeypatch.setattr(tok, "chat_template", "{{ pad }}" + own)
    pad = "x" * (max_text_chars(tiny_engine) + 1)
    r = requests.post(url, json={**CHAT, "chat_template_kwargs": {"pad": pad}}, timeout=60)
    assert r.status_code == 400 and "rendered chat prompt" in r.json()["error"]["message"], r.text[:300]
    monkeypatch.undo()
    assert requests.post(url, json=CHAT, timeout=60).status_code == 200


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensor_and_nothing_is_written(
    control_server, tiny_engine, tmp_path, bad
):
    """A diverged trainer's NaN/inf weights used to be accepted (then garbage tokens, or a 500 for the
    log-probs): every weight path refuses them naming the tensor, before anything is copied, even when the
    payload's other tensors are fine."""
    from safetensors.torch import save_file

    before = snapshot(tiny_engine)
    good, poisoned = "model.norm.weight", "model.embed_tokens.weight"
    tensors = {good: torch.full_like(before[good], 0.5), poisoned: before[poisoned].clone()}
    tensors[poisoned][3, 5] = bad
    url = control_server.url
    try:
        r = requests.post(
            url + "/update_weights_from_tensor",
            json={"serialized_named_tensors": [encode_named_tensors(tensors)]},
            timeout=30,
        )
        assert r.status_code == 400 and f"{poisoned!r} contains NaN/inf" in r.json()["message"], r.text
        assert_unchanged(tiny_engine, before)

        folder = tmp_path / "poisoned"
        folder.mkdir()
        save_file(tensors, str(folder / "model.safetensors"))
        r = requests.post(url + "/update_weights_from_disk", json={"model_path": str(folder)}, timeout=30)
        assert r.status_code == 400 and f"{poisoned!r} contains NaN/inf" in r.json()["message"], r.text
        assert_unchanged(tiny_engine, before)

        with pytest.raises(ValueError, match=r"embed_tokens.*NaN/inf"):
            tiny_engine.update_weights_sync(tensors)
        assert_unchanged(tiny_engine, before)

        trainer, joined = join_weight_group(url, weight_group_body(free_port(), "nan"), timeout=30)
        assert joined.json()["success"], joined.text
        payload = {
            "names": list(tensors),
            "dtypes": ["float32"] * 2,
            "shapes": [list(t.shape) for t in tensors.values()],
            "group_name": "nan",
        }
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(
                requests.post, url + "/update_weights_from_distributed", json=payload, timeout=30
            )
            for tensor in tensors.values():
                trainer.broadcast(tensor.float(), 0)
            r = pending.result(30)
        assert r.status_code == 400 and f"{poisoned!r} contains NaN/inf" in r.json()["message"], r.text
        assert_unchanged(tiny_engine, before)
        requests.post(url + "/destroy_weights_update_group", json={"group_name": "nan"}, timeout=10)
    finally:
        tiny_engine.update_weights_sync(before)


def test_weight_update_masters_are_checked_and_a_host_name_also_stands_for_its_addresses():
    from latr_sglang.server.run import resolve_masters

    assert resolve_masters("") == ()
    assert resolve_masters(" 10.0.0.7 ,*,::1") == ("10.0.0.7", "*", "::1")
    masters = resolve_masters("localhost")
    assert masters[0] == "localhost" and "127.0.0.1" in masters  # a trainer may send the name or its IP
    with pytest.raises(ValueError, match=r"'not a host!!' is not an IP address or a host name that resolves"):
        resolve_masters("10.0.0.7,not a host!!")
