"""The declared schema of every Parquet table of the run directory.

Each table is written with its schema (:func:`arrow_table`), whatever the data: a column
with nothing but nulls (an assignment's ``flag``, a round without blocks) keeps its real
type instead of Parquet's null type, and an integer column stays an integer. Money is
integer cents everywhere. Every table that names a mask by its row (``mask_row``, the
position in ``masks.parquet``) also carries its ``mask_id``.

The round tables live in one folder per table, one file per committed round::

    state/<table>/round-00001.parquet

Each file holds its own ``round`` column (int64); folder and file names are not
``key=value`` pairs, so pandas, ``pyarrow.dataset`` (with or without hive partitioning)
and DuckDB (with or without ``hive_partitioning``) all read ``state/<table>`` with the
types declared here. docs/run-directory.md describes every file and column; it holds
:func:`markdown` verbatim (``python -m crowdprop.campaign.tables`` prints it).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

SCHEMA_VERSION = 2
"""``schema_version`` in campaign.json. 1 (or none): crowdprop 0.1's layout (``state/round=0000k/``
folders, null-typed columns, no ``mask_id``, no labels.parquet); 2: this layout."""

I8, I32, I64, F64, BOOL, STR = pa.int8(), pa.int32(), pa.int64(), pa.float64(), pa.bool_(), pa.string()

_TYPE_NAMES = {I8: "int8", I32: "int32", I64: "int64", F64: "float64", BOOL: "bool", STR: "string"}

_ROUND = ("round", I64, "the round this row belongs to (1, 2, ...)")
_MASK_ROW = ("mask_row", I64, "row of the mask in masks.parquet (0-based)")
_MASK_ID = ("mask_id", I64, "the mask's id (masks.parquet `mask_id`)")

COLUMNS: dict[str, list[tuple[str, pa.DataType, str]]] = {
    # ------------------------------------------------------------------ written once, by init
    "masks": [
        ("mask_id", I64, "the prediction's `id`, or its index in the predictions file"),
        ("image_id", I64, "image (images.parquet `id`)"),
        ("category_id", I64, "class (categories.parquet `id`)"),
        ("score", F64, "detector confidence in [0, 1]"),
        ("pred_iou", F64, "predicted mask quality in [0, 1]; NaN when the detector gave none"),
        ("height", I32, "image height in pixels (RLE `size`)"),
        ("width", I32, "image width in pixels"),
        ("rle", STR, "compressed COCO RLE counts of the mask"),
        ("area", F64, "mask area in pixels"),
        ("bbox_x", F64, "COCO box of the mask: left, pixels"),
        ("bbox_y", F64, "top, pixels"),
        ("bbox_w", F64, "width, pixels"),
        ("bbox_h", F64, "height, pixels"),
        ("gt_iou", F64, "IoU with the best same-class ground-truth instance (NaN: no ground truth)"),
        ("gt_ann_id", I64, "id of that instance (gt.parquet `id`; -1: none)"),
    ],
    "images": [
        ("id", I64, "image id"),
        ("file_name", STR, "file name in the images folder (empty without ground truth)"),
        ("height", I64, "pixels"),
        ("width", I64, "pixels"),
        ("coco_url", STR, "the image's URL when the annotations give one (null or empty: none)"),
    ],
    "categories": [
        ("id", I64, "category id"),
        ("name", STR, "class name"),
        ("supercategory", STR, "COCO supercategory (empty or null: none)"),
    ],
    "gt": [
        ("id", I64, "ground-truth annotation id"),
        ("image_id", I64, "image (images.parquet `id`)"),
        ("category_id", I64, "class (categories.parquet `id`)"),
        ("iscrowd", I64, "COCO `iscrowd` (0 or 1)"),
        ("rle", STR, "compressed COCO RLE counts"),
        ("height", I64, "image height in pixels"),
        ("width", I64, "image width in pixels"),
        ("area", F64, "pixels"),
    ],
    "golds": [
        _MASK_ROW, _MASK_ID,
        ("label", I64, "the known answer: 1 the mask is correct, 0 it is not"),
    ],
    "trees/nodes": [
        ("node_id", I64, "node (cluster) id, 0-based"),
        ("category_id", I64, "the class of the node's tree"),
        ("parent", I64, "parent node (-1: a root)"),
        ("left", I64, "left child (-1: a leaf)"),
        ("right", I64, "right child (-1: a leaf)"),
        ("start", I64, "the node's masks are trees/order.parquet rows `start` to `end - 1`"),
        ("end", I64, "end of that range (exclusive); `end - start` is the cluster size"),
        ("height", F64, "linkage distance at which the node was merged (0 for leaves)"),
        ("depth", I32, "depth in its tree (roots 0)"),
    ],
    "trees/order": [
        ("pos", I64, "position in the forest's leaf order"),
        ("row", I64, "the mask at that position (its row in masks.parquet)"),
        _MASK_ID,
    ],
    # ------------------------------------------------------------------ rewritten at each round commit
    "labels": [
        _MASK_ROW, _MASK_ID,
        ("image_id", I64, "image (images.parquet `id`)"),
        ("category_id", I64, "class (categories.parquet `id`)"),
        ("label", STR, "final label: `accepted`, `rejected` or `open` (not decided yet)"),
        ("source", STR, "how it was decided: `cluster` (the verdict of an accepted or rejected cluster holding "
                        "it), `verifier` (the target policy's learned verifier), `direct` (its own aggregated "
                        "answers), `none` (open)"),
        ("round", I64, "the round whose decision gave the mask its label (0: open)"),
    ],
    # ------------------------------------------------------------------ round tables: state/<name>/round-k.parquet
    "questions": [
        ("question_id", STR, "question id, unique in the campaign"),
        _ROUND,
        ("batch", I64, "the HIT (batch) of the round that carries the question"),
        ("position", I64, "position of the question in its HIT"),
        _MASK_ROW, _MASK_ID,
        ("node_id", I64, "the cluster it samples (trees/nodes.parquet); -1 gold, -2 audit, -3 active, -4 random"),
        ("is_gold", BOOL, "a gold question (known answer)"),
        ("gold_label", I8, "its known answer: 1 yes, 0 no, -1 not a gold"),
        ("token", STR, "the HIT's token (hits.parquet `token`)"),
        ("kind", STR, "why it was asked: cluster, gold, audit, active, random"),
    ],
    "hits": [
        ("token", STR, "content token of the HIT (campaign, run directory and what it asks)"),
        ("hit_id", STR, "the crowd's HIT id"),
        _ROUND,
        ("batch", I64, "batch number within the round"),
        ("n_questions", I64, "questions in the HIT, golds included"),
        ("assignments", I64, "workers asked (MaxAssignments)"),
        ("reward_cents", I64, "reward per assignment, US cents"),
        ("n_submitted", I64, "assignments received for it in this round"),
        ("expired", BOOL, "taken off the market before every slot was filled"),
    ],
    "assignments": [
        ("assignment_id", STR, "the crowd's assignment id"),
        ("hit_id", STR, "its HIT"),
        ("token", STR, "its HIT's token"),
        ("worker_id", STR, "the worker"),
        ("round", I64, "the round it was received in"),
        ("hit_round", I64, "the round its HIT was published in (earlier than `round` for late work)"),
        ("n_questions", I64, "questions in its HIT"),
        ("n_gold", I64, "gold questions in its HIT"),
        ("n_gold_correct", I64, "golds answered correctly"),
        ("work_seconds", F64, "seconds between accepting and submitting"),
        ("flag", STR, "why the submission could not be read (null: it could)"),
        ("approved", BOOL, "approved and paid (MTurk's final state)"),
        ("judged_ok", BOOL, "the rules' verdict (MTurk may have approved work they reject)"),
        ("settled_by", STR, "`crowdprop`, or `mturk` for work MTurk approved on its own"),
        ("reason", STR, "why the rules rejected it, or a note on how it was settled (null: none)"),
        ("feedback", STR, "the message sent to the worker with the approval or rejection (null: none sent)"),
        ("reward_cents", I64, "reward paid, US cents (0 unless approved)"),
        ("fee_cents", I64, "MTurk fee paid, US cents (0 unless approved)"),
    ],
    "answers": [
        ("question_id", STR, "the question (questions.parquet)"),
        ("round", I64, "the round it was received in"),
        _MASK_ROW, _MASK_ID,
        ("worker_id", STR, "the worker"),
        ("assignment_id", STR, "the assignment it came in"),
        ("hit_id", STR, "the HIT"),
        ("label", I8, "the answer: 1 yes (the mask is correct), 0 no"),
        ("is_gold", BOOL, "answer to a gold question"),
        ("used", BOOL, "counts toward labels (the assignment passed the rules and could be read)"),
        ("kind", STR, "why the question was asked: cluster, gold, audit, active, random"),
    ],
    "decisions": [
        _ROUND,
        ("node_id", I64, "the cluster (trees/nodes.parquet)"),
        ("decision", STR, "accept, reject, split, verify, wait or reopen"),
        ("free", BOOL, "a split made without questions (a cluster too large or too poor to sample)"),
        ("n_labeled", I64, "members with answers when it was decided"),
        ("yes", F64, "sum of their labels (the share of yes per member)"),
        ("est_mean", F64, "estimated precision of the cluster (NaN for free splits)"),
        ("est_lo", F64, "lower end of its interval"),
        ("est_hi", F64, "upper end of its interval"),
        ("quality", F64, "mean predicted quality of its members"),
        ("size", I64, "masks in the cluster"),
        ("category_id", I64, "its class"),
    ],
    "spend": [
        _ROUND,
        ("assignment_id", STR, "the assignment paid"),
        ("kind", STR, "`reward`, `fee` or `bonus`"),
        ("cents", I64, "amount, US cents"),
    ],
    "blocks": [
        ("worker_id", STR, "the worker blocked"),
        _ROUND,
        ("kind", STR, "`qualification` (failed the test), `soft` (too many rejections) or `hard`"),
    ],
    "audits": [
        _ROUND,
        _MASK_ROW, _MASK_ID,
        ("source", I8, "how the audited mask had been decided: 1 cluster, 2 verifier, 3 direct"),
        ("label", I8, "its label then: 1 accepted, 0 rejected"),
        ("decided_round", I64, "the round that decided it"),
        ("frame", I64, "size of its stratum when drawn (masks of that source and label decided in that round)"),
        ("weight", F64, "sampling weight when drawn: frame / audits drawn from the stratum (estimates recompute it)"),
    ],
    "verdicts": [
        _ROUND,
        _MASK_ROW, _MASK_ID,
        ("verdict", I8, "the verifier's verdict: 1 accept, 0 reject, -1 withdrawn"),
        ("p", F64, "its probability that the mask is correct"),
    ],
    "controls": [
        _ROUND,
        ("verifier_threshold", F64, "the verifier's accept threshold in force"),
        ("risk_tolerance", F64, "the cluster risk tolerance in force"),
        ("verifier_fitted", BOOL, "the verifier was fitted this round"),
        ("verifier_train", I64, "masks it was trained on"),
        ("note", STR, "what audits changed (empty: nothing)"),
    ],
    "hits_done": [
        ("hit_id", STR, "a HIT for which nothing more can arrive"),
        ("token", STR, "its token"),
        ("hit_round", I64, "the round it was published in"),
        ("round", I64, "the round it was found done in"),
    ],
}
"""Every column of every table: name, Arrow type, meaning (docs/run-directory.md)."""

ROUND_TABLES = ("questions", "hits", "assignments", "answers", "decisions", "spend", "blocks", "audits", "verdicts",
                "controls", "hits_done")
"""The tables every round commits (``state/<name>/round-k.parquet``)."""

SCHEMAS: dict[str, pa.Schema] = {
    name: pa.schema([pa.field(c, t) for c, t, _ in cols], metadata={"crowdprop.table": name,
                                                                     "crowdprop.schema_version": str(SCHEMA_VERSION)})
    for name, cols in COLUMNS.items()}

LABEL_NAMES = {1: "accepted", 0: "rejected", -1: "open"}
"""labels.parquet ``label`` by final-label code (:func:`crowdprop.policy.controller.mask_labels`)."""
SOURCE_NAMES = {0: "none", 1: "cluster", 2: "verifier", 3: "direct"}
"""labels.parquet ``source`` by source code (:func:`crowdprop.policy.controller.mask_labels`)."""


def arrow_table(name: str, df: pd.DataFrame, mask_ids: np.ndarray | None = None) -> pa.Table:
    """``df`` as table ``name`` with its declared schema: columns in the declared order and
    cast to the declared types (nulls keep the column's type). ``mask_ids`` (masks.parquet
    ``mask_id`` by row) fills ``mask_id`` from ``mask_row`` when ``df`` lacks it. A column
    that is not declared is a ValueError, and so is a declared one missing from a non-empty
    table: every table has one schema."""
    schema = SCHEMAS[name]
    if "mask_id" in schema.names and "mask_id" not in df.columns and len(df):
        if mask_ids is None:
            raise ValueError(f"table '{name}': mask_id needs the masks' ids")
        row = "row" if name == "trees/order" else "mask_row"
        df = df.assign(mask_id=np.asarray(mask_ids, dtype=np.int64)[df[row].to_numpy(np.int64)])
    undeclared = [c for c in df.columns if c not in schema.names]
    if undeclared:
        raise ValueError(f"table '{name}': column '{undeclared[0]}' is not declared in crowdprop/campaign/tables.py "
                         "(add it there and to docs/run-directory.md)")
    arrays = []
    for f in schema:
        if f.name in df.columns:
            arrays.append(pa.array(df[f.name], type=f.type, from_pandas=True))
        elif len(df) == 0:
            arrays.append(pa.array([], type=f.type))
        else:
            raise ValueError(f"table '{name}': column '{f.name}' missing")
    return pa.Table.from_arrays(arrays, schema=schema)


def empty(name: str) -> pd.DataFrame:
    """An empty pandas frame of table ``name`` (its columns and types)."""
    return SCHEMAS[name].empty_table().to_pandas()


def labels_frame(masks: pd.DataFrame, final: np.ndarray, source: np.ndarray, decided_round: np.ndarray) -> pd.DataFrame:
    """labels.parquet from the final labels of :func:`crowdprop.policy.controller.mask_labels`."""
    return labels_table(masks, final, source, decided_round).to_pandas()


LABELS_DIGEST = "crowdprop.labels_digest"
"""labels.parquet schema metadata: :func:`labels_digest` of what the file holds, so that a
label set already written is not written again (:meth:`crowdprop.campaign.store.RunDir.write_labels`)."""


def labels_digest(final: np.ndarray, source: np.ndarray, decided_round: np.ndarray) -> str:
    """A digest of the final labels, their sources and rounds (the columns of labels.parquet that change)."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for a, t in ((final, np.int8), (source, np.int8), (decided_round, np.int64)):
        a = np.ascontiguousarray(a, dtype=t)
        h.update(len(a).to_bytes(8, "little"))
        h.update(a.tobytes())
    return h.hexdigest()


def _coded(codes: np.ndarray, names: dict[int, str], lo: int) -> pa.Array:
    """Codes ``lo .. lo + len(names) - 1`` as the strings ``names`` gives them (Arrow, no Python strings)."""
    idx = np.asarray(codes, dtype=np.int64) - lo
    if len(idx) and (idx.min() < 0 or idx.max() >= len(names)):
        raise ValueError(f"codes outside {sorted(names)}")
    dictionary = pa.array([names[lo + k] for k in range(len(names))], type=STR)
    return pa.DictionaryArray.from_arrays(pa.array(idx.astype(np.int8)), dictionary).cast(STR)


LABELS_WRITE = {"compression": "zstd", "use_dictionary": ["label", "source", "category_id", "round"],
                "column_encoding": {c: "DELTA_BINARY_PACKED" for c in ("mask_row", "mask_id", "image_id")}}
"""How labels.parquet is written (``pyarrow.parquet.write_table`` options): the id columns delta-coded,
which at 1M masks writes in about half the time of the defaults, into a third of the bytes."""


def labels_table(masks: pd.DataFrame, final: np.ndarray, source: np.ndarray, decided_round: np.ndarray, *,
                 digest: str | None = None) -> pa.Table:
    """labels.parquet as an Arrow table with its declared schema (``masks``: the masks table, its
    ``mask_id``, ``image_id`` and ``category_id`` columns), its :func:`labels_digest` in the schema
    metadata (``digest``: that digest, computed already). Built from the label and source codes
    without a Python string per mask."""
    n = len(masks)
    final = np.asarray(final, dtype=np.int64)
    if not (len(final) == len(source) == len(decided_round) == n):
        raise ValueError(f"labels of {len(final)}/{len(source)}/{len(decided_round)} masks for {n} masks")
    schema = SCHEMAS["labels"]
    arrays = [pa.array(np.arange(n, dtype=np.int64)),
              pa.array(masks["mask_id"].to_numpy(np.int64)),
              pa.array(masks["image_id"].to_numpy(np.int64)),
              pa.array(masks["category_id"].to_numpy(np.int64)),
              _coded(final, LABEL_NAMES, -1),
              _coded(source, SOURCE_NAMES, 0),
              pa.array(np.asarray(decided_round, dtype=np.int64))]
    meta = dict(schema.metadata or {})
    meta[LABELS_DIGEST.encode()] = (digest or labels_digest(final, source, decided_round)).encode()
    return pa.Table.from_arrays(arrays, schema=schema.with_metadata(meta))


def type_name(t: pa.DataType) -> str:
    return _TYPE_NAMES[t]


def kinds(name: str) -> dict[str, str]:
    """``{column: "text" | "integer" | "number"}`` of table ``name`` (booleans count as integers)."""
    out = {}
    for f in SCHEMAS.get(name, pa.schema([])):
        out[f.name] = "text" if pa.types.is_string(f.type) else "number" if pa.types.is_floating(f.type) else "integer"
    return out


def markdown(name: str) -> str:
    """The column table of ``name`` as docs/run-directory.md holds it."""
    lines = ["| column | type | meaning |", "|---|---|---|"]
    lines += [f"| `{c}` | {type_name(t)} | {doc} |" for c, t, doc in COLUMNS[name]]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - prints the column tables for docs/run-directory.md
    for table in COLUMNS:
        print(f"### {table}\n\n{markdown(table)}\n")
