"""raw_yes, cluster_labels and aggregate_labels count over the rows answered; they give what the per-mask
bincounts gave, bit for bit."""
import numpy as np
import pandas as pd
import pytest

from crowdprop.campaign.evidence import cluster_labels, raw_yes
from crowdprop.campaign.loop import aggregate_labels
from crowdprop.schema import QuestionKind

KINDS = [k.value for k in QuestionKind]


def _answers(seed, m=4000, n=900):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"mask_row": rng.integers(0, n, m), "label": rng.integers(0, 2, m),
                         "used": rng.random(m) < 0.9, "is_gold": rng.random(m) < 0.1,
                         "kind": rng.choice(KINDS, m), "worker_id": rng.choice(["a", "b", "c"], m),
                         "round": rng.integers(1, 5, m)}), n


def _raw_yes_before(answers, n, kinds):
    out = np.full(n, np.nan)
    if len(answers) == 0:
        return out
    sel = answers["used"].astype(bool).to_numpy() & np.isin(answers["kind"].astype(str).to_numpy(), list(kinds))
    rows = answers["mask_row"].to_numpy(np.int64)[sel]
    lab = answers["label"].to_numpy(np.float64)[sel]
    cnt = np.bincount(rows, minlength=n)
    yes = np.bincount(rows, weights=lab, minlength=n)
    has = cnt > 0
    out[has] = yes[has] / cnt[has]
    return out


@pytest.mark.parametrize("seed", range(4))
def test_shares_are_bit_for_bit_what_they_were(seed):
    answers, n = _answers(seed)
    if seed == 3:
        answers = answers.iloc[:0]
    kinds = {QuestionKind.CLUSTER.value, QuestionKind.RANDOM.value}
    want = _raw_yes_before(answers, n, kinds)
    got = raw_yes(answers, n, kinds)
    np.testing.assert_array_equal(got, want)
    assert got.tobytes() == want.tobytes()
    label_p = np.random.default_rng(seed).random(n)
    np.testing.assert_array_equal(cluster_labels(label_p, answers), np.where(~np.isnan(want), label_p, np.nan))
    # aggregate_labels("raw"): non-gold, non-audit usable answers
    plain = answers[answers["used"] & (answers["kind"] != QuestionKind.AUDIT.value) & ~answers["is_gold"]]
    agg = aggregate_labels(answers, n, method="raw")
    ref = _raw_yes_before(plain.assign(kind="x"), n, {"x"})
    assert agg.tobytes() == ref.tobytes()
    if seed < 3:
        assert np.isfinite(agg).sum() > 100 and ((agg > 0) & (agg < 1)).any()
