"""The real SGLang frontend language (sgl.RuntimeEndpoint, @sgl.function, fork, gen) against our server."""

import pytest

try:
    import sglang as sgl
except ImportError:  # the argument checks of latr_fork need no SGLang: only the program tests skip
    sgl = None
needs_sglang = pytest.mark.skipif(sgl is None, reason="sglang is not installed")


@needs_sglang
def test_frontend_program_with_fork_and_logprobs(tiny_server):
    backend = sgl.RuntimeEndpoint(tiny_server.url)

    @sgl.function
    def program(s, question):
        s += "Question: " + question + "\n"
        forks = s.fork(3)
        for i, f in enumerate(forks):
            f += f"Attempt {i}: " + sgl.gen(
                "attempt", max_tokens=8, temperature=1.0, return_logprob=True, top_logprobs_num=2
            )
        s["attempts"] = [f["attempt"] for f in forks]
        s["metas"] = [f.get_meta_info("attempt") for f in forks]
        s += "Answer: " + sgl.gen("answer", max_tokens=6, temperature=0.0)

    state = program.run(question="What is 3 + 4", backend=backend)
    assert state.error() is None if hasattr(state, "error") else True
    assert len(state["attempts"]) == 3 and all(isinstance(a, str) for a in state["attempts"])
    for meta in state["metas"]:
        assert meta["completion_tokens"] == len(meta["output_token_logprobs"]) <= 8
        assert all(len(pos) == 2 for pos in meta["output_top_logprobs"])
    assert isinstance(state["answer"], str)
    assert state.text().startswith("Question: What is 3 + 4\n")

    states = program.run_batch([{"question": "a"}, {"question": "b"}], backend=backend)
    assert all(isinstance(s["answer"], str) for s in states)


@needs_sglang
def test_latr_fork_in_a_program(tiny_server):
    from latr_sglang.config import LATRConfig
    from latr_sglang.frontend import latr_fork

    backend = sgl.RuntimeEndpoint(tiny_server.url)
    cfg = LATRConfig(tau_abs=0.05, tau_rel=0.9, lookahead_steps=(4, 8), chunk_size=6)

    @sgl.function
    def program(s, question):
        s += "Question: " + question + "\n"
        forks = latr_fork(s, 4, cfg, name="attempt", max_tokens=12, eta=0.75, seed=1)
        for f in forks:
            f += "\nAnswer: " + sgl.gen("answer", max_tokens=4, temperature=0.0)
        s["attempts"] = [f["attempt"] for f in forks]
        s["metas"] = [f.get_meta_info("attempt") for f in forks]
        s["answers"] = [f["answer"] for f in forks]
        s["texts"] = [f.text() for f in forks]

    state = program.run(question="What is 3 + 4", backend=backend)
    metas = state["metas"]
    assert len(metas) == 4
    assert [m["origin"] for m in metas][-1] == "stochastic"  # round(4 * 0.75) = 3 tree slots, 1 stochastic
    assert all(m["origin"] in ("tree", "fill") for m in metas[:3])
    assert all(1 <= m["completion_tokens"] <= 12 for m in metas)
    for text, attempt, answer in zip(state["texts"], state["attempts"], state["answers"]):
        assert text.startswith("Question: What is 3 + 4\n" + attempt)
        assert text.endswith("\nAnswer: " + answer)


@needs_sglang
def test_chat_prompt_uses_the_model_template_and_eos_comes_from_the_server(tiny_server, tiny_engine):
    from latr_sglang.frontend import chat_prompt, server_eos_ids, tokenizer_for_server

    tok = tokenizer_for_server(tiny_server.url)
    text = chat_prompt(tok, "What is 3 + 4")
    assert "What is 3 + 4" in text
    if tok.chat_template:
        assert text == tok.apply_chat_template(
            [{"role": "user", "content": "What is 3 + 4"}], tokenize=False, add_generation_prompt=True
        )
    assert server_eos_ids(tiny_server.url, tok) >= ({tok.eos_token_id} - {None})
    assert server_eos_ids(tiny_server.url, tok) <= set(tiny_engine.eos_ids) | {tok.eos_token_id}


@needs_sglang
@pytest.mark.parametrize(
    ("url", "needle"), [("http://127.0.0.1:9", "cannot connect"), ("127.0.0.1:9", "not an http(s):// URL")]
)
def test_an_unusable_server_is_one_line_naming_it(url, needle):
    from latr_sglang.frontend import ServerError, tokenizer_for_server

    with pytest.raises(ServerError) as err:
        tokenizer_for_server(url)
    assert str(err.value).startswith(url.rstrip("/")) and needle in str(err.value)
    assert "\n" not in str(err.value)


@needs_sglang
def test_the_latr_fork_example_runs_as_written(tiny_server):
    """docs/examples/latr_fork_program.py, unchanged, against a server (here the tiny model's)."""
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "docs/examples/latr_fork_program.py"
    proc = subprocess.run(
        [sys.executable, str(example), "--url", tiny_server.url, "--n", "3", "--max-tokens", "8"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "3 trajectories" in proc.stdout and proc.stdout.count("tokens, ") == 3


class _FakeState:
    """Just what latr_fork reads of a program state before it samples."""

    def __init__(self, url: str, text: str = "Hello") -> None:
        self.stream_executor = type("Executor", (), {"backend": type("Backend", (), {"base_url": url})()})()
        self._text = text

    def text(self) -> str:
        return self._text


def _mutated(**fields):
    """A LATRConfig whose fields were assigned after it was built (validation ran at construction only)."""
    from latr_sglang.config import LATRConfig

    config = LATRConfig()
    for name, value in fields.items():
        setattr(config, name, value)
    return config


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        (dict(n=2.5), TypeError, "n=2.5: must be a positive integer"),
        (dict(n="3"), TypeError, "n='3': must be a positive integer"),
        (dict(n=True), TypeError, "n=True"),
        (dict(n=0), ValueError, "n=0"),
        (dict(n=100_000), ValueError, "n=100000: at most 1024 forks"),
        (
            dict(n=2, config={"tau_abs": 0.1}),
            TypeError,
            "config must be a LATRConfig .got dict; use LATRConfig.from_dict",
        ),
        (dict(n=2, config="countdown"), TypeError, "config must be a LATRConfig .got str"),
        (dict(n=2, tokenizer="gpt2"), TypeError, "tokenizer='gpt2': must be a tokenizer object"),
        (dict(n=2, name=5), TypeError, "name=5"),
        (dict(n=2, max_tokens=8.0), TypeError, "max_tokens=8.0"),
        (dict(n=2, top_p=0), ValueError, r"latr_fork: top_p=0: must be in \(0, 1\]"),
        (dict(n=2, top_k=0), ValueError, "latr_fork: top_k=0"),
        (dict(n=2, temperature=-1), ValueError, "latr_fork: temperature=-1"),
        (dict(n=2, eta=True), ValueError, "eta=True: must be a number in"),
        (dict(n=2, eta=1.5), ValueError, "eta=1.5: must be a number in"),
        (dict(n=2, seed="x"), TypeError, "seed='x': must be an integer"),
        (dict(n=2, seed=2.5), TypeError, "seed=2.5: must be an integer"),
        (dict(n=2, config=_mutated(max_branch_per_token=101)), ValueError, "max_branch_per_token=101: more"),
        (dict(n=2, config=_mutated(tau_abs=5)), ValueError, "tau_abs=5: must be a number in"),
    ],
)
def test_latr_fork_misuse_is_one_error_naming_the_argument(kwargs, error, needle):
    """Checked before the server is contacted: no deep TypeError or AttributeError from the driver (F14)."""
    from latr_sglang.frontend import latr_fork

    with pytest.raises(error, match=needle):
        latr_fork(_FakeState("http://127.0.0.1:9"), **kwargs)
    with pytest.raises(TypeError, match="must be an SGLang program state"):
        latr_fork(object(), 2)


def test_latr_fork_refuses_max_tokens_the_server_cannot_generate(tiny_server, tiny_engine):
    """Not reported as the remainder after the tree phase, a number the caller never passed (F14)."""
    from latr_sglang.frontend import latr_fork

    with pytest.raises(ValueError, match=r"max_tokens=1000000: more than the server can generate after this"):
        latr_fork(_FakeState(tiny_server.url), 2, max_tokens=10**6, tokenizer=tiny_engine.tokenizer)


@needs_sglang
def test_the_readme_program_exits_when_it_is_done(tiny_server, tmp_path):
    """README's latr_fork program as written (at module level, not in a function), against the tiny model's
    server with enough tokens for forks to be pruned: it used to print its answers and then hang at exit,
    its forks' SGLang threads kept alive by an exception context that held the program's frames."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    program = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "latr_fork(s, 4" in b)
    script = tmp_path / "program.py"
    script.write_text(program.replace("http://127.0.0.1:30000", tiny_server.url))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # one line per fork: origin, parent, birth step, then the text (which may hold newlines of its own)
    heads = re.findall(r"^(tree|fill|stochastic) (None|\d+) (None|\d+) ", proc.stdout, re.M)
    assert len(heads) == 4, proc.stdout


def test_a_program_text_that_is_not_valid_unicode_is_named(tiny_engine):
    from latr_sglang.frontend import latr_fork

    state = _FakeState("http://127.0.0.1:9", text="Question: x\udfff")  # no server is asked anything
    with pytest.raises(
        ValueError, match=r"latr_fork: the program's text is not valid Unicode \(lone surrogate"
    ):
        latr_fork(state, 2, tokenizer=tiny_engine.tokenizer)


@needs_sglang
def test_latr_fork_uses_the_backends_api_key(tiny_engine):
    """A RuntimeEndpoint(url, api_key=...) program: latr_fork's own requests (model info, context length,
    /generate) carry the same key; without it the server refuses them."""
    from latr_sglang.config import LATRConfig
    from latr_sglang.frontend import latr_fork, tokenizer_for_server
    from latr_sglang.server import ServerThread

    server = ServerThread(tiny_engine, api_key="sekret").start()
    try:
        backend = sgl.RuntimeEndpoint(server.url, api_key="sekret")
        cfg = LATRConfig(tau_abs=0.05, tau_rel=0.9, lookahead_steps=(2, 4), chunk_size=4)

        @sgl.function
        def program(s):
            s += "Question: What is 3 + 4\n"
            s["texts"] = [f.text() for f in latr_fork(s, 2, cfg, max_tokens=6, seed=1)]

        state = program.run(backend=backend)
        assert len(state["texts"]) == 2
        with pytest.raises(ConnectionError, match="needs an API key"):
            tokenizer_for_server(server.url)
    finally:
        server.stop()
