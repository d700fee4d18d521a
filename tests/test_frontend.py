"""The real SGLang frontend language (sgl.RuntimeEndpoint, @sgl.function, fork, gen) against our server."""

import pytest

sgl = pytest.importorskip("sglang")


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
