"""`--json PATH` of the rollout, engine and shared-prefix benchmarks: the figures a script compares, with the
ratios recomputed from the raw numbers they come from."""

import json

import pytest

from latr_sglang.bench import engine as engine_bench
from latr_sglang.bench import reference as reference_bench
from latr_sglang.bench import rewards as rewards_bench
from latr_sglang.bench import rollout as rollout_bench
from latr_sglang.bench import shared_prefix as shared_bench
from latr_sglang.bench import sweep as sweep_bench
from latr_sglang.bench import weight_sync as weight_sync_bench


@pytest.mark.parametrize("repeats", [1, 3])
def test_rollout_json_has_the_ratios(tmp_path, repeats):
    out = tmp_path / "rollout.json"
    args = ["--model", "tiny", "--num-prompts", "2", "--n", "2", "--max-new-tokens", "6", "--json", str(out)]
    rollout_bench.main([*args, "--repeats", str(repeats)])
    data = json.loads(out.read_text())
    assert len(data["per_token_ratio_by_round"]) == repeats
    latr, sto = data["arms"]["latr"], data["arms"]["stochastic"]
    assert data["wall_ratio"] == pytest.approx(latr["wall time (s)"] / sto["wall time (s)"])
    per_token = (latr["wall time (s)"] / latr["tokens delivered"]) / (
        sto["wall time (s)"] / sto["tokens delivered"]
    )
    assert data["per_token_ratio"] == pytest.approx(per_token)
    assert sto["tokens delivered"] > 0 and data["peak_rss_mb"] > 50
    assert data["settings"]["n"] == 2
    # the totals are of every round: each round samples every prompt's group
    assert latr["tokens delivered"] >= repeats * 2 * 2


def test_rollout_takes_config_overrides(tmp_path):
    out = tmp_path / "rollout.json"
    args = ["--model", "tiny", "--num-prompts", "2", "--n", "2", "--max-new-tokens", "6", "--json", str(out)]
    rollout_bench.main([*args, "--config", "chunks_end_on_lookahead=false,chunk_size=3"])
    data = json.loads(out.read_text())
    assert data["settings"]["config"] == "chunks_end_on_lookahead=false,chunk_size=3"
    assert data["latr_config"]["chunks_end_on_lookahead"] is False and data["latr_config"]["chunk_size"] == 3
    for bad, named in [("chunk_size=0", "chunk_size"), ("no_such_field=1", "no_such_field")]:
        with pytest.raises(SystemExit, match=named):
            rollout_bench.main([*args, "--config", bad])


def test_engine_json_has_one_entry_per_model(tmp_path):
    out = tmp_path / "engine.json"
    args = ["--models", "tiny", "--batch", "2", "--new-tokens", "3", "--chunk-total", "4", "--chunk", "2"]
    engine_bench.main([*args, "--json", str(out)])
    data = json.loads(out.read_text())
    tiny = data["models"]["tiny"]
    assert tiny["speedup"] == pytest.approx(tiny["engine_tok_s"] / tiny["hf_tok_s"])
    assert tiny["chunked_ratio"] == pytest.approx(tiny["chunked_s"] / tiny["one_shot_s"])
    assert data["peak_rss_mb"] > 50


@pytest.mark.parametrize("responses", ["random", "latr"])
def test_shared_prefix_json(tmp_path, responses):
    out = tmp_path / "sp.json"
    args = ["--model", "tiny", "--groups", "2", "--n", "3", "--repeats", "1", "--json", str(out)]
    data = shared_bench.main([*args, "--responses", responses, "--task", "countdown"])
    assert json.loads(out.read_text())["update_speedup"] == pytest.approx(data["update_speedup"])
    tokens = data["tokens_forwarded"]
    assert tokens["tree"] <= tokens["prompts"] < tokens["unshared"]
    assert data["update_speedup"] == pytest.approx(
        min(data["update_s"]["unshared"]) / min(data["update_s"]["tree"])
    )
    ref = data["reference_forward_s"]
    assert data["reference_speedup"] == pytest.approx(min(ref["unshared"]) / min(ref["tree"]))


@pytest.mark.parametrize(
    ("bench", "args", "needle"),
    [
        (rollout_bench, ["--num-prompts", "0"], "argument --num-prompts: 0 must be at least 1"),
        (rollout_bench, ["--repeats", "0"], "argument --repeats: 0 must be at least 1"),
        (rollout_bench, ["--prompts-per-batch", "-1"], "argument --prompts-per-batch: -1 must be >= 0"),
        (rollout_bench, ["--max-batch-size", "0"], "argument --max-batch-size: 0 must be at least 1"),
        (rollout_bench, ["--model", "/nonexistent"], "no such folder; nothing is downloaded"),
        (rollout_bench, ["--json", "/nonexistent/x.json"], "--json /nonexistent/x.json: folder"),
        (rollout_bench, ["--seed", str(2**70)], "a seed is an integer"),
        (engine_bench, ["--batch", "0"], "argument --batch: 0 must be at least 1"),
        (engine_bench, ["--device", "gpu"], "expected cpu, cuda or cuda:N"),
        (shared_bench, ["--groups", "0"], "argument --groups: 0 must be at least 1"),
        (reference_bench, ["--eta", "2"], "must be a number in [0, 1]"),
        (weight_sync_bench, ["--bucket-mb", "0"], "must be a finite number > 0"),
        (sweep_bench, ["--threads", "0"], "argument --threads: 0 must be at least 1"),
        (rewards_bench, ["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_a_benchmark_names_a_bad_flag_in_one_line_before_it_loads_anything(bench, args, needle, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--model", "tiny", *args] if bench not in (engine_bench, rewards_bench) else args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
