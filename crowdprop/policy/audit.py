"""Audits: an independent uniform sample of what was decided without a direct answer,
and the design-based estimate of the accepted set's precision built from it.

Why: a cluster accepted because its sample looked good is, on average, worse than
its sample (among many borderline clusters tested, the lucky ones pass). Any
estimate built from the answers that drove a decision inherits that luck, and the
bias grows with the number of decisions. An audit sample drawn after the decision,
uniformly within each decision source, is unbiased by construction.

Glossary
--------
source : (n,) int8
    How each mask got its current label: 0 open, 1 a cluster verdict (the tree),
    2 the verifier (a learned model, mask by mask), 3 its own direct answer.
decided_round : (n,) int32
    The round whose decisions gave the mask its current label (0: open).
stratum
    (decided round, source, label): the masks one round decided one way. In round
    ``r`` every mask decided before ``r`` is in the sampling frame; the round's audits
    go to the strata furthest under their share of all audits (a stratum's share is
    its size), drawn uniformly without replacement among its masks not audited yet.
    A stratum decided early, when a round's few questions set a small budget, is
    topped up by later rounds.
estimator
    Per source, the Hajek estimate of the yes-rate of its accepted masks,
    ``phi = sum(w y) / sum(w)`` over the audits of masks still labeled as when they
    were drawn, each weighted by its stratum's size *now* over the stratum's valid
    audits (post-stratified: a stratum whose masks the controls re-opened speaks for
    the masks it still has), with the effective sample size ``(sum w)^2 / sum w^2``;
    worker error is removed with the crowd's gold-measured sensitivity and
    specificity, ``theta = (phi - (1 - spec)) / (sens + spec - 1)``. The accepted set's
    precision is ``sum_s N_s theta_s / sum_s N_s`` at the point estimates; its interval
    is Monte Carlo over Beta posteriors of every phi, sens and spec. A source with
    accepted masks and no audit yet counts as 1/2 with ``theta ~ U(0, 1)`` in the
    draws: unaudited masks widen the interval instead of being trusted.

roles
    A policy that acts on audits (the ``target`` policy re-opens clusters whose audits
    say no, tightens sources and classes whose audits fall short) would bias an
    estimate built from the same audits: the masks whose audits said no leave the
    accepted set, and the audits that stay are the lucky ones. So each audit has a role,
    fixed by a hash of its round and mask (:func:`control_role`): about
    :data:`CONTROL_SHARE` of them steer the controls and the rest estimate; neither half
    sees the other's answers, and what the controls remove is independent of the
    estimating half. A policy that never acts on audits (``paper``) estimates from all.

Pure functions; randomness only through the generator passed in.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..campaign.evidence import noise_means

OPEN_SOURCE, CLUSTER, VERIFIER, DIRECT = 0, 1, 2, 3
SOURCE_NAMES = {CLUSTER: "cluster", VERIFIER: "verifier", DIRECT: "direct"}
AUDIT_COLUMNS = ["round", "mask_row", "source", "label", "decided_round", "frame", "weight"]
REJECT_AUDIT_WEIGHT = 0.25
"""Rejected masks are audited at a quarter of the rate of accepted ones: they do not
change the precision of what is delivered, only what was thrown away."""


CONTROL_SHARE = 1.0 / 3.0
"""Share of audits that steer the target policy's controls (the rest estimate precision)."""


def control_role(round_, mask_row) -> np.ndarray:
    """Whether each audit (its round and mask row) steers the controls rather than estimates.

    A fixed hash (splitmix64 of both numbers), so a resumed campaign and the report give every
    audit the same role without storing it; about :data:`CONTROL_SHARE` of audits are controls."""
    with np.errstate(over="ignore"):
        x = (np.asarray(mask_row, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
             + np.asarray(round_, dtype=np.uint64) * np.uint64(0xD1B54A32D192ED03))
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53) < CONTROL_SHARE


def audit_roles(ok: pd.DataFrame, acts: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split :func:`valid_audits` rows into (estimating, controlling) halves.

    ``acts``: whether the policy acts on audits; when it does not, every audit estimates
    and none controls."""
    if not acts or len(ok) == 0:
        return ok, ok.iloc[:0]
    ctl = control_role(ok["round"].to_numpy(np.int64), ok["mask_row"].to_numpy(np.int64))
    key = ["decided_round", "source", "label"]
    n_all = ok.groupby(key)["mask_row"].transform("size").to_numpy(np.float64)

    def part(sel: np.ndarray) -> pd.DataFrame:
        # each half keeps its stratum's total weight (weight = frame / audits drawn in this half)
        g = ok[sel]
        n_part = g.groupby(key)["mask_row"].transform("size").to_numpy(np.float64)
        return g.assign(weight=g["weight"].to_numpy(np.float64) * n_all[sel] / n_part).reset_index(drop=True)

    return part(~ctl), part(ctl)


VALID_COLUMNS = ["round", "mask_row", "source", "label", "decided_round", "weight", "yes"]


def stratum_key(source, label, decided_round) -> np.ndarray:
    """One integer per (decided round, source, label): the audit strata."""
    return ((np.asarray(decided_round, dtype=np.int64) * 4 + np.asarray(source, dtype=np.int64)) * 2
            + np.asarray(label, dtype=np.int64))


def stratum_parts(key) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (decided round, source, label) of stratum keys: the inverse of :func:`stratum_key`."""
    key = np.asarray(key, dtype=np.int64)
    return key // 8, (key // 2) % 4, key % 2


def current_strata(final: np.ndarray, source: np.ndarray, decided_round: np.ndarray) -> np.ndarray:
    """Masks per stratum key (:func:`stratum_key`) as they are labeled now (open masks count nowhere)."""
    final = np.asarray(final)
    decided = (final == 0) | (final == 1)
    return np.bincount(stratum_key(np.asarray(source)[decided], final[decided],
                                   np.asarray(decided_round)[decided]))


def plan_audits(final: np.ndarray, source: np.ndarray, decided_round: np.ndarray, *, round_: int,
                budget: int, min_per_stratum: int, rng: np.random.Generator,
                audited: pd.DataFrame | None = None) -> pd.DataFrame:
    """Draw this round's audit sample from every mask decided before it without its own answer.

    Strata: (decided round, source, label) over masks decided in rounds ``< round_`` whose
    label did not come from their own answer... except accepted direct masks, which are
    audited with a second, independent answer. Each stratum's share of all audits is its size
    as labeled now (rejected strata weighted by :data:`REJECT_AUDIT_WEIGHT`); ``budget`` audits
    go to the strata in proportion to how far their audits so far (``audited``: every audit
    planned before, whose mask is still in the stratum it was drawn from) fall short of that
    share once this round's are added. So a stratum decided in an early round, when the round's
    few questions set a small budget, keeps getting audits in later rounds until it has its
    share, instead of keeping the handful it got once. The strata decided in round
    ``round_ - 1`` get at least ``min_per_stratum`` each; no stratum gets more than its masks not
    audited yet. Returns :data:`AUDIT_COLUMNS` (``frame`` = stratum size now, ``weight`` =
    frame / drawn this round; the estimator recomputes weights, :func:`valid_audits`).
    """
    empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                          zip(AUDIT_COLUMNS, ["int64", "int64", "int8", "int8", "int64", "int64", "float64"])})
    final = np.asarray(final)
    source = np.asarray(source).astype(np.int64)
    decided_round = np.asarray(decided_round).astype(np.int64)
    frame = (((final == 1) & np.isin(source, (CLUSTER, VERIFIER, DIRECT)))
             | ((final == 0) & np.isin(source, (CLUSTER, VERIFIER)))) & (decided_round < round_)
    rows = np.flatnonzero(frame)
    if not len(rows) or budget <= 0:
        return empty
    keys = stratum_key(source[rows], final[rows], decided_round[rows])
    order = np.argsort(keys, kind="stable")
    rows, keys = rows[order], keys[order]
    strata, first, size = np.unique(keys, return_index=True, return_counts=True)
    # audits so far of masks still in their stratum, per stratum
    done = np.zeros(len(rows), dtype=bool)
    if audited is not None and len(audited):
        a_rows = audited["mask_row"].to_numpy(np.int64)
        a_key = stratum_key(audited["source"], audited["label"], audited["decided_round"])
        pos = np.full(len(final), -1, dtype=np.int64)
        pos[rows] = np.arange(len(rows))
        at = pos[a_rows]
        mine = (at >= 0) & (keys[at] == a_key)
        done[at[mine]] = True
    have = np.add.reduceat(done.astype(np.int64), first)
    free = size - have
    s_round, s_source, s_label = stratum_parts(strata)
    wt = np.where(s_label == 1, 1.0, REJECT_AUDIT_WEIGHT)
    share = size * wt / (size * wt).sum()
    want = np.maximum(share * (have.sum() + budget) - have, 0.0)
    take = want / want.sum() * budget if want.sum() > 0 else np.zeros(len(strata))
    newest = s_round == round_ - 1
    take = np.where(newest, np.maximum(np.round(take), min_per_stratum), np.round(take)).astype(np.int64)
    take = np.minimum(take, free)
    out = []
    for j, (i, m, n_h) in enumerate(zip(first.tolist(), size.tolist(), take.tolist())):
        if n_h <= 0:
            continue
        cand = rows[i:i + m][~done[i:i + m]]
        pick = np.sort(rng.choice(cand, size=int(n_h), replace=False))
        out.append(pd.DataFrame({"round": round_, "mask_row": pick.astype(np.int64), "source": np.int8(s_source[j]),
                                 "label": np.int8(s_label[j]), "decided_round": np.int64(s_round[j]),
                                 "frame": np.int64(m), "weight": m / float(n_h)}))
    if not out:
        return empty
    return pd.concat(out, ignore_index=True)[AUDIT_COLUMNS]


@dataclass
class Estimate:
    mean: float
    lo: float
    hi: float
    n_masks: int
    n_audits: int
    by_source: dict

    def as_dict(self) -> dict:
        return {"est": self.mean, "lo": self.lo, "hi": self.hi, "masks": self.n_masks, "audits": self.n_audits,
                "by_source": self.by_source}


def valid_audits(audits: pd.DataFrame, answers: pd.DataFrame, final: np.ndarray, source: np.ndarray,
                 decided_round: np.ndarray) -> pd.DataFrame:
    """Answered audits of masks still labeled as when they were drawn: :data:`VALID_COLUMNS`
    (``yes``: the share of usable audit answers saying correct).

    ``weight`` is post-stratified: a stratum's masks as labeled *now* over its valid audits, the
    same for each audit of the stratum. The weight stored when an audit was drawn (its frame then
    over the audits drawn) goes stale as the controls re-open masks of the stratum and as later
    rounds audit it again: a stratum that lost most of its masks would keep its old weight and
    speak for masks no longer in the accepted set."""
    if audits is None or len(audits) == 0 or answers is None or len(answers) == 0:
        return pd.DataFrame(columns=VALID_COLUMNS)
    a = answers[answers["used"].astype(bool) & (answers["kind"] == "audit")]
    if len(a) == 0:
        return pd.DataFrame(columns=VALID_COLUMNS)
    yes = a.groupby(["round", "mask_row"])["label"].mean().rename("yes").reset_index()
    m = audits.merge(yes, on=["round", "mask_row"], how="inner")
    rows = m["mask_row"].to_numpy(np.int64)
    still = ((source[rows] == m["source"].to_numpy()) & (final[rows] == m["label"].to_numpy())
             & (decided_round[rows] == m["decided_round"].to_numpy()))
    m = m.loc[still].reset_index(drop=True)
    key = stratum_key(m["source"], m["label"], m["decided_round"])
    if len(m):
        size = current_strata(final, source, decided_round)
        _, inv, count = np.unique(key, return_inverse=True, return_counts=True)
        m["weight"] = size[key] / count[inv].astype(np.float64)
    m["decided_round"] = m["decided_round"].astype(np.int64)
    return m[VALID_COLUMNS]


def audited_precision(final: np.ndarray, source: np.ndarray, audits_ok: pd.DataFrame,
                      noise: tuple[float, float, float, float], *, subset: np.ndarray | None = None,
                      label: int = 1, credible: float = 0.95, rng: np.random.Generator,
                      draws: int = 4000) -> Estimate:
    """Design-based precision of the masks with ``final == label`` (in ``subset``).

    ``audits_ok`` from :func:`valid_audits`; ``noise`` = Beta parameters
    ``(a_sens, b_sens, a_spec, b_spec)`` of the crowd's sensitivity and specificity.
    With ``label = 0`` it is the share of correct masks among the rejected ones.
    For many groups at once (classes) see :func:`audit_stats_by_group` and
    :func:`estimate_from_stats`: the same numbers and draws without a pass over every
    mask per group.
    """
    group = np.zeros(len(final), dtype=np.int64)
    if subset is not None:
        group[~np.asarray(subset, dtype=bool)] = 1
    stats = audit_stats_by_group(final, source, audits_ok, group, 2 if subset is not None else 1, label=label)
    return estimate_from_stats(stats, 0, noise, credible=credible, rng=rng, draws=draws)


@dataclass
class AuditStats:
    """Per group and decision source, what :func:`estimate_from_stats` needs: every array is
    ``(n_groups, 4)``, indexed by source code (column 0, open masks, unused).

    masks : masks with the label asked for; audits : their valid audits;
    phi_hat : Hajek yes-rate ``sum(w y) / sum(w)`` of those audits (NaN: none);
    n_eff : effective sample size ``(sum w)^2 / sum w^2`` (NaN: none)."""
    masks: np.ndarray
    audits: np.ndarray
    phi_hat: np.ndarray
    n_eff: np.ndarray


def audit_stats_by_group(final: np.ndarray, source: np.ndarray, audits_ok: pd.DataFrame, group: np.ndarray,
                         n_groups: int, *, label: int = 1) -> AuditStats:
    """:class:`AuditStats` of the masks with ``final == label`` for each group (``group``: per
    mask row, a code in ``[0, n_groups)``) in one pass over the masks and one over the audits.

    The audits of one (group, source) are a contiguous slice after a stable sort, in the order
    they have in ``audits_ok``, so the sums are the ones a filter per group gives, bit for bit."""
    group = np.asarray(group, dtype=np.int64)
    keep = np.asarray(final) == label
    masks = np.bincount(group[keep] * 4 + np.asarray(source)[keep].astype(np.int64),
                        minlength=4 * n_groups).reshape(n_groups, 4)
    audits = np.zeros((n_groups, 4), dtype=np.int64)
    phi_hat = np.full((n_groups, 4), np.nan)
    n_eff = np.full((n_groups, 4), np.nan)
    if len(audits_ok):
        a_ok = audits_ok[audits_ok["label"] == label]
        rows = a_ok["mask_row"].to_numpy(np.int64)
        key = group[rows] * 4 + a_ok["source"].to_numpy(np.int64)
        order = np.argsort(key, kind="stable")
        key = key[order]
        w = a_ok["weight"].to_numpy(np.float64)[order]
        wy = w * a_ok["yes"].to_numpy(np.float64)[order]
        w2 = w ** 2
        cells, first, count = np.unique(key, return_index=True, return_counts=True)
        for k, i, m in zip(cells.tolist(), first.tolist(), count.tolist()):
            g, s = divmod(k, 4)
            sw = w[i:i + m].sum()
            audits[g, s] = m
            phi_hat[g, s] = float(wy[i:i + m].sum() / sw)
            n_eff[g, s] = float(sw ** 2 / w2[i:i + m].sum())
    return AuditStats(masks, audits, phi_hat, n_eff)


def estimate_from_stats(stats: AuditStats, g: int, noise: tuple[float, float, float, float], *,
                        credible: float = 0.95, rng: np.random.Generator, draws: int = 4000) -> Estimate:
    """:func:`audited_precision` of group ``g`` from its :class:`AuditStats`: the same draws from
    ``rng`` in the same order (sensitivity, specificity, then one per source with masks)."""
    n_by = stats.masks[g]
    n_total = int(n_by.sum())
    if n_total == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, 0, {})
    sens = rng.beta(noise[0], noise[1], draws)
    spec = rng.beta(noise[2], noise[3], draws)
    youden = np.maximum(sens + spec - 1.0, 0.05)
    # The point estimate is the design-based one (the Hajek yes-rate corrected with the golds'
    # mean sensitivity and specificity); the mean of the draws would be pulled toward 1/2 by
    # the Beta's prior. A source's corrected rate is clipped to [0, 1] only where it is shown:
    # summed unclipped, a source near 1 on a few dozen audits (its noisy rate over 1 a third of
    # the time) does not pull the accepted set's estimate down by a point; the total is clipped.
    sens_m, spec_m = noise_means(noise)
    youden_m = max(sens_m + spec_m - 1.0, 0.05)
    tail = (1.0 - credible) / 2.0
    acc = np.zeros(draws)
    point = 0.0
    by_source: dict[str, dict] = {}
    n_aud = 0
    for s, name in SOURCE_NAMES.items():
        n_s = int(n_by[s])
        if n_s == 0:
            continue
        m = int(stats.audits[g, s])
        if m == 0:
            theta = rng.uniform(0.0, 1.0, draws)
            theta_hat = 0.5
            by_source[name] = {"masks": n_s, "audits": 0, "est": None, "lo": None, "hi": None}
        else:
            phi_hat = float(stats.phi_hat[g, s])
            n_eff = float(stats.n_eff[g, s])
            phi = rng.beta(phi_hat * n_eff + 0.5, (1.0 - phi_hat) * n_eff + 0.5, draws)
            theta = (phi - (1.0 - spec)) / youden
            theta_hat = (phi_hat - (1.0 - spec_m)) / youden_m
            lo, hi = np.clip(np.quantile(theta, [tail, 1.0 - tail]), 0.0, 1.0)
            by_source[name] = {"masks": n_s, "audits": m, "est": min(max(theta_hat, 0.0), 1.0),
                               "lo": float(lo), "hi": float(hi)}
            n_aud += m
        acc += n_s * theta
        point += n_s * theta_hat
    prec = np.clip(acc / n_total, 0.0, 1.0)
    lo, hi = np.quantile(prec, [tail, 1.0 - tail])
    return Estimate(min(max(point / n_total, 0.0), 1.0), float(lo), float(hi), n_total, n_aud, by_source)


def short_classes(final: np.ndarray, source: np.ndarray, audits_ok: pd.DataFrame,
                  noise: tuple[float, float, float, float], category: np.ndarray, classes, *, target: float,
                  confidence: float, min_audits: int, rng: np.random.Generator) -> list[tuple[int, Estimate]]:
    """Classes whose accepted masks fall short of ``target``: audited estimate and its one-sided
    lower bound at ``confidence`` both under it, on at least ``min_audits`` audits (with fewer,
    every lower bound is under the target and acting on it would stop every class before it
    could be measured). ``category``: class per mask row; ``classes``: the ones to check."""
    out: list[tuple[int, Estimate]] = []
    credible = 2.0 * confidence - 1.0
    classes = [int(c) for c in classes]
    if not classes:
        return out
    # one pass for all classes (group i: classes[i]; the rest: the last group), then each class's
    # draws from the shared rng in the order of ``classes``, as one audited_precision call per class
    uniq, first = np.unique(np.asarray(classes, dtype=np.int64), return_index=True)
    category = np.asarray(category, dtype=np.int64)
    pos = np.clip(np.searchsorted(uniq, category), 0, len(uniq) - 1)
    group = np.where(uniq[pos] == category, first[pos], len(classes))
    stats = audit_stats_by_group(final, source, audits_ok, group, len(classes) + 1)
    for i, c in enumerate(classes):
        e = estimate_from_stats(stats, int(first[np.searchsorted(uniq, c)]), noise, credible=credible, rng=rng)
        if short_source(e.as_dict(), target, min_audits):
            out.append((c, e))
    return out


def short_source(src: dict | None, target: float, min_audits: int) -> bool:
    """Whether a decision source (an entry of :attr:`Estimate.by_source`) falls short of ``target``:
    its audited lower bound and its estimate both under it, on at least ``min_audits`` audits.

    With a handful of audits the lower bound alone is always under the target, and so, with one
    or two audits saying no, is the estimate: acting on that shut the verifier of a 100k-mask
    ``mixed`` campaign down in its first rounds (its threshold raised from 0.92 to 0.98 on a few
    controlling audits, 99 masks accepted in all) while its accepts were 0.92-0.97 precise."""
    return bool(src and src.get("lo") is not None and src["audits"] >= min_audits
                and src["lo"] < target and src["est"] < target)


def lower_bound(est: dict | None, confidence: float) -> float | None:
    """The one-sided lower bound at ``confidence`` is the two-sided interval's lower end at
    ``2 * confidence - 1``; callers pass the interval computed at that level."""
    if not est or est.get("lo") is None:
        return None
    return float(est["lo"])
