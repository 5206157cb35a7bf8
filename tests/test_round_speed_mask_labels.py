"""mask_labels moves its per-node coverage to mask rows once; it gives what it gave when it did so three times."""
import numpy as np
import pytest

from crowdprop.policy.controller import mask_labels
from crowdprop.schema import NODE_ACCEPTED, NODE_INACTIVE, NODE_OPEN, NODE_REJECTED
from crowdprop.tree.build import build_forest


def _range_fill(forest, nodes, values, n):
    d = np.zeros(n + 1, dtype=np.int64)
    np.add.at(d, forest.start[nodes], values)
    np.add.at(d, forest.end[nodes], -values)
    out = np.empty(n, dtype=np.int64)
    out[forest.order] = np.cumsum(d)[:n]
    return out


def _mask_labels_before(forest, status, label_p, verdict=None, node_round=None, verdict_round=None,
                        direct_round=None):
    """mask_labels as it was (commit 40e32ea): a scatter through forest.order per range fill."""
    n = len(forest.order)
    acc = np.flatnonzero(status == NODE_ACCEPTED)
    rej = np.flatnonzero(status == NODE_REJECTED)
    final = np.full(n, -1, dtype=np.int8)
    source = np.zeros(n, dtype=np.int8)
    rnd = np.zeros(n, dtype=np.int64)
    in_acc = _range_fill(forest, acc, np.ones(len(acc), dtype=np.int64), n) > 0
    in_rej = _range_fill(forest, rej, np.ones(len(rej), dtype=np.int64), n) > 0
    final[in_acc] = 1
    final[in_rej] = 0
    source[in_acc | in_rej] = 1
    if node_round is not None:
        dec = np.concatenate([acc, rej])
        r_pos = _range_fill(forest, dec, node_round[dec].astype(np.int64), n)
        rnd[in_acc | in_rej] = r_pos[in_acc | in_rej]
    if verdict is not None:
        has_v = verdict >= 0
        final[has_v] = verdict[has_v]
        source[has_v] = 2
        if verdict_round is not None:
            rnd[has_v] = verdict_round[has_v]
    direct = ~np.isnan(label_p)
    final[direct] = (label_p[direct] >= 0.5).astype(np.int8)
    source[direct] = 3
    if direct_round is not None:
        rnd[direct] = direct_round[direct]
    rnd[final < 0] = 0
    return final, source, rnd


@pytest.fixture(scope="module")
def forest():
    rng = np.random.default_rng(5)
    n = 2500
    return build_forest(rng.integers(0, 3, n).astype(np.int64), rng.normal(size=(n, 4)).astype(np.float32), rng=rng)


def _frontier(forest, rng, n_cut):
    """Disjoint nodes covering every mask: the roots, split at random ``n_cut`` times."""
    front = list(np.asarray(forest.roots))
    for _ in range(n_cut):
        inner = [i for i, j in enumerate(front) if forest.left[j] >= 0]
        if not inner:
            break
        j = front.pop(inner[int(rng.integers(len(inner)))])
        front += [int(forest.left[j]), int(forest.right[j])]
    return np.array(front, dtype=np.int64)


@pytest.mark.parametrize("seed", range(6))
def test_mask_labels_are_what_they_were(forest, seed):
    rng = np.random.default_rng(seed)
    n = len(forest.order)
    status = np.full(forest.n_nodes, NODE_INACTIVE, dtype=np.int8)
    front = _frontier(forest, rng, 300)
    status[front] = rng.choice([NODE_ACCEPTED, NODE_REJECTED, NODE_OPEN], len(front))
    if seed >= 4:  # nested decided nodes too (no campaign makes them; the result stays the same)
        extra = rng.choice(forest.n_nodes, 200, replace=False)
        status[extra] = rng.choice([NODE_ACCEPTED, NODE_REJECTED], len(extra))
    label_p = np.where(rng.random(n) < 0.2, rng.random(n), np.nan)
    verdict = rng.choice(np.array([-1, -1, -1, 0, 1], dtype=np.int8), n)
    node_round = rng.integers(0, 9, forest.n_nodes).astype(np.int64)
    verdict_round = rng.integers(0, 9, n).astype(np.int64)
    direct_round = rng.integers(0, 9, n).astype(np.int64)
    for args in [(status, label_p), (status, label_p, verdict),
                 (status, label_p, verdict, node_round, verdict_round, direct_round),
                 (status, label_p, None, node_round),
                 (status, label_p, verdict.astype(np.int64), node_round, verdict_round.astype(np.int32), None)]:
        got = mask_labels(forest, *args)
        want = _mask_labels_before(forest, *args)
        assert (got[0] == 1).any() and (got[0] == 0).any()
        for g, w in zip(got, want):
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g, w)
