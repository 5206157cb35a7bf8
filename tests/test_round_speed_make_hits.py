"""make_hits builds its questions table column by column; it gives the table, HITs, gold counts and random
draws it gave when it built a record per question."""
import numpy as np
import pandas as pd
import pytest

from crowdprop.config import CrowdSection
from crowdprop.crowd.base import HitRequest, Question
from crowdprop.hits.batching import QUESTION_COLUMNS, _GoldPicker, hit_token, make_hits, reward_for
from crowdprop.schema import NODE_KIND, QuestionKind


def _make_hits_before(asks, *, round_, campaign_id, campaign_name, cfg, gold_pool, gold_used, rng):
    """make_hits as it was (commit 40e32ea)."""
    rows = [(int(node), int(r)) for node in sorted(asks) for r in asks[node]]
    if not rows:
        return pd.DataFrame(columns=QUESTION_COLUMNS), []
    arr = np.array(rows, dtype=np.int64).reshape(-1, 2)
    arr = arr[rng.permutation(len(arr))]
    golds_per_hit = cfg.golds_per_hit if len(gold_pool) else 0
    per_hit = cfg.questions_per_hit - golds_per_hit
    records = []
    hits = []
    qn = 0
    picker = _GoldPicker(gold_pool, gold_used) if golds_per_hit else None
    for b, s in enumerate(range(0, len(arr), per_hit)):
        chunk = arr[s:s + per_hit]
        g_pos = picker.pick(golds_per_hit, rng) if picker is not None else np.zeros(0, dtype=np.int64)
        g_rows = picker.rows[g_pos].tolist() if picker is not None else []
        g_labels = picker.labels[g_pos].tolist() if picker is not None else []
        n_total = len(chunk) + len(g_pos)
        gold_pos = set(rng.choice(n_total, size=len(g_pos), replace=False).tolist()) if len(g_pos) else set()
        token = hit_token(campaign_id, round_, b)
        ci = gi = 0
        qs = []
        for pos in range(n_total):
            qid = f"r{round_:05d}q{qn:07d}"
            qn += 1
            if pos in gold_pos:
                g_row, g_label = g_rows[gi], g_labels[gi]
                gi += 1
                rec = (qid, round_, b, pos, g_row, -1, True, g_label, token, QuestionKind.GOLD.value)
                qs.append(Question(qid, g_row, True, bool(g_label)))
            else:
                node, mrow = chunk[ci]
                ci += 1
                rec = (qid, round_, b, pos, int(mrow), int(node), False, -1, token,
                       NODE_KIND.get(int(node), QuestionKind.CLUSTER.value))
                qs.append(Question(qid, int(mrow), False, None))
            records.append(rec)
        hits.append(HitRequest(token=token, round=round_, batch=b, questions=tuple(qs),
                               assignments=cfg.assignments_per_hit, reward_usd=reward_for(n_total, cfg),
                               campaign=campaign_name))
    if picker is not None:
        picker.write_back()
    q = pd.DataFrame(records, columns=QUESTION_COLUMNS)
    q["gold_label"] = q["gold_label"].astype(np.int8)
    return q, hits


def _asks(seed):
    rng = np.random.default_rng(seed)
    asks = {int(k): np.sort(rng.choice(20_000, int(rng.integers(0, 40)), replace=False)).astype(np.int64)
            for k in rng.choice(50_000, 60, replace=False)}
    asks[-2] = np.arange(11, dtype=np.int64) + 30_000  # audits
    asks[-4] = [30_100, 30_101, 30_102]  # random questions, as a list
    asks[-3] = np.zeros(0, dtype=np.int64)
    return asks


@pytest.mark.parametrize("case", ["golds", "yes-heavy pool", "no golds per hit", "no pool", "nothing asked",
                                  "one short HIT"])
def test_make_hits_gives_what_it_gave(case):
    cfg = CrowdSection()
    asks = _asks(3)
    pool = pd.DataFrame({"mask_row": np.arange(40_000, 40_030), "label": np.arange(30) % 2})
    used = {40_001: 2, 40_004: 1}
    if case == "yes-heavy pool":
        pool = pd.DataFrame({"mask_row": np.arange(40_000, 40_012), "label": [1] * 11 + [0]})
    elif case == "no golds per hit":
        cfg = CrowdSection(golds_per_hit=0)
    elif case == "no pool":
        pool = pool.iloc[:0]
    elif case == "nothing asked":
        asks = {5: np.zeros(0, dtype=np.int64)}
    elif case == "one short HIT":
        asks = {7: np.array([3, 1, 2])}
    out = []
    for fn in (make_hits, _make_hits_before):
        u = dict(used)
        rng = np.random.default_rng(11)
        q, hits = fn(asks, round_=4, campaign_id="cid", campaign_name="name", cfg=cfg, gold_pool=pool, gold_used=u,
                     rng=rng)
        out.append((q, hits, u, rng.random(3)))
    (q, hits, u, after), (q0, hits0, u0, after0) = out
    pd.testing.assert_frame_equal(q, q0, check_exact=True)
    assert list(q.dtypes) == list(q0.dtypes)
    assert hits == hits0
    assert u == u0
    np.testing.assert_array_equal(after, after0)  # the same random draws were taken
    if case == "golds":
        assert len(hits) > 10 and q["is_gold"].sum() == 5 * len(hits)
        assert set(q["kind"]) == {"gold", "audit", "random", "cluster"}
