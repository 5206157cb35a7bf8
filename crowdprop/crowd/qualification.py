"""The campaign's qualification test: its golds, its MTurk form, and its replay.

Quality control on MTurk
------------------------
Every MTurk crowd (local endpoint included) gets the campaign qualifications of
:class:`~crowdprop.crowd.mturk.MTurkBackend`, named after the campaign id and
found again by name in a later process: a soft block is a qualification the
campaign's HIT types exclude (``DoesNotExist``), and, when ``[quality]
qualification_size > 0`` and the gold pool is not empty, the qualification test
(:func:`qualification_test`: the same golds as the in-process replay's
:func:`qualification_results`) is a qualification type with an answer key that
the HIT types require. On a local endpoint the simulated workers take that test
and are graded exactly as :func:`qualification_results` scores them, so a replay
keeps the same workers out through either crowd. A local endpoint without
simulated workers (a browser does the HITs) has no test.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..errors import StateError
from . import mturk as _mturk

if TYPE_CHECKING:
    from ..campaign.store import RunDir
    from ..replay.workers import WorkerPool


def truth_of(run: RunDir) -> np.ndarray:
    """Replay truth per mask row: IoU with the best same-class ground truth above ``correct_iou``."""
    iou = run.mask_meta["gt_iou"].to_numpy(np.float64)
    if not np.isfinite(iou).any():
        raise StateError(f"{run.path}: a simulated crowd needs ground truth, and this run has none")
    return iou > run.config.campaign.correct_iou


def qualification_test_golds(run: RunDir) -> pd.DataFrame:
    """The golds of the campaign's qualification test, in test order.

    ``[quality] qualification_size`` golds (all of them when the pool is
    smaller) drawn once from the gold pool with a generator seeded by the
    campaign seed; empty when the test is off or there are no golds.

    Returns
    -------
    DataFrame with columns ``mask_row``, ``mask_id``, ``label`` (int, 1 = correct), (n,)
    """
    from ..replay.workers import rng_for

    q = run.config.quality
    golds = run.golds
    empty = pd.DataFrame({"mask_row": pd.Series(dtype=np.int64), "mask_id": pd.Series(dtype=np.int64),
                          "label": pd.Series(dtype=np.int64)})
    if q.qualification_size <= 0 or len(golds) == 0:
        return empty
    rng = rng_for("qualification-test", run.config.campaign.seed)
    take = min(q.qualification_size, len(golds))
    test = golds.iloc[np.sort(rng.choice(len(golds), take, replace=False))]
    rows = test["mask_row"].to_numpy(np.int64)
    return pd.DataFrame({"mask_row": rows, "mask_id": run.mask_meta["mask_id"].to_numpy(np.int64)[rows],
                         "label": test["label"].to_numpy(np.int64)})


def qualification_test(run: RunDir, *, duration_s: int = 1800) -> _mturk.QualificationTest | None:
    """The campaign's :class:`~crowdprop.crowd.mturk.QualificationTest` for MTurk (None when off)."""
    golds = qualification_test_golds(run)
    if len(golds) == 0:
        return None
    return _mturk.QualificationTest(mask_rows=tuple(int(r) for r in golds["mask_row"]),
                                    labels=tuple(bool(x) for x in golds["label"]),
                                    pass_share=run.config.quality.qualification_pass,
                                    duration_s=duration_s)


def qualification_results(run: RunDir, pool: WorkerPool) -> dict[str, tuple[int, int]]:
    """Replay of the qualification test: worker id -> (questions, answered right).

    Every worker takes the same test (:func:`qualification_test_golds`, like an
    MTurk qualification type with an answer key) before their first HIT: each
    question is answered ``pool.answer(w, "qualification:mask-<mask_id>", truth)``
    and scored against the gold's label, exactly as the local MTurk endpoint
    grades the test of :func:`qualification_test`. Empty when the test is off
    or there are no golds.
    """
    test = qualification_test_golds(run)
    if len(test) == 0:
        return {}
    truth = truth_of(run)
    keys = [_mturk.qualification_answer_key(_mturk.qualification_question_id(m)) for m in test["mask_id"]]
    out = {}
    for w, wid in enumerate(pool.worker_ids):
        right = sum(pool.answer(w, k, bool(truth[r])) == bool(lab)
                    for k, r, lab in zip(keys, test["mask_row"], test["label"]))
        out[wid] = (len(test), int(right))
    return out
