"""LATR inside an SGLang program: `latr_fork` in place of `s.fork(n)` + `sgl.gen(...)`.

Start a server (a real SGLang server on a GPU, or the torch engine with SGLang's API on a CPU), then run:

    latr-sglang serve --model smollm2 --port 30000 &
    python docs/examples/latr_fork_program.py --url http://127.0.0.1:30000

It prints the n trajectories of one countdown problem with where each came from: the tree's root, a fork of
another branch (at which response token), a fill, or a plain stochastic sample.
"""

from __future__ import annotations

import argparse
import time

import sglang as sgl

from latr_sglang.config import LATRConfig
from latr_sglang.frontend import chat_prompt, latr_fork, tokenizer_for_server

QUESTION = (
    "Using the numbers [3, 5, 7], create an equation that equals 22. You can use + - * / and each number "
    "once. Return the final answer in <answer> </answer> tags."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:30000", help="the SGLang (or latr-sglang) server")
    parser.add_argument("--n", type=int, default=4, help="trajectories")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    tokenizer = tokenizer_for_server(args.url)  # the served model's tokenizer, for its chat template
    # The released countdown thresholds with short lookahead ages, so that a fork can be judged (and kept
    # or pruned) within a 64-token answer; `--latr.preset small` in the CLI is tuned for small models.
    config = LATRConfig.preset("countdown", tau_abs=0.1, tau_rel=0.5, lookahead_steps=(8, 16), chunk_size=8)

    @sgl.function
    def solve(s, question):
        s += chat_prompt(tokenizer, question)  # instruct models answer inside their chat template
        forks = latr_fork(s, args.n, config, max_tokens=args.max_tokens, seed=0)
        # each fork is a program state holding one trajectory: its text is the variable "latr", its tree
        # metadata (origin, parent, birth_step, output_ids, output_token_logprobs, finish_reason) is the
        # variable's meta info
        s["answers"] = [f["latr"] for f in forks]
        s["trees"] = [f.get_meta_info("latr") for f in forks]

    start = time.perf_counter()
    state = solve.run(question=QUESTION, backend=sgl.RuntimeEndpoint(args.url))
    for i, (text, meta) in enumerate(zip(state["answers"], state["trees"])):
        if meta["origin"] == "tree" and meta["parent"] is not None:
            where = f"forked from branch {meta['parent']} at token {meta['birth_step']}"
        else:
            where = {"tree": "tree root", "fill": "fill (tree had room)", "stochastic": "stochastic sample"}[
                meta["origin"]
            ]
        print(f"[{i}] {where}, {meta['completion_tokens']} tokens, {meta['finish_reason']}:")
        print("    " + " ".join(text.split())[:200])
    forks = sum(m["origin"] == "tree" and m["parent"] is not None for m in state["trees"])
    print(f"{len(state['answers'])} trajectories ({forks} from forks) in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
