"""Quality rules: verdicts, blocking, gold choice and placement, the [quality] table."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from crowdprop import config
from crowdprop.errors import InputError
from crowdprop.quality.rules import (QualitySection, choose_golds, judge_assignment, passes_qualification,
                                     positions_for_golds, workers_to_block)

CFG = QualitySection()  # min_gold_accuracy 0.6, min_seconds_per_question 0.3


@pytest.mark.parametrize("n_gold, n_correct, seconds, n_questions, approve, reason", [
    (5, 5, 60.0, 50, True, None),
    (5, 3, 60.0, 50, True, None),             # 60 % is enough
    (5, 2, 60.0, 50, False, "low_gold_accuracy"),
    (0, 0, 60.0, 50, True, None),             # no golds: nothing to judge on
    (5, 5, 15.0, 50, True, None),             # exactly 0.3 s per question
    (5, 5, 14.9, 50, False, "too_fast"),
    (5, 1, 3.0, 50, False, "too_fast,low_gold_accuracy"),
    (5, 5, None, 50, True, None),             # time unknown
    (10, 6, 100.0, 50, True, None),
    (10, 5, 100.0, 50, False, "low_gold_accuracy"),
])
def test_judge_assignment(n_gold, n_correct, seconds, n_questions, approve, reason):
    v = judge_assignment(n_gold, n_correct, seconds, n_questions, CFG)
    assert v.approve is approve
    assert v.reason == reason
    if approve:
        assert v.feedback is None
    else:
        assert 0 < len(v.feedback) <= 1024
        assert v.feedback.startswith("Thank you")


def test_feedback_names_the_numbers():
    v = judge_assignment(5, 2, 60.0, 50, CFG)
    assert "2 of them" in v.feedback and "at least 3" in v.feedback
    v = judge_assignment(5, 5, 10.0, 50, CFG)
    assert "10 seconds" in v.feedback and "0.3 seconds per question" in v.feedback


@pytest.mark.parametrize("args", [(3, 4, 10.0, 50), (-1, 0, 10.0, 50), (3, 2, -1.0, 50), (3, 2, 1.0, 0)])
def test_judge_assignment_refuses_impossible_counts(args):
    with pytest.raises(ValueError):
        judge_assignment(*args, CFG)


HISTORY = pd.DataFrame({
    "worker": ["a", "a", "a", "b", "b", "c", "c", "d"],
    "approved": [False, True, False, False, True, True, True, None],
})


@pytest.mark.parametrize("cfg, soft, hard", [
    (QualitySection(), {"a"}, set()),
    (QualitySection(soft_block_after=1), {"a", "b"}, set()),
    (QualitySection(soft_block_after=3), set(), set()),
    (QualitySection(hard_block=True), set(), {"a"}),
])
def test_workers_to_block(cfg, soft, hard):
    assert workers_to_block(HISTORY, cfg) == (soft, hard)


def pool(n_yes, n_no):
    return pd.DataFrame({"task": [f"y{i}" for i in range(n_yes)] + [f"n{i}" for i in range(n_no)],
                         "label": [1] * n_yes + [0] * n_no})


@pytest.mark.parametrize("n_yes, n_no, n, want_yes", [
    (10, 10, 4, {2}),
    (10, 10, 5, {2, 3}),
    (1, 10, 4, {1}),     # yes class short: topped up with no-golds
    (10, 0, 3, {3}),
    (3, 3, 6, {3}),
])
def test_choose_golds_balanced_and_distinct(n_yes, n_no, n, want_yes):
    rng = np.random.default_rng(0)
    for _ in range(20):
        picked = choose_golds(pool(n_yes, n_no), n, used_counts={}, rng=rng)
        assert len(picked) == len(set(picked)) == n
        assert sum(t.startswith("y") for t in picked) in want_yes


def test_choose_golds_odd_extra_goes_both_ways():
    rng = np.random.default_rng(1)
    yes_counts = {sum(t.startswith("y") for t in choose_golds(pool(10, 10), 5, rng=rng)) for _ in range(40)}
    assert yes_counts == {2, 3}


def test_choose_golds_reuses_only_when_exhausted():
    p = pool(7, 9)
    used = Counter()
    rng = np.random.default_rng(2)
    for _ in range(25):
        for t in choose_golds(p, 4, used_counts=dict(used), rng=rng):
            used[t] += 1
        for prefix, size in (("y", 7), ("n", 9)):
            counts = [used[f"{prefix}{i}"] for i in range(size)]
            assert max(counts) - min(counts) <= 1  # nobody shown twice while another is unseen


def test_choose_golds_prefers_least_used():
    used = {"y0": 3, "y1": 0, "y2": 1, "n0": 0, "n1": 5}
    picked = choose_golds(pool(3, 2), 2, used_counts=pd.Series(used), rng=np.random.default_rng(0))
    assert sorted(picked) == ["n0", "y1"]


def test_choose_golds_does_not_depend_on_pool_row_order():
    p = pool(6, 6)
    a = choose_golds(p, 5, used_counts={"y0": 1}, rng=np.random.default_rng(5))
    b = choose_golds(p.iloc[::-1], 5, used_counts={"y0": 1}, rng=np.random.default_rng(5))
    assert a == b


def test_choose_golds_refuses_more_than_the_pool():
    with pytest.raises(ValueError, match="pool has 3"):
        choose_golds(pool(2, 1), 4, rng=np.random.default_rng(0))


def test_positions_for_golds():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        pos = positions_for_golds(50, 5, rng)
        assert pos.dtype == np.int64 and len(pos) == 5
        assert np.all(np.diff(pos) > 0) and pos[0] >= 0 and pos[-1] < 50
        seen.update(pos.tolist())
    assert seen == set(range(50))  # every position can hold a gold
    assert (positions_for_golds(10, 10, rng) == np.arange(10)).all()
    np.testing.assert_array_equal(positions_for_golds(50, 5, np.random.default_rng(9)),
                                  positions_for_golds(50, 5, np.random.default_rng(9)))
    with pytest.raises(ValueError):
        positions_for_golds(3, 4, rng)


def test_quality_table_takes_string_values():
    cfg = config.from_dict({"quality": {"aggregation": "onecoin"}}, "c.toml")
    assert cfg.quality.aggregation == "onecoin"
    with pytest.raises(InputError, match=r"\[quality\]: field 'aggregation': must be onecoin, ds, mv or raw"):
        config.from_dict({"quality": {"aggregation": "vote"}}, "c.toml")


def test_quality_table_in_config():
    cfg = config.from_dict({"quality": {"min_gold_accuracy": 0.7, "soft_block_after": 3, "hard_block": True}},
                           "c.toml")
    q = cfg.quality
    assert (q.min_gold_accuracy, q.soft_block_after, q.hard_block) == (0.7, 3, True)
    assert q.qualification_size == 10 and q.qualification_pass == 0.9
    assert config.from_dict({}, "c.toml").quality == QualitySection()


@pytest.mark.parametrize("table, key, words", [
    ({"min_gold_acuracy": 0.7}, "min_gold_acuracy", "unknown key"),
    ({"min_gold_accuracy": 1.5}, "min_gold_accuracy", "must be in [0, 1]"),
    ({"soft_block_after": 0}, "soft_block_after", "must be >= 1"),
    ({"soft_block_after": 2.0}, "soft_block_after", "expected int"),
    ({"hard_block": 1}, "hard_block", "expected bool"),
    ({"qualification_pass": "high"}, "qualification_pass", "expected float"),
])
def test_quality_table_errors_name_the_key(table, key, words):
    with pytest.raises(InputError) as e:
        config.from_dict({"quality": table}, "c.toml")
    msg = str(e.value)
    assert msg.startswith("c.toml: [quality]: field '" + key + "'")
    assert words in msg


@pytest.mark.parametrize("n, right, cfg, ok", [
    (10, 9, QualitySection(), True),  # default pass mark 0.9
    (10, 8, QualitySection(), False),
    (5, 5, QualitySection(), True),
    (5, 4, QualitySection(), False),  # 4 < 0.9 * 5
    (10, 8, QualitySection(qualification_pass=0.8), True),
    (10, 7, QualitySection(qualification_pass=0.8), False),
    (5, 4, QualitySection(qualification_pass=0.8), True),
    (0, 0, QualitySection(qualification_size=0), True),
    (10, 10, QualitySection(qualification_pass=1.0), True),
    (10, 9, QualitySection(qualification_pass=1.0), False),
])
def test_passes_qualification(n, right, cfg, ok):
    assert passes_qualification(n, right, cfg) is ok
