"""LATR's pure decisions against hand-worked cases (docs/ALGORITHM.md), including both reference bugs."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latr_sglang.algorithm import (
    PruneCheck,
    admit_forks,
    branches_to_prune,
    edit_distance,
    fork_is_exempt,
    fork_tokens,
    group_split,
    leave_tree_phase,
    mix_ratio,
    rouge_l_f1,
    settled,
    should_prune,
    suffix_match,
    with_descendants,
)
from latr_sglang.config import LATRConfig

COUNTDOWN = LATRConfig.preset("countdown")
MATH = LATRConfig.preset("math")


def top(*probs):
    return [(100 + i, math.log(p)) for i, p in enumerate(probs)]


def test_mix_ratio_schedule():
    s = COUNTDOWN.mix_ratio_schedule
    assert [mix_ratio(s, t) for t in (1, 9, 10, 19, 20, 79, 80, 199, 200, 10_000)] == [
        1.0,
        1.0,
        0.75,
        0.75,
        0.5,
        0.5,
        0.25,
        0.25,
        0.0,
        0.0,
    ]


def test_group_split():
    assert group_split(8, 1.0) == (8, 0)
    assert group_split(8, 0.75) == (6, 2)
    assert group_split(8, 0.25) == (2, 6)
    assert group_split(8, 0.0) == (0, 8)
    # Python's round, half to even, as the reference: 2.5 -> 2, 3.5 -> 4
    assert group_split(10, 0.25) == (2, 8)
    assert group_split(5, 0.5) == (2, 3)
    assert group_split(7, 0.5) == (4, 3)


def test_fork_rule_paper():
    # p0=.5, p1=.4: p1 > tau_abs (.25) and gap .1 < tau_rel (.15) -> fork
    assert fork_tokens(top(0.5, 0.4), COUNTDOWN) == [101]
    # gap .3 >= tau_rel -> no fork; p1 <= tau_abs -> no fork
    assert fork_tokens(top(0.6, 0.3), COUNTDOWN) == []
    assert fork_tokens(top(0.3, 0.2), COUNTDOWN) == []
    # only the top-m are candidates
    assert fork_tokens(top(0.34, 0.33, 0.33), COUNTDOWN) == [101]
    wide = LATRConfig.preset("countdown", max_branch_per_token=3)
    assert fork_tokens(top(0.34, 0.33, 0.32), wide) == [101, 102]


def test_fork_rule_released_is_the_inverted_relative_rule():
    # Reference bug 1: the released runs forked when p0 - p1 > tau_rel.
    released = LATRConfig.preset("countdown", rel_rule="released")
    assert fork_tokens(top(0.5, 0.4), released) == []
    assert fork_tokens(top(0.6, 0.3), released) == [101]


def test_sampled_tree_phase_forks_the_other_valid_tokens():
    sampled = LATRConfig.preset("countdown", tree_sampling="sample")
    assert fork_tokens(top(0.5, 0.4), sampled, chosen=101) == [100]
    assert fork_tokens(top(0.5, 0.4), sampled, chosen=555) == [100, 101]


def test_metrics_hand_worked():
    assert edit_distance([1, 2, 3, 4], [1, 2, 3, 4]) == 0.0
    assert edit_distance([1, 2, 3, 4], [1, 9, 3, 4]) == 0.25
    assert suffix_match([1, 2, 3, 4], [7, 3, 4, 8]) == 0.5  # suffix [3, 4] occurs in the other
    assert suffix_match([5, 6, 7, 8], [1, 2, 3, 4]) == 0.0
    assert suffix_match([9, 1, 2, 3], [1, 2, 3, 9]) == 0.75  # either direction, the max
    # ROUGE-L: LCS [1, 3, 4] of lengths 4 and 5 -> P = 3/4, R = 3/5, F1 = 2/3
    assert rouge_l_f1([1, 2, 3, 4], [1, 3, 5, 4, 6]) == pytest.approx(2 / 3)


def test_prune_rule_countdown():
    eos = {0}
    same = [5, 6, 7, 8, 9]
    assert should_prune(same, same, "Let", eos, COUNTDOWN)
    assert not should_prune([5, 6, 7, 8, 9], [10, 11, 12, 13, 14], "Let", eos, COUNTDOWN)
    assert not should_prune([*same, 0], [*same, 1], "Let", eos, COUNTDOWN)  # EOS in a window: skip


def test_prune_rule_math_uses_suffix_match_or_rouge():
    eos = {0}
    child, parent = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16, 17, 18, 9, 10]
    assert suffix_match(child, parent) == 0.2  # not > 0.2
    assert not should_prune(child, parent, "So", eos, MATH)
    parent2 = [11, 12, 13, 14, 15, 16, 17, 8, 9, 10]  # shared suffix of 3 -> 0.3 > 0.2
    assert should_prune(child, parent2, "So", eos, MATH)


EXEMPTION_CASES = [
    (" ", True),
    ("", True),
    (" 12", True),
    ("+", True),
    (" (3*4)", True),
    ("Let", False),
    (" x", False),
    ("3a", False),
]


@pytest.mark.parametrize(("text", "exempt"), EXEMPTION_CASES)
def test_exemption(text, exempt):
    assert fork_is_exempt(text, COUNTDOWN) is exempt


# the released code's substring test: "12" is a run of "...0123456789", "20" is not
REFERENCE_EXEMPTION_CASES = [
    (" ", True),
    ("", True),
    (" 12", True),
    ("+-", True),
    ("+", True),
    (" 7", True),
    ("20", False),
    ("))", False),
    ("$$", False),
    ("\\(", False),
    (" (3*4)", False),
    ("Let", False),
]


@pytest.mark.parametrize(("text", "exempt"), REFERENCE_EXEMPTION_CASES)
def test_reference_exemption_is_a_substring_test(text, exempt):
    assert fork_is_exempt(text, LATRConfig.preset("countdown", exempt_rule="reference")) is exempt
    if text.strip() in ("20", "))", "$$", "\\("):  # the character-set rule (default) exempts these
        assert fork_is_exempt(text, COUNTDOWN)


def test_admission_order_rank_major_or_branch_major():
    # branch 0 has rank-1 and rank-2 candidates, branch 1 a rank-1 one; two free slots
    candidates = [(0, 1, 101), (0, 2, 102), (1, 1, 201)]
    assert admit_forks(candidates, 2, LATRConfig(max_branch_per_token=3)) == [0, 2]  # rank (default)
    assert admit_forks(candidates, 2, LATRConfig(max_branch_per_token=3, admission_order="branch")) == [0, 1]
    assert admit_forks(candidates, 5, LATRConfig()) == [0, 1, 2]
    assert admit_forks(candidates, 0, LATRConfig()) == []


def test_a_window_with_a_stop_id_or_cut_short_is_not_checked():
    same = [5, 6, 7, 8]
    assert should_prune(same, same, "Let", {0}, COUNTDOWN, age=4)
    assert not should_prune([*same[:3], 9], [*same[:3], 9], "Let", {0, 9}, COUNTDOWN, age=4)  # stop id 9
    assert not should_prune(same, same, "Let", {0}, COUNTDOWN, age=4, stopped=True)  # the engine's stop
    assert not should_prune(same, same[:3], "Let", {0}, COUNTDOWN, age=4)  # parent ended before age 4


def test_pruning_keeps_each_verdict_with_its_branch():
    # Reference bug 2: exempt checks were dropped from one list but not the parallel ones. Here an exempt
    # check (identical windows, fork on "+") precedes a similar and a distinct one: only branch 2 is pruned.
    w = (5, 6, 7, 8)
    checks = [
        PruneCheck(1, w, w, " +"),
        PruneCheck(2, w, w, " Let"),
        PruneCheck(3, (1, 2, 3, 4), w, " So"),
    ]
    assert branches_to_prune(checks, {0}, COUNTDOWN) == {2}


def test_descendants_are_pruned_with_their_parent():
    parent_of = {0: None, 1: 0, 2: 1, 3: 2, 4: 0, 5: 4}
    assert with_descendants({1}, parent_of) == {1, 2, 3}
    assert with_descendants({4, 3}, parent_of) == {3, 4, 5}


def test_exit_rule():
    cfg = COUNTDOWN
    root, old = (None, False), (5, False)
    # 4 prompts x k_latr 8 after token s = 60: target round(32 * (0.98 - 0.05 * 60 / 1024)) = 31
    assert not leave_tree_phase([8, 8, 8, 6], 32, [root, old], s=60, max_response_len=1024, cfg=cfg)
    assert leave_tree_phase([8, 8, 8, 7], 32, [root, old], s=60, max_response_len=1024, cfg=cfg)
    # the decay term uses s: at s = 700, round(32 * (0.98 - 0.05 * 700 / 1024)) = 30
    assert leave_tree_phase([8, 8, 8, 6], 32, [root], s=700, max_response_len=1024, cfg=cfg)
    # full, but a branch born at 20 is not older than the last age (20 + 50 < 70 is false)
    assert not leave_tree_phase([8, 8, 8, 8], 32, [root, (20, True)], s=70, max_response_len=1024, cfg=cfg)
    assert leave_tree_phase([8, 8, 8, 8], 32, [root, (20, True)], s=71, max_response_len=1024, cfg=cfg)
    # force_return_step (512) tokens end it regardless: s = 511 is the 512th token
    assert not leave_tree_phase([1, 1, 1, 1], 32, [(500, False)], s=510, max_response_len=1024, cfg=cfg)
    assert leave_tree_phase([1, 1, 1, 1], 32, [(500, False)], s=511, max_response_len=1024, cfg=cfg)


def test_a_tree_that_never_forks_decodes_max_age_plus_two_tokens():
    # k_latr = 1 with ages 20/30/50: the root alone must satisfy 0 + 50 < s, first true at s = 51 (52 tokens)
    cfg = LATRConfig(lookahead_steps=(20, 30, 50))
    done = [s for s in range(100) if leave_tree_phase([1], 1, [(None, False)], s, 1024, cfg)]
    assert done[0] == 51
    assert not settled([(None, True)], 50, cfg) and settled([(None, True)], 51, cfg)  # finished ones count
    # pending: only unfinished children count, so a lone root leaves after its first token
    pending = LATRConfig(lookahead_steps=(20, 30, 50), exit_age_rule="pending")
    assert leave_tree_phase([1], 1, [(None, False)], 0, 1024, pending)
    # ... and a child born at 3 has its last check at token 3 + 50 - 1 = 52
    assert not settled([(None, False), (3, False)], 51, pending) and settled([(3, False)], 52, pending)
    assert settled([(3, True)], 10, pending)  # a finished child can no longer be pruned


ids = st.lists(st.integers(0, 20), min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(a=ids, b=ids)
def test_metric_properties(a, b):
    for metric in (edit_distance, suffix_match, rouge_l_f1):
        value = metric(a, b)
        assert 0.0 <= value <= 1.0
        assert value == pytest.approx(metric(b, a))
    assert edit_distance(a, a) == 0.0 and rouge_l_f1(a, a) == 1.0 and suffix_match(a, a) == 1.0


@settings(max_examples=200, deadline=None)
@given(
    probs=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=5),
    tau_abs=st.floats(0, 1),
    tau_rel=st.floats(0, 1),
)
def test_fork_candidates_are_valid_top_m_tokens(probs, tau_abs, tau_rel):
    probs = sorted((p / (sum(probs) or 1) for p in probs), reverse=True)
    if probs[0] == 0:
        return
    cfg = LATRConfig(tau_abs=tau_abs, tau_rel=tau_rel, max_branch_per_token=3)
    t = [(i, math.log(p) if p > 0 else -math.inf) for i, p in enumerate(probs)]
    forks = fork_tokens(t, cfg)
    assert 0 not in forks and all(i < 3 for i in forks)
    for i in forks:
        assert probs[i] > tau_abs and probs[0] - probs[i] < tau_rel + 1e-12
