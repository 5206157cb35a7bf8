"""The immutable forest of per-class cluster trees and its Parquet form."""
from __future__ import annotations

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

    @classmethod
    def from_tables(cls, nodes: pd.DataFrame, order: pd.DataFrame) -> "Forest":
        o = order.sort_values("pos")["row"].to_numpy(np.int64)
        nodes = nodes.sort_values("node_id")
        return cls(
            order=o,
            category=nodes["category_id"].to_numpy(np.int64),
            parent=nodes["parent"].to_numpy(np.int64),
            left=nodes["left"].to_numpy(np.int64),
            right=nodes["right"].to_numpy(np.int64),
            start=nodes["start"].to_numpy(np.int64),
            end=nodes["end"].to_numpy(np.int64),
            height=nodes["height"].to_numpy(np.float64),
            depth=nodes["depth"].to_numpy(np.int32),
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
