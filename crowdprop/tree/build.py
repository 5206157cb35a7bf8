"""Build the forest: one hierarchical cluster tree per class.

Small classes (``n_c <= exact_max``) get exact complete linkage on the
embedding's Euclidean distances, the paper's choice (scipy's
``linkage(pdist(x), 'complete')``; the linkage itself is fastcluster's, the same
nearest-neighbour-chain algorithm as scipy's and the same trees, about 1.7 times
faster). It holds all ``n_c (n_c - 1) / 2`` distances as float64: 64 MB at 4,000
masks, 10 GB at 50,000, so keep ``exact_max`` modest.

Larger classes get a scalable two-level build:

1. **Divisive top** (bisecting 2-means): a group larger than ``micro_size`` is
   split in two by 2-means (k-means++ seeding from ``rng``; Lloyd iterations on a
   sample of at most :data:`SAMPLE_ROWS` rows, then :data:`FULL_ITERS` on the whole
   group). Each split is one internal node whose children are the two halves, so
   the top of the tree comes straight from the recursion. Its height is
   ``2 * radius`` (largest distance of a member to the group mean), an upper bound
   on the group's diameter and hence on any complete-linkage merge distance inside
   it. Identical points (no split possible) are halved arbitrarily.
2. **Exact bottom**: every group of at most ``micro_size`` masks gets exact
   complete linkage, and its dendrogram hangs under the group's node.

Heights are then made monotone (a node is at least as high as its children).
BLAS runs single-threaded during the build (its products are memory-bound
matrix-vector products, where BLAS threads cost more than they give).
Cost is ``O(n d log(n / micro_size))`` time for the top and ``O(n * micro_size * d)``
for the bottom, with memory a few copies of the class's ``(n_c, d)`` block, never
``O(n^2)``.

Node ids of the result are in preorder per class (root first, left subtree, right
subtree), so ``parent[j] < j`` and every node's members form one contiguous range
of ``order``. Conversion from linkage matrices is iterative, level by level,
so deep trees need no recursion.
"""
from __future__ import annotations

import logging

import fastcluster
import numpy as np
from scipy.spatial.distance import pdist
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from .forest import Forest

log = logging.getLogger(__name__)

SAMPLE_ROWS = 8192
"""2-means on a group larger than this first converges on a random sample of this size."""
SAMPLE_ITERS = 25
"""Most Lloyd iterations on the sample (or on groups no larger than SAMPLE_ROWS)."""
FULL_ITERS = 3
"""Most Lloyd iterations on the whole group after the sample converged."""


class _Nodes:
    """Preallocated node store in build ids (any order; converted to preorder later)."""

    def __init__(self, size: int):
        self.left = np.full(size, -1, dtype=np.int64)
        self.right = np.full(size, -1, dtype=np.int64)
        self.height = np.zeros(size, dtype=np.float64)
        self.row = np.full(size, -1, dtype=np.int64)  # mask row of a leaf
        self.category = np.zeros(size, dtype=np.int64)
        self.next = 0

    def alloc(self, k: int, category: int) -> np.ndarray:
        ids = np.arange(self.next, self.next + k, dtype=np.int64)
        self.next += k
        self.category[ids] = category
        return ids

    def link(self, rows: np.ndarray, x: np.ndarray, root: int, category: int) -> None:
        """Exact complete linkage of ``x`` (rows ``rows``) hung at node ``root``."""
        m = len(rows)
        if m == 1:
            self.row[root] = rows[0]
            return
        z = fastcluster.linkage(pdist(np.asarray(x, dtype=np.float64)), method="complete", preserve_input=False)
        ids = np.empty(2 * m - 1, dtype=np.int64)
        ids[:-1] = self.alloc(2 * m - 2, category)
        ids[-1] = root
        self.row[ids[:m]] = rows
        inner = ids[m:]
        self.left[inner] = ids[z[:, 0].astype(np.int64)]
        self.right[inner] = ids[z[:, 1].astype(np.int64)]
        self.height[inner] = z[:, 2]


def _lloyd(v: np.ndarray, c1: np.ndarray, c2: np.ndarray, total: np.ndarray, iters: int):
    """2-means Lloyd iterations on ``v`` (m, d) float32; returns centroids and assignment."""
    m = len(v)
    left = None
    for _ in range(iters):
        w = (c1 - c2).astype(np.float32)
        t = 0.5 * (float(c1 @ c1) - float(c2 @ c2))
        new = (v @ w) > t  # closer to c1
        n1 = int(new.sum())
        if n1 == 0 or n1 == m:
            return c1, c2, new
        if left is not None and np.array_equal(new, left):
            break
        left = new
        s1 = left.astype(np.float32) @ v
        c1 = s1.astype(np.float64) / n1
        c2 = (total - s1) / (m - n1)
    return c1, c2, left


def _bisect(v: np.ndarray, sq: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Split ``v`` (m, d) float32 in two; returns (left mask, radius around the mean)."""
    m = len(v)
    total = v.sum(axis=0, dtype=np.float64)
    mean = total / m
    r2 = sq - 2.0 * (v @ mean.astype(np.float32)) + float(mean @ mean)
    radius = float(np.sqrt(max(float(r2.max()), 0.0)))
    if m > SAMPLE_ROWS:
        pick = np.sort(rng.choice(m, SAMPLE_ROWS, replace=False))
        s, ssq = v[pick], sq[pick]
    else:
        s, ssq = v, sq
    i0 = int(rng.integers(len(s)))
    d0 = np.clip(ssq - 2.0 * (s @ s[i0]) + ssq[i0], 0.0, None).astype(np.float64)
    tot = d0.sum()
    left = None
    if tot > 0 and radius > 0:
        i1 = int(rng.choice(len(s), p=d0 / tot))
        c1, c2 = s[i0].astype(np.float64), s[i1].astype(np.float64)
        s_total = s.sum(axis=0, dtype=np.float64) if s is not v else total
        c1, c2, left = _lloyd(s, c1, c2, s_total, SAMPLE_ITERS)
        if s is not v:
            c1, c2, left = _lloyd(v, c1, c2, total, FULL_ITERS)
    if left is None or left.all() or not left.any():
        left = np.arange(m) < m // 2  # no usable split (identical points): halve
    return left, radius


def _scalable(nodes: _Nodes, rows: np.ndarray, x: np.ndarray, category: int, micro_size: int,
              rng: np.random.Generator) -> int:
    """Bisecting 2-means down to ``micro_size`` groups, exact linkage below; ``x`` (float32) is reordered."""
    if not np.all(np.isfinite(x)):
        raise ValueError(f"embedding has non-finite values in class {category}")
    perm = rows.copy()
    sq = np.einsum("ij,ij->i", x, x)
    root = int(nodes.alloc(1, category)[0])
    stack = [(0, len(rows), root)]
    while stack:
        a, b, p = stack.pop()
        if b - a <= micro_size:
            nodes.link(perm[a:b], x[a:b], p, category)
            continue
        v = x[a:b]
        left, radius = _bisect(v, sq[a:b], rng)
        idx = np.concatenate([np.flatnonzero(left), np.flatnonzero(~left)])
        x[a:b] = v[idx]
        perm[a:b] = perm[a:b][idx]
        sq[a:b] = sq[a:b][idx]
        mid = a + int(left.sum())
        lc, rc = nodes.alloc(2, category)
        nodes.left[p], nodes.right[p], nodes.height[p] = lc, rc, 2.0 * radius
        stack.append((mid, b, int(rc)))
        stack.append((a, mid, int(lc)))
    return root


def class_tree(category: int, rows: np.ndarray, x: np.ndarray, exact_max: int, micro_size: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The tree of one class: ``rows`` (its mask rows) with their embedding ``x``.

    Returns ``(left, right, height, row)`` over ``2 m - 1`` nodes in build order, root
    first (node 0); ``row`` is the mask row of a leaf (-1 for inner nodes). Depends on
    its arguments only (one task of :func:`build_forest`'s engine)."""
    m = len(rows)
    nodes = _Nodes(2 * m - 1)
    with threadpool_limits(limits=1, user_api="blas"):
        if m <= exact_max:
            xc = np.asarray(x, dtype=np.float64)
            if not np.all(np.isfinite(xc)):
                raise ValueError(f"embedding has non-finite values in class {category}")
            nodes.link(rows, xc, int(nodes.alloc(1, category)[0]), category)
        else:
            _scalable(nodes, rows, np.array(x, dtype=np.float32), category, micro_size, rng)
    assert nodes.next == len(nodes.left)
    return nodes.left, nodes.right, nodes.height, nodes.row


def _to_forest(nodes: _Nodes, roots: np.ndarray, n: int) -> Forest:
    """Renumber build ids in preorder and lay leaves out in dendrogram order (iterative)."""
    lc, rc, h = nodes.left, nodes.right, nodes.height
    k = len(lc)
    parent = np.full(k, -1, dtype=np.int64)
    depth = np.zeros(k, dtype=np.int32)
    levels = []
    frontier = roots
    d = 0
    while frontier.size:
        depth[frontier] = d
        inner = frontier[lc[frontier] >= 0]
        levels.append(inner)
        parent[lc[inner]] = inner
        parent[rc[inner]] = inner
        frontier = np.concatenate([lc[inner], rc[inner]])
        d += 1
    size = np.ones(k, dtype=np.int64)
    for inner in reversed(levels):
        l_, r_ = lc[inner], rc[inner]
        size[inner] = size[l_] + size[r_]
        h[inner] = np.maximum(h[inner], np.maximum(h[l_], h[r_]))
    pre = np.empty(k, dtype=np.int64)
    start = np.empty(k, dtype=np.int64)
    rs = size[roots]
    pre[roots] = np.concatenate([[0], np.cumsum(2 * rs - 1)[:-1]])
    start[roots] = np.concatenate([[0], np.cumsum(rs)[:-1]])
    for inner in levels:
        l_, r_ = lc[inner], rc[inner]
        pre[l_] = pre[inner] + 1
        pre[r_] = pre[inner] + 2 * size[l_]
        start[l_] = start[inner]
        start[r_] = start[inner] + size[l_]

    leaf = lc < 0
    order = np.empty(n, dtype=np.int64)
    order[start[leaf]] = nodes.row[leaf]

    def remap(ids: np.ndarray) -> np.ndarray:
        return np.where(ids >= 0, pre[np.maximum(ids, 0)], -1)

    def place(values: np.ndarray, dtype) -> np.ndarray:
        out = np.empty(k, dtype=dtype)
        out[pre] = values
        return out

    return Forest(
        order=order,
        category=place(nodes.category, np.int64),
        parent=place(remap(parent), np.int64),
        left=place(remap(lc), np.int64),
        right=place(remap(rc), np.int64),
        start=place(start, np.int64),
        end=place(start + size, np.int64),
        height=place(np.where(leaf, 0.0, h), np.float64),
        depth=place(depth, np.int32),
    )


TASK_MASKS = 65_536
"""Classes are built together in one task until it has this many masks (small classes share)."""


def class_trees(specs: list[tuple]) -> list[tuple]:
    """:func:`class_tree` of each ``(category, rows, x, exact_max, micro_size, rng)``: one task."""
    return [class_tree(*spec) for spec in specs]


def build_forest(
    category_ids: np.ndarray,
    embedding: np.ndarray,
    *,
    exact_max: int = 4000,
    micro_size: int = 256,
    rng: np.random.Generator,
    progress: bool = False,
    engine=None,
) -> Forest:
    """One full binary cluster tree per class over the masks' embedding.

    Parameters
    ----------
    category_ids : (n,) int
        Class of each mask row.
    embedding : (n, d) float
        Euclidean clustering embedding (:func:`crowdprop.features.clustering_embedding`).
    exact_max : int
        Classes with at most this many masks get exact complete linkage; larger
        ones the scalable build (see the module docstring).
    micro_size : int
        Scalable build: groups of at most this many masks get exact linkage.
    rng : numpy.random.Generator
        The only source of randomness: class ``j`` (in ascending category id) draws
        from ``rng.spawn(n_classes)[j]`` (2-means seeding and sampling), so classes can
        be built in any order, anywhere.
    progress : bool
        Show a tqdm bar over masks placed (only when stderr is a terminal).
    engine : crowdprop.engine.Engine, optional
        Builds the classes' trees (:func:`class_tree`), largest first, one task per
        class or per group of small classes (:data:`TASK_MASKS`); when None, the active one (:func:`crowdprop.engine.active`). The forest is
        the same with any engine.

    Returns
    -------
    Forest
        Classes in ascending category id; per class ``2 * n_c - 1`` nodes in
        preorder (``parent[j] < j``), leaves (one mask each) in dendrogram order;
        ``height`` is the merge distance (0 at leaves, monotone towards the root),
        ``depth`` 0 at roots.
    """
    from ..engine import current

    cats = np.asarray(category_ids)
    x = np.asarray(embedding)
    if cats.ndim != 1:
        raise ValueError(f"category_ids must be 1-D, got shape {cats.shape}")
    if x.ndim != 2 or x.shape[0] != cats.shape[0]:
        raise ValueError(f"embedding must be (n, d) with n = {cats.shape[0]}, got shape {x.shape}")
    if exact_max < 1 or micro_size < 1:
        raise ValueError("exact_max and micro_size must be >= 1")
    n = len(cats)
    if n == 0:
        e = np.zeros(0, dtype=np.int64)
        return Forest(order=e, category=e, parent=e, left=e, right=e, start=e, end=e,
                      height=np.zeros(0, dtype=np.float64), depth=np.zeros(0, dtype=np.int32))
    cats = cats.astype(np.int64)
    by_cat = np.argsort(cats, kind="stable")
    classes, first, counts = np.unique(cats[by_cat], return_index=True, return_counts=True)
    rngs = rng.spawn(len(classes))
    sizes = 2 * counts - 1
    base = np.zeros(len(classes), dtype=np.int64)
    np.cumsum(sizes[:-1], out=base[1:])
    total = int(sizes.sum())
    nodes = _Nodes(total)
    nodes.next = total
    order = np.argsort(-counts, kind="stable")  # largest classes first: the slowest start first
    engine = engine or current()

    groups, group = [], []
    for j in order.tolist():  # largest first; small classes share a task
        group.append(j)
        if sum(int(counts[k]) for k in group) >= TASK_MASKS:
            groups.append(group)
            group = []
    if group:
        groups.append(group)

    def tasks():
        for g in groups:
            specs = []
            for j in g:
                rows = by_cat[first[j]:first[j] + counts[j]]
                specs.append((int(classes[j]), rows, x[rows], exact_max, micro_size, rngs[j]))
            yield (specs,)

    with tqdm(total=n, desc="cluster trees", unit="mask", disable=None if progress else True) as bar:
        for g, results in zip(groups, engine.map(class_trees, tasks())):
            for j, (left, right, height, row) in zip(g, results):
                sl = slice(int(base[j]), int(base[j] + sizes[j]))
                nodes.left[sl] = np.where(left >= 0, left + base[j], -1)
                nodes.right[sl] = np.where(right >= 0, right + base[j], -1)
                nodes.height[sl] = height
                nodes.row[sl] = row
                nodes.category[sl] = classes[j]
                bar.update(int(counts[j]))
                log.debug("class %d: %d masks (%s)", classes[j], counts[j],
                          "exact" if counts[j] <= exact_max else "scalable")
    forest = _to_forest(nodes, base, n)
    log.info("built %d cluster trees over %d masks (%d nodes)", len(classes), n, forest.n_nodes)
    return forest
