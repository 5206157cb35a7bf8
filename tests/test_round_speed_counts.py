"""label_counts (plan_round, _sample_rows, reopen_unlabeled_verified) equals label_sums' counts exactly."""
import numpy as np
import pytest

from crowdprop.policy.controller import label_counts, label_sums
from crowdprop.tree.build import build_forest


@pytest.fixture(scope="module")
def forest():
    rng = np.random.default_rng(3)
    n = 3000
    return build_forest(rng.integers(0, 4, n).astype(np.int64), rng.normal(size=(n, 4)).astype(np.float32), rng=rng)


@pytest.mark.parametrize("share_labeled", [0.0, 0.1, 0.7, 1.0])
def test_label_counts_are_label_sums_counts_for_few_and_many_members(forest, share_labeled):
    rng = np.random.default_rng(int(share_labeled * 10))
    n = len(forest.order)
    label_p = rng.random(n)
    label_p[rng.random(n) >= share_labeled] = np.nan
    size = forest.end - forest.start
    small = np.flatnonzero(size <= 20)
    cases = {
        "every node (nested, many members: the prefix-sum path)": np.arange(forest.n_nodes),
        "roots (all masks)": np.asarray(forest.roots),
        "small nodes, some nested (the members' path)": rng.choice(small, 30, replace=False),
        "one leaf": small[:1],
        "none": np.zeros(0, dtype=np.int64),
    }
    for name, nodes in cases.items():
        got = label_counts(forest, label_p, nodes)
        want = label_sums(forest, label_p, nodes)[0]
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    # the counts are the members' labels, counted by hand
    for j in cases["small nodes, some nested (the members' path)"][:10]:
        members = forest.order[forest.start[j]:forest.end[j]]
        assert label_counts(forest, label_p, np.array([j]))[0] == np.count_nonzero(~np.isnan(label_p[members]))
