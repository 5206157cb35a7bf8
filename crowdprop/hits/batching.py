"""Batching questions into HITs with gold questions mixed in (pure)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import CrowdSection
from ..crowd.base import Fees, HitRequest, Question
from ..schema import NODE_KIND, QuestionKind

QUESTION_COLUMNS = ["question_id", "round", "batch", "position", "mask_row", "node_id", "is_gold", "gold_label", "token",
                    "kind"]


def hit_token(campaign_id: str, round_: int, batch: int) -> str:
    """Provisional token of (campaign, round, batch) while a round is planned; the round loop
    replaces it with :func:`content_token` before anything is published."""
    token = f"{campaign_id}-r{round_:05d}-b{batch:05d}"
    if len(token) > 64:
        raise ValueError("campaign id too long for a 64-character request token")
    return token


def content_token(campaign_id: str, nonce: str, hit: HitRequest) -> str:
    """``UniqueRequestToken`` naming what a HIT contains: a hash of the campaign id, the run
    directory's nonce, the round, the reward, the assignments and every question (id, mask,
    gold label, in order). Two HITs share a token only if they ask the same thing of the same
    campaign in the same run directory; at most 64 characters."""
    import hashlib
    import json

    body = json.dumps([campaign_id, nonce, hit.round, hit.batch, hit.assignments, hit.reward_cents,
                       [[q.question_id, int(q.mask_row), bool(q.is_gold),
                         None if q.gold_label is None else bool(q.gold_label)] for q in hit.questions]],
                      separators=(",", ":"))
    digest = hashlib.blake2b(body.encode(), digest_size=12).hexdigest()
    token = f"{campaign_id}-r{hit.round}-{digest}"
    if len(token) > 64:
        raise ValueError("campaign id too long for a 64-character request token")
    return token


def reward_cents_for(n_questions: int, cfg: CrowdSection) -> int:
    """Reward of one assignment in cents: ``reward_usd`` for a full HIT, pro rata for a short one
    (rounded half up, at least 1 cent)."""
    from decimal import ROUND_HALF_UP, Decimal

    exact = Decimal(str(cfg.reward_usd)) * 100 * n_questions / cfg.questions_per_hit
    return max(1, int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP)))


def reward_for(n_questions: int, cfg: CrowdSection) -> float:
    """:func:`reward_cents_for` in dollars (what a HIT request and a worker page show)."""
    return reward_cents_for(n_questions, cfg) / 100


class _GoldPicker:
    """Golds for the HITs of one round from one pool (``mask_row, label``; label 1 = the mask is
    correct): per HIT ``n`` golds balanced between yes and no, least-used first (ties at random);
    when one side runs short, the rest from the other side. The pool's rows, labels and use
    counts are held as arrays, so a HIT's golds cost no pandas filter and no pass over a dict;
    :meth:`write_back` puts the counts into the ``used`` dict."""

    def __init__(self, pool: pd.DataFrame, used: dict[int, int]):
        self.rows = pool["mask_row"].to_numpy(np.int64)
        self.labels = pool["label"].to_numpy(np.int64)
        self.uniq, self.inv = np.unique(self.rows, return_inverse=True)
        self.cnt = np.array([used.get(int(r), 0) for r in self.uniq], dtype=np.int64)
        self.start = self.cnt.copy()
        self.by_label = {lab: np.flatnonzero(self.labels == lab) for lab in (1, 0)}
        self.used = used

    def pick(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Positions in the pool of ``n`` golds for one HIT; their use counts go up by one."""
        if n <= 0 or len(self.rows) == 0:
            return np.zeros(0, dtype=np.int64)
        picks = []
        n_yes = (n + int(rng.integers(2))) // 2
        for label, want in ((1, n_yes), (0, n - n_yes)):
            sub = self.by_label[label]
            if len(sub) == 0:
                continue
            key = self.cnt[self.inv[sub]] + rng.random(len(sub)) * 0.5
            picks.append(sub[np.argsort(key, kind="stable")[: min(want, len(sub))]])
        out = np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)
        if len(out) < n:  # one side of the pool ran short: fill from the other side
            rest = np.flatnonzero(~np.isin(self.rows, self.rows[out]))
            key = self.cnt[self.inv[rest]] + rng.random(len(rest)) * 0.5
            out = np.concatenate([out, rest[np.argsort(key, kind="stable")[: n - len(out)]]])
        np.add.at(self.cnt, self.inv[out], 1)
        return out

    def write_back(self) -> None:
        for i in np.flatnonzero(self.cnt != self.start):
            self.used[int(self.uniq[i])] = int(self.cnt[i])


def make_hits(asks: dict[int, np.ndarray], *, round_: int, campaign_id: str, campaign_name: str,
              cfg: CrowdSection, gold_pool: pd.DataFrame, gold_used: dict[int, int],
              rng: np.random.Generator) -> tuple[pd.DataFrame, list[HitRequest]]:
    """Shuffle this round's questions, cut them into HITs and add golds at random positions.

    ``asks`` maps a node to the mask rows asked for it; the negative keys of
    :data:`crowdprop.schema.KIND_NODE` carry audit, active and random questions.

    Returns the questions table (:data:`QUESTION_COLUMNS`) and one :class:`HitRequest` per HIT.
    """
    keys = sorted(asks)
    parts = [np.asarray(asks[k]).astype(np.int64).reshape(-1) for k in keys]
    total = sum(len(v) for v in parts)
    if total == 0:
        return pd.DataFrame(columns=QUESTION_COLUMNS), []
    arr = np.column_stack([np.repeat(np.array(keys, dtype=np.int64), [len(v) for v in parts]),
                           np.concatenate(parts)])
    arr = arr[rng.permutation(len(arr))]
    golds_per_hit = cfg.golds_per_hit if len(gold_pool) else 0
    per_hit = cfg.questions_per_hit - golds_per_hit
    hits = []
    cols: dict[str, list] = {c: [] for c in ("batch", "position", "mask_row", "node_id", "is_gold", "gold_label")}
    tokens: list[str] = []
    qn = 0
    picker = _GoldPicker(gold_pool, gold_used) if golds_per_hit else None
    reward = {}
    for b, s in enumerate(range(0, len(arr), per_hit)):
        chunk = arr[s:s + per_hit]
        g_pos = picker.pick(golds_per_hit, rng) if picker is not None else np.zeros(0, dtype=np.int64)
        n_total = len(chunk) + len(g_pos)
        # golds at random positions, in the order picked; the chunk's questions fill the rest in order
        is_gold = np.zeros(n_total, dtype=bool)
        if len(g_pos):
            is_gold[rng.choice(n_total, size=len(g_pos), replace=False)] = True
        mrow = np.empty(n_total, dtype=np.int64)
        node = np.full(n_total, -1, dtype=np.int64)
        label = np.full(n_total, -1, dtype=np.int64)
        mrow[~is_gold] = chunk[:, 1]
        node[~is_gold] = chunk[:, 0]
        if picker is not None and len(g_pos):
            mrow[is_gold] = picker.rows[g_pos]
            label[is_gold] = picker.labels[g_pos]
        token = hit_token(campaign_id, round_, b)
        qids = [f"r{round_:05d}q{k:07d}" for k in range(qn, qn + n_total)]
        qn += n_total
        qs = tuple(Question(qid, m, True, bool(lab)) if g else Question(qid, m, False, None)
                   for qid, m, g, lab in zip(qids, mrow.tolist(), is_gold.tolist(), label.tolist()))
        cols["batch"].append(np.full(n_total, b, dtype=np.int64))
        cols["position"].append(np.arange(n_total, dtype=np.int64))
        cols["mask_row"].append(mrow)
        cols["node_id"].append(node)
        cols["is_gold"].append(is_gold)
        cols["gold_label"].append(label)
        tokens.append(token)
        if n_total not in reward:
            reward[n_total] = reward_for(n_total, cfg)
        hits.append(HitRequest(token=token, round=round_, batch=b, questions=qs,
                               assignments=cfg.assignments_per_hit, reward_usd=reward[n_total],
                               campaign=campaign_name))
    if picker is not None:
        picker.write_back()
    n_q = [len(h.questions) for h in hits]
    data = {c: np.concatenate(v) for c, v in cols.items()}
    kind = np.full(qn, QuestionKind.CLUSTER.value, dtype=object)
    for node_id, name in NODE_KIND.items():
        kind[data["node_id"] == node_id] = name
    kind[data["is_gold"]] = QuestionKind.GOLD.value
    q = pd.DataFrame({"question_id": [qs_.question_id for h in hits for qs_ in h.questions],
                      "round": np.full(qn, round_, dtype=np.int64), "batch": data["batch"],
                      "position": data["position"], "mask_row": data["mask_row"], "node_id": data["node_id"],
                      "is_gold": data["is_gold"], "gold_label": data["gold_label"].astype(np.int8),
                      "token": np.repeat(np.array(tokens, dtype=object), n_q), "kind": kind},
                     columns=QUESTION_COLUMNS)
    return q, hits


def max_cost_cents(hit: HitRequest, fees: Fees) -> int:
    """Most a HIT can cost in cents: every assignment approved, fees included."""
    return fees.hit_cost_cents(hit.reward_cents, hit.assignments)
