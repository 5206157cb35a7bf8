"""The immutable forest of per-class cluster trees and its Parquet form."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Forest:
    order: np.ndarray  # (n,) int64 mask rows in dendrogram order, classes contiguous
    category: np.ndarray  # (m,) int64 class of each node
    parent: np.ndarray  # (m,) int64, -1 for roots
    left: np.ndarray  # (m,) int64, -1 for leaves
    right: np.ndarray  # (m,) int64, -1 for leaves
    start: np.ndarray  # (m,) int64
    end: np.ndarray  # (m,) int64
    height: np.ndarray  # (m,) float64 merge distance (0 for leaves)
    depth: np.ndarray  # (m,) int32

    @property
    def n_nodes(self) -> int:
        return len(self.parent)

    @property
    def size(self) -> np.ndarray:
        return self.end - self.start

    @property
    def roots(self) -> np.ndarray:
        return np.flatnonzero(self.parent < 0)

    def members(self, node: int) -> np.ndarray:
        """Mask rows of one node."""
        return self.order[self.start[node]:self.end[node]]

    def children(self, node: int) -> tuple[int, int]:
        return int(self.left[node]), int(self.right[node])

    def is_leaf(self, node) -> np.ndarray:
        return self.left[node] < 0

    def nodes_table(self) -> pd.DataFrame:
        return pd.DataFrame({
            "node_id": np.arange(self.n_nodes, dtype=np.int64),
            "category_id": self.category.astype(np.int64),
            "parent": self.parent.astype(np.int64),
            "left": self.left.astype(np.int64),
            "right": self.right.astype(np.int64),
            "start": self.start.astype(np.int64),
            "end": self.end.astype(np.int64),
            "height": self.height.astype(np.float64),
            "depth": self.depth.astype(np.int32),
        })

    def order_table(self) -> pd.DataFrame:
        return pd.DataFrame({"pos": np.arange(len(self.order), dtype=np.int64), "row": self.order.astype(np.int64)})

    NODE_COLUMNS = ("node_id", "category_id", "parent", "left", "right", "start", "end", "height", "depth")
    """The columns of trees/nodes.parquet (:meth:`nodes_table`)."""

    @classmethod
    def from_tables(cls, nodes: pd.DataFrame, order: pd.DataFrame) -> "Forest":
        return cls.from_columns({c: nodes[c].to_numpy() for c in cls.NODE_COLUMNS},
                                order["pos"].to_numpy(), order["row"].to_numpy())

    @classmethod
    def from_columns(cls, nodes: Mapping[str, np.ndarray], pos: np.ndarray, row: np.ndarray) -> "Forest":
        """A forest from the columns of its two tables (``nodes``: :attr:`NODE_COLUMNS`; ``pos``,
        ``row``: trees/order.parquet). Rows in the order the tables were written (node id, position)
        are taken as they are, without a copy where the arrays have their types already; other
        orders are sorted."""
        def as_type(a, t):
            a = np.asarray(a)
            return a if a.dtype == t else a.astype(t)

        by_pos = _order_of(np.asarray(pos))
        o = as_type(row, np.int64)
        if by_pos is not None:
            o = o[by_pos]
        by_id = _order_of(np.asarray(nodes["node_id"]))

        def col(name, t):
            a = as_type(nodes[name], t)
            return a if by_id is None else a[by_id]

        return cls(
            order=o,
            category=col("category_id", np.int64),
            parent=col("parent", np.int64),
            left=col("left", np.int64),
            right=col("right", np.int64),
            start=col("start", np.int64),
            end=col("end", np.int64),
            height=col("height", np.float64),
            depth=col("depth", np.int32),
        )

    def check(self) -> None:
        """Raise ValueError unless every class tree partitions its masks."""
        n = len(self.order)
        if np.sort(self.order).tolist() != list(range(n)):
            raise ValueError("order is not a permutation of the mask rows")
        m = self.n_nodes
        if m == 0:
            return
        if np.any(self.parent >= np.arange(m)):
            raise ValueError("node ids are not topologically ordered")
        internal = np.flatnonzero(self.left >= 0)
        l, r = self.left[internal], self.right[internal]
        if np.any(self.start[l] != self.start[internal]) or np.any(self.end[l] != self.start[r]) \
                or np.any(self.end[r] != self.end[internal]):
            raise ValueError("children do not tile their parent's range")
        if np.any(self.parent[l] != internal) or np.any(self.parent[r] != internal):
            raise ValueError("parent pointers disagree with children")
        leaves = np.flatnonzero(self.left < 0)
        if np.any(self.size[leaves] != 1):
            raise ValueError("a leaf holds more or less than one mask")


def _order_of(key: np.ndarray) -> np.ndarray | None:
    """The stable sort of ``key``, or None when it is sorted already (the way the tables are written)."""
    if len(key) < 2 or bool(np.all(key[1:] >= key[:-1])):
        return None
    return np.argsort(key, kind="stable")
