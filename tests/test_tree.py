import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

from crowdprop.tree import Forest, build_forest


def _partition_at_k(forest: Forest, root: int, k: int) -> set[frozenset]:
    """Cut one class tree into k clusters by undoing the k-1 highest merges."""
    clusters = [root]
    while len(clusters) < k:
        inner = [c for c in clusters if forest.left[c] >= 0]
        top = max(inner, key=lambda c: (forest.height[c], -c))
        clusters.remove(top)
        clusters.extend(forest.children(top))
    return {frozenset(forest.members(c).tolist()) for c in clusters}


def _check_partitions(forest: Forest, cats: np.ndarray) -> None:
    forest.check()
    n = len(cats)
    classes = np.unique(cats)
    roots = forest.roots
    assert forest.category[roots].tolist() == classes.tolist()  # ascending category id
    assert forest.n_nodes == 2 * n - len(classes)
    for r in roots:
        c = forest.category[r]
        assert sorted(forest.members(r).tolist()) == np.flatnonzero(cats == c).tolist()
    inner = np.flatnonzero(forest.left >= 0)
    for j in inner:
        l_, r_ = forest.children(j)
        ml, mr, mj = set(forest.members(l_).tolist()), set(forest.members(r_).tolist()), set(forest.members(j).tolist())
        assert not (ml & mr) and (ml | mr) == mj
        assert forest.category[l_] == forest.category[j] == forest.category[r_]
        assert forest.depth[l_] == forest.depth[r_] == forest.depth[j] + 1
        assert forest.height[j] >= max(forest.height[l_], forest.height[r_])
    assert np.all(forest.depth[roots] == 0)
    assert np.all(forest.height[forest.left < 0] == 0)
    # each class is one contiguous block of order
    assert np.all(np.diff(cats[forest.order]) >= 0)


@pytest.mark.parametrize("grid", [False, True])
def test_forest_is_the_one_scipys_linkage_builds(monkeypatch, grid):
    """The linkage runs on fastcluster; the forest (exact classes and the micro-clusters of
    the scalable build) is the same array for array as with scipy's linkage, ties included
    (points on a small integer grid have many equal distances)."""
    import fastcluster

    rng = np.random.default_rng(5)
    x = rng.integers(0, 3, size=(900, 3)).astype(np.float64) if grid else rng.normal(size=(900, 5))
    cats = rng.integers(0, 3, size=900)
    cats[:500] = 9  # one class above exact_max: the scalable build with micro-clusters
    args = dict(exact_max=300, micro_size=40)
    ours = build_forest(cats, x, rng=np.random.default_rng(1), **args)
    monkeypatch.setattr(fastcluster, "linkage", lambda d, method, preserve_input=True: linkage(d, method=method))
    theirs = build_forest(cats, x, rng=np.random.default_rng(1), **args)
    for a in ("order", "category", "parent", "left", "right", "start", "end", "height", "depth"):
        assert np.array_equal(getattr(ours, a), getattr(theirs, a)), a
    if grid:  # ties: most merges share their height with others
        assert len(np.unique(ours.height)) < ours.n_nodes // 4


def test_exact_matches_scipy_complete_linkage_partitions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    cats = np.full(60, 7)
    forest = build_forest(cats, x, exact_max=100, rng=np.random.default_rng(0))
    _check_partitions(forest, cats)
    z = linkage(pdist(x), method="complete")
    root = int(forest.roots[0])
    assert forest.height[root] == pytest.approx(z[-1, 2])
    for k in range(2, 9):
        labels = fcluster(z, k, criterion="maxclust")
        want = {frozenset(np.flatnonzero(labels == lab).tolist()) for lab in np.unique(labels)}
        assert _partition_at_k(forest, root, k) == want


@pytest.mark.parametrize("exact_max", [1000, 50])  # exact, then the scalable path
def test_two_separated_blobs_are_the_roots_children(exact_max):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 8))
    b = rng.normal(size=(200, 8)) + 50.0
    x = np.vstack([a, b])
    perm = rng.permutation(500)
    x = x[perm]
    is_b = perm >= 300
    cats = np.zeros(500, dtype=np.int64)
    forest = build_forest(cats, x, exact_max=exact_max, micro_size=32, rng=np.random.default_rng(2))
    _check_partitions(forest, cats)
    root = int(forest.roots[0])
    kids = {frozenset(forest.members(c).tolist()) for c in forest.children(root)}
    assert kids == {frozenset(np.flatnonzero(is_b).tolist()), frozenset(np.flatnonzero(~is_b).tolist())}
    # the root's merge distance spans the gap; children's stay inside a blob
    assert forest.height[root] > 40
    assert max(forest.height[c] for c in forest.children(root)) < 20


def test_scalable_micro_clusters_are_exact_complete_linkage():
    # well separated groups of 10: each becomes one micro-cluster, built by exact linkage
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(8, 5)) * 1000
    x = np.repeat(centers, 10, axis=0) + rng.normal(size=(80, 5))
    cats = np.zeros(80, dtype=np.int64)
    forest = build_forest(cats, x, exact_max=20, micro_size=10, rng=np.random.default_rng(0))
    _check_partitions(forest, cats)
    sizes = forest.size
    for j in np.flatnonzero(sizes == 10):
        rows = np.sort(forest.members(j))
        assert np.all(rows // 10 == rows[0] // 10)  # one group
        z = linkage(pdist(x[rows]), method="complete")
        assert forest.height[j] == pytest.approx(z[-1, 2], rel=1e-4)  # the scalable path works in float32
    assert np.count_nonzero(sizes == 10) == 8


def test_small_classes_and_identical_points():
    cats = np.array([5, 3, 5, 9, 9, 9] + [4] * 40)
    x = np.zeros((46, 3))  # all identical: the scalable path must still split
    forest = build_forest(cats, x, exact_max=4, micro_size=3, rng=np.random.default_rng(0))
    _check_partitions(forest, cats)
    r3 = forest.roots[0]
    assert forest.category[r3] == 3 and forest.size[r3] == 1 and forest.left[r3] == -1


def test_deep_tree_has_no_recursion_limit():
    x = (2.0 ** np.arange(500))[:, None]  # complete linkage adds one point at a time
    cats = np.zeros(500, dtype=np.int64)
    forest = build_forest(cats, x, exact_max=1000, rng=np.random.default_rng(0))
    forest.check()
    assert forest.depth.max() == 499
    deepest_merge = forest.parent[np.argmax(forest.depth)]
    assert sorted(forest.members(deepest_merge).tolist()) == [0, 1]


def test_empty_input():
    forest = build_forest(np.zeros(0, dtype=np.int64), np.zeros((0, 3)), rng=np.random.default_rng(0))
    forest.check()
    assert forest.n_nodes == 0


def test_deterministic_for_a_seed():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3000, 6)).astype(np.float32)
    cats = rng.integers(0, 3, 3000)
    a = build_forest(cats, x, exact_max=200, micro_size=40, rng=np.random.default_rng(9))
    b = build_forest(cats, x, exact_max=200, micro_size=40, rng=np.random.default_rng(9))
    for f in ("order", "parent", "left", "right", "start", "end", "height", "depth", "category"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


@st.composite
def _classes(draw):
    sizes = draw(st.lists(st.sampled_from([1, 2, 3, 5, 9, 17, 40, 70]), min_size=1, max_size=5))
    ids = draw(st.lists(st.integers(-5, 1000), min_size=len(sizes), max_size=len(sizes), unique=True))
    d = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    dup = draw(st.booleans())
    return sizes, ids, d, seed, dup


@settings(max_examples=40, deadline=None)
@given(_classes(), st.integers(2, 12), st.integers(2, 8))
def test_every_class_tree_partitions_its_masks(spec, exact_max, micro_size):
    sizes, ids, d, seed, dup = spec
    rng = np.random.default_rng(seed)
    cats = rng.permutation(np.repeat(ids, sizes))
    x = rng.normal(size=(len(cats), d))
    if dup:  # many exact duplicates
        x = np.round(x)
    forest = build_forest(cats, x, exact_max=exact_max, micro_size=min(micro_size, exact_max),
                          rng=np.random.default_rng(seed))
    _check_partitions(forest, cats)


def test_forest_is_the_same_built_in_worker_processes_in_any_class_order(monkeypatch):
    """Each class's tree depends on its rows and its own generator only: two worker
    processes give the forest the single process gives, array for array."""
    from crowdprop.engine import make_engine
    from crowdprop.tree import build

    monkeypatch.setattr(build, "TASK_MASKS", 100)  # several tasks: the 700-mask class alone, the rest shared

    rng = np.random.default_rng(4)
    sizes = [700, 40, 350, 1, 90]
    cats = np.repeat([9, 2, 5, 7, 3], sizes)
    rng.shuffle(cats)
    x = rng.normal(size=(len(cats), 6)).astype(np.float32)
    one = build_forest(cats, x, exact_max=100, micro_size=30, rng=np.random.default_rng(1))
    with make_engine("local", workers=2) as engine:
        two = build_forest(cats, x, exact_max=100, micro_size=30, rng=np.random.default_rng(1), engine=engine)
    for name in ("order", "category", "parent", "left", "right", "start", "end", "height", "depth"):
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name), err_msg=name)
    _check_partitions(one, cats)
