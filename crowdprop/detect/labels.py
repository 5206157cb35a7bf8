"""Label maps: which class index of the detector means which category.

A label map file is a JSON object mapping class indices to names::

    {"1": "person", "2": "car", "3": "dog"}

Index 0 is the background and must not appear; the indices must be exactly
``1 .. K`` (no gaps), so the detector has ``K + 1`` classes. The class index is
also the ``category_id`` written to ``masks.parquet`` and ``categories.parquet``.

With torchvision's COCO weights (``--weights DEFAULT``) the label map comes from
the weights' metadata: 91 classes whose indices are the COCO category ids
(``"N/A"`` entries are ids COCO does not use).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..errors import InputError

__all__ = ["LabelMap", "load_label_map", "label_map_from_names"]


@dataclass(frozen=True)
class LabelMap:
    """Category names of a detector's classes.

    Attributes
    ----------
    names : dict[int, str]
        Class index (= category id, >= 1) to category name; classes the detector
        has but that name no category (COCO's ``N/A``) are left out.
    num_classes : int
        Number of classes of the detector's box predictor, background included.
    source : str
        Where the names came from (a file path or the weights' name).
    """

    names: dict[int, str]
    num_classes: int
    source: str

    def categories(self) -> pd.DataFrame:
        """``categories.parquet`` rows: ``id`` (int64), ``name``, ``supercategory`` ("")."""
        ids = sorted(self.names)
        return pd.DataFrame({
            "id": pd.Series(ids, dtype="int64"),
            "name": pd.Series([self.names[i] for i in ids], dtype="object"),
            "supercategory": pd.Series([""] * len(ids), dtype="object"),
        })


def load_label_map(path: str | Path) -> LabelMap:
    """Read and validate a label map JSON file.

    Raises
    ------
    crowdprop.errors.InputError
        The file is missing or not JSON; not an object; a key is not an integer
        >= 1; a name is not a non-empty string; the indices are not ``1 .. K``.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(p, None, None, "file not found") from None
    except UnicodeDecodeError:
        raise InputError(p, None, None, "not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise InputError(p, f"line {e.lineno} column {e.colno}", None, f"malformed JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise InputError(p, None, None,
                         f"must be a JSON object mapping class index to name, like {{\"1\": \"person\"}}; "
                         f"got {type(data).__name__}")
    if not data:
        raise InputError(p, None, None, "no classes: the object is empty")
    names: dict[int, str] = {}
    for key, name in data.items():
        try:
            idx = int(key.strip())
        except ValueError:
            raise InputError(p, None, key, "class index must be an integer") from None
        if idx == 0:
            raise InputError(p, None, key, "index 0 is the background; classes start at 1")
        if idx < 0:
            raise InputError(p, None, key, "class index must be >= 1")
        if idx in names:
            raise InputError(p, None, key, f"class index {idx} appears twice")
        if not isinstance(name, str) or not name.strip():
            raise InputError(p, None, key, f"name must be a non-empty string, got {name!r}")
        names[idx] = name.strip()
    k = max(names)
    missing = sorted(set(range(1, k + 1)) - set(names))
    if missing:
        raise InputError(p, None, None,
                         f"class indices must be 1..{k} without gaps; missing {missing[:5]}")
    return LabelMap(names=names, num_classes=k + 1, source=str(p))


def label_map_from_names(categories: Sequence[str], *, source: str) -> LabelMap:
    """A label map from a torchvision weights ``meta["categories"]`` list.

    Index 0 (``__background__``) and ``N/A`` entries are not categories.
    """
    names = {i: str(n) for i, n in enumerate(categories)
             if i > 0 and n not in ("N/A", "__background__") and str(n).strip()}
    return LabelMap(names=names, num_classes=len(categories), source=source)
