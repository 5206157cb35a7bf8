"""HITs from a round's questions (crowdprop.hits.batching): golds picked by array match their definition."""
import numpy as np
import pandas as pd

from crowdprop.config import CrowdSection
from crowdprop.hits.batching import _GoldPicker, make_hits


def pick_golds(pool, n, used, rng):
    """The definition, one HIT at a time over the pool as a table (how crowdprop picked golds
    before the array picker): n golds balanced between yes and no, least-used first (ties at
    random), the rest from the other side when one runs short; ``used`` is updated."""
    if n <= 0 or len(pool) == 0:
        return pool.iloc[:0]
    picks = []
    n_yes = (n + int(rng.integers(2))) // 2
    for label, want in ((1, n_yes), (0, n - n_yes)):
        sub = pool[pool["label"] == label]
        if len(sub) == 0:
            continue
        counts = np.array([used.get(int(r), 0) for r in sub["mask_row"]])
        idx = np.argsort(counts + rng.random(len(sub)) * 0.5, kind="stable")[: min(want, len(sub))]
        picks.append(sub.iloc[idx])
    out = pd.concat(picks) if picks else pool.iloc[:0]
    if len(out) < n:
        rest = pool[~pool["mask_row"].isin(out["mask_row"])]
        counts = np.array([used.get(int(r), 0) for r in rest["mask_row"]])
        idx = np.argsort(counts + rng.random(len(rest)) * 0.5, kind="stable")[: n - len(out)]
        out = pd.concat([out, rest.iloc[idx]])
    for r in out["mask_row"]:
        used[int(r)] = used.get(int(r), 0) + 1
    return out


def _pool(n_yes, n_no, seed=0):
    rng = np.random.default_rng(seed)
    rows = rng.permutation(10_000)[: n_yes + n_no]
    labels = np.r_[np.ones(n_yes, np.int64), np.zeros(n_no, np.int64)]
    order = rng.permutation(len(rows))
    return pd.DataFrame({"mask_row": rows[order], "label": labels[order]})


def test_the_array_picker_picks_what_pick_golds_picks_hit_after_hit():
    # balanced, lopsided (the fill-from-the-other-side path), one-sided, with earlier use counts
    for n_yes, n_no, n in ((30, 30, 5), (40, 3, 5), (12, 0, 4), (2, 2, 5)):
        pool = _pool(n_yes, n_no)
        start = {int(r): int(c) for r, c in zip(pool["mask_row"][:7], [3, 0, 1, 2, 5, 1, 1])}
        used_a, used_b = dict(start), dict(start)
        rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
        picker = _GoldPicker(pool, used_b)
        for _ in range(40):
            a = pick_golds(pool, n, used_a, rng_a)
            pos = picker.pick(n, rng_b)
            assert picker.rows[pos].tolist() == a["mask_row"].tolist()
            assert picker.labels[pos].tolist() == a["label"].tolist()
        picker.write_back()
        assert used_b == used_a
        assert rng_a.random() == rng_b.random()  # the same draws were taken


def test_make_hits_puts_balanced_least_used_golds_in_every_hit():
    pool = _pool(20, 20)
    cfg = CrowdSection(questions_per_hit=12, golds_per_hit=4)
    used: dict[int, int] = {}
    asks = {3: np.arange(200, 280), 7: np.arange(500, 540)}
    q, hits = make_hits(asks, round_=2, campaign_id="c", campaign_name="n", cfg=cfg, gold_pool=pool,
                        gold_used=used, rng=np.random.default_rng(0))
    assert len(hits) == 15  # 120 questions, 8 per HIT
    gold_label = dict(zip(pool["mask_row"], pool["label"]))
    for h in hits:
        golds = [x for x in h.questions if x.is_gold]
        assert len(golds) == 4 and len(h.questions) == 12
        assert sum(gold_label[x.mask_row] for x in golds) == 2  # two of each
        assert all(x.gold_label == bool(gold_label[x.mask_row]) for x in golds)
    # 60 golds over a pool of 40, least used first: every gold used once or twice
    assert sum(used.values()) == 60 and set(used.values()) == {1, 2} and len(used) == 40
    g = q[q["is_gold"]]
    assert sorted(g["mask_row"].value_counts().to_dict().items()) == sorted(used.items())
    assert sorted(q.loc[~q["is_gold"], "mask_row"]) == list(range(200, 280)) + list(range(500, 540))
