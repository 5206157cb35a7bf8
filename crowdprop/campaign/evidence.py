"""What a campaign knows about its masks, read from the committed round tables.

Answers come in kinds (:class:`crowdprop.schema.QuestionKind`); each feeds a
different use:

label_p
    The mask's own label: every usable non-gold answer except audits
    (:func:`crowdprop.campaign.loop.aggregate_labels`).
cluster_p
    ``label_p`` restricted to masks asked as a cluster sample or uniformly at random:
    the labels that estimate a cluster's precision. Actively chosen masks are
    not a uniform sample of their cluster, so they label themselves only.
yes_p
    Share of "correct" among every usable non-gold answer, audits included: what the
    verifier learns from.
verdicts
    The verifier's mask-by-mask verdicts (last one per mask wins; -1 withdraws).
controls
    The target policy's settings that audits adjust: the verifier's accept threshold
    and the cluster risk tolerance, one row per round.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..schema import QuestionKind

VERDICT_COLUMNS = ["round", "mask_row", "verdict", "p"]
CONTROL_COLUMNS = ["round", "verifier_threshold", "risk_tolerance", "verifier_fitted", "verifier_train",
                   "note"]


def answer_kinds(answers: pd.DataFrame) -> np.ndarray:
    """The ``kind`` of each answer; tables written before kinds existed hold cluster and gold answers."""
    if "kind" in answers:
        return answers["kind"].astype(str).to_numpy()
    return np.where(answers["is_gold"].astype(bool), QuestionKind.GOLD.value, QuestionKind.CLUSTER.value)


def own_answers(answers: pd.DataFrame | None) -> int:
    """Usable answers to the verifier's own questions (active and random): what it has learned
    from single masks it chose, not from cluster samples."""
    if answers is None or len(answers) == 0:
        return 0
    k = answer_kinds(answers)
    used = answers["used"].astype(bool).to_numpy()
    return int((used & np.isin(k, [QuestionKind.ACTIVE.value, QuestionKind.RANDOM.value])).sum())


SETTLE_SHARE = 0.05
"""On small sets the verifier's settle gate is at most this share of the masks (rounded up)."""


def settle_after(setting: int, n_masks: int) -> int:
    """Answers to its own questions the verifier needs before it settles masks: ``setting``
    (``[policy] verifier_settle_after``), at most :data:`SETTLE_SHARE` of the masks, so that a
    small set (the 997-mask sample asks 85 such questions in its whole campaign) is not left open."""
    return int(min(setting, np.ceil(SETTLE_SHARE * n_masks)))


def share_per_row(rows: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Per mask row (``n`` of them), the mean of ``labels`` over its entries in ``rows`` (NaN: none).
    Counted over the rows answered, not bins for every mask (the same sums, added in the same order)."""
    out = np.full(n, np.nan)
    asked, inv = np.unique(rows, return_inverse=True)
    cnt = np.bincount(inv, minlength=len(asked))
    yes = np.bincount(inv, weights=np.asarray(labels, dtype=np.float64), minlength=len(asked))
    out[asked] = yes / cnt
    return out


def _usable_of_kinds(answers: pd.DataFrame, kinds: set[str]) -> np.ndarray:
    return answers["used"].astype(bool).to_numpy() & np.isin(answer_kinds(answers), list(kinds))


def raw_yes(answers: pd.DataFrame, n: int, kinds: set[str]) -> np.ndarray:
    """Per mask row, the share of usable answers of the given kinds saying correct (NaN: none)."""
    if answers is None or len(answers) == 0:
        return np.full(n, np.nan)
    sel = _usable_of_kinds(answers, kinds)
    return share_per_row(answers["mask_row"].to_numpy(np.int64)[sel], answers["label"].to_numpy(np.float64)[sel], n)


def _asked(answers: pd.DataFrame, n: int, kinds: set[str]) -> np.ndarray:
    """Per mask row, whether it has a usable answer of the given kinds (where :func:`raw_yes` is not NaN)."""
    out = np.zeros(n, dtype=bool)
    if answers is None or len(answers) == 0:
        return out
    out[answers["mask_row"].to_numpy(np.int64)[_usable_of_kinds(answers, kinds)]] = True
    return out


def cluster_labels(label_p: np.ndarray, answers: pd.DataFrame) -> np.ndarray:
    """``label_p`` where the mask was asked as a cluster sample or at random, NaN elsewhere."""
    asked = _asked(answers, len(label_p), {QuestionKind.CLUSTER.value, QuestionKind.RANDOM.value})
    return np.where(asked, label_p, np.nan)


def verdict_arrays(verdicts: pd.DataFrame, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Current verifier verdict (1 / 0 / -1), its round, and the probability it was given with."""
    v = np.full(n, -1, dtype=np.int8)
    rnd = np.zeros(n, dtype=np.int64)
    p = np.full(n, np.nan)
    if verdicts is not None and len(verdicts):
        last = verdicts.drop_duplicates("mask_row", keep="last")
        rows = last["mask_row"].to_numpy(np.int64)
        v[rows] = last["verdict"].to_numpy(np.int8)
        rnd[rows] = last["round"].to_numpy(np.int64)
        p[rows] = last["p"].to_numpy(np.float64)
    return v, rnd, p


def node_rounds(decisions: pd.DataFrame, n_nodes: int) -> np.ndarray:
    """Per node, the round of its last decision (0: none)."""
    out = np.zeros(n_nodes, dtype=np.int64)
    if decisions is not None and len(decisions):
        last = decisions.drop_duplicates("node_id", keep="last")
        out[last["node_id"].to_numpy(np.int64)] = last["round"].to_numpy(np.int64)
    return out


def direct_rounds(answers: pd.DataFrame, n: int) -> np.ndarray:
    """Per mask row, the last round with a usable answer that labels it (not gold, not audit)."""
    out = np.zeros(n, dtype=np.int64)
    if answers is None or len(answers) == 0:
        return out
    k = answer_kinds(answers)
    sel = answers["used"].astype(bool).to_numpy() & ~np.isin(k, [QuestionKind.GOLD.value, QuestionKind.AUDIT.value])
    np.maximum.at(out, answers["mask_row"].to_numpy(np.int64)[sel], answers["round"].to_numpy(np.int64)[sel])
    return out


NOISE_PRIOR = (4.0, 1.0)
"""Pseudo-answers (right, wrong) of the crowd-noise prior: mean accuracy 0.8, worth five golds."""


def crowd_noise(answers: pd.DataFrame | None, golds: pd.DataFrame,
                prior: tuple[float, float] = NOISE_PRIOR) -> tuple[float, float, float, float]:
    """Beta posteriors of the crowd's sensitivity P(yes | correct) and specificity
    P(no | wrong), pooled over usable answers to gold questions: (a_sens, b_sens, a_spec, b_spec).

    ``prior`` = (right, wrong) pseudo-answers for each: a weak belief that workers are right
    more often than not. With a flat prior, before any gold is answered, sensitivity and
    specificity would both be 0.5: the crowd would look like coin flips, Youden's J zero, and
    a yes-rate target mapped through them meaningless (a cluster at 13 of 15 "yes" then looked
    certainly above a 0.90 target)."""
    right, wrong = prior
    if answers is None or len(answers) == 0 or len(golds) == 0:
        return right, wrong, right, wrong
    g = answers[answers["used"].astype(bool) & answers["is_gold"].astype(bool)]
    truth = golds.drop_duplicates("mask_row").set_index("mask_row")["label"]
    t = truth.reindex(g["mask_row"]).to_numpy()
    lab = g["label"].to_numpy()
    ok = ~np.isnan(t.astype(float))
    t, lab = t[ok].astype(int), lab[ok].astype(int)
    return (right + float(((t == 1) & (lab == 1)).sum()), wrong + float(((t == 1) & (lab == 0)).sum()),
            right + float(((t == 0) & (lab == 0)).sum()), wrong + float(((t == 0) & (lab == 1)).sum()))


def noise_means(noise: tuple[float, float, float, float]) -> tuple[float, float]:
    """Posterior means of (sensitivity, specificity)."""
    a_s, b_s, a_p, b_p = noise
    return a_s / (a_s + b_s), a_p / (a_p + b_p)
