"""Per-class hierarchical cluster trees (a forest), immutable once built.

Glossary
--------
n
    number of masks (rows of masks.parquet)
m
    number of tree nodes over all classes (a full binary tree per class has
    2 * n_c - 1 nodes; every leaf is one mask)
order : (n,) int64
    mask rows in dendrogram order; classes are contiguous blocks. Position
    ``p`` in ``order`` is a mask's *pos*.
start, end : (m,) int64
    node ``j``'s members are ``order[start[j]:end[j]]``: one contiguous range.
parent, left, right : (m,) int64
    -1 where absent. Node ids are topologically ordered: ``parent[j] < j``.
"""
from .build import build_forest
from .forest import Forest

__all__ = ["Forest", "build_forest"]
