"""The simulated crowd answers a HIT's questions at once, with the same answers as one by one.

Every simulated answer is the first draw of a generator seeded by a hash of (seed, worker,
question key): ``reference_answer`` below, the code ``WorkerPool.answer`` was. ``WorkerPool.answers``
(which ``answer`` now calls) computes those draws for many keys without building a generator each
(``first_random``); replays must give the answers, and so the numbers, they gave before, so it is
checked against ``default_rng`` bit for bit and against ``reference_answer`` for every kind of worker.
"""
from __future__ import annotations

import numpy as np

from crowdprop.config import SimulationSection
from crowdprop.crowd.base import HitRequest, Question, content_key
from crowdprop.crowd.simulated import SimulatedCrowd
from crowdprop.replay.workers import WorkerPool, _key_seed, first_random, rng_for


def reference_answer(pool: WorkerPool, worker: int, key: str, truth: bool) -> bool:
    """One answer as the simulated workers gave it before answers were drawn in batches."""
    rng = rng_for("answer", pool.seed, pool.worker_ids[worker], key)
    if pool.kind[worker] == "spammer":
        return bool(rng.random() < 0.5)
    return bool(truth if rng.random() < pool.accuracy[worker] else not truth)


def test_first_random_is_default_rngs_first_draw_bit_for_bit():
    rs = np.random.default_rng(7)
    edges = np.array([0, 1, 2, 2**31, 2**32 - 1, 2**32, 2**32 + 1, 2**63, 2**64 - 1], dtype=np.uint64)
    seeds = np.concatenate([edges, rs.integers(0, 2**64 - 1, 4000, dtype=np.uint64, endpoint=True),
                            rs.integers(0, 2**32, 500, dtype=np.uint64),
                            np.array([_key_seed("answer", 0, "SIMW00000003", f"k:{i}") for i in range(500)],
                                     dtype=np.uint64)])
    want = np.array([np.random.default_rng(int(s)).random() for s in seeds])
    got = first_random(seeds)
    assert got.dtype == np.float64 and got.shape == want.shape
    assert np.array_equal(got.view(np.uint64), want.view(np.uint64))  # the same bits, not just close
    assert first_random(np.array([], dtype=np.uint64)).shape == (0,)


def _pool() -> WorkerPool:
    cfg = SimulationSection(workers=40, accuracy=0.8, accuracy_spread=0.1, spammer_share=0.25, sloppy_share=0.25)
    return WorkerPool.build(cfg, seed=11)


def test_answers_are_the_reference_answers_for_every_kind_of_worker():
    pool = _pool()
    assert {"ordinary", "spammer", "sloppy"} <= set(pool.kind)
    rs = np.random.default_rng(3)
    keys = [f"hit{rs.integers(10**9)}:q{i}" for i in range(120)]
    truth = rs.random(len(keys)) < 0.6
    n_yes = 0
    for w in range(len(pool)):
        got = pool.answers(w, keys, truth)
        want = [reference_answer(pool, w, k, bool(t)) for k, t in zip(keys, truth)]
        assert got == want
        assert [pool.answer(w, k, bool(t)) for k, t in zip(keys[:5], truth[:5])] == want[:5]
        assert all(type(x) is bool for x in got)
        n_yes += sum(got)
    assert 0 < n_yes < len(pool) * len(keys)
    assert pool.answers(0, [], np.zeros(0, bool)) == []


def test_a_simulated_hit_gets_the_answers_it_got_question_by_question():
    pool = _pool()
    truth = np.random.default_rng(5).random(300) < 0.5
    crowd = SimulatedCrowd(truth, pool, blocked={pool.worker_ids[2]})
    qs = tuple(Question(f"q{i}", mask_row=int(r)) for i, r in enumerate(np.random.default_rng(6).permutation(300)[:50]))
    hit_id = crowd.publish(HitRequest("tok-a", 1, 0, qs, assignments=5, reward_usd=0.05))
    got = crowd.poll([hit_id])
    assert len(got) == 5
    key = content_key([q.question_id for q in qs])
    for a in got:
        w = pool.index(a.worker_id)
        assert list(a.answers) == [q.question_id for q in qs]  # in the HIT's order
        assert a.answers == {q.question_id: reference_answer(pool, w, f"{key}:{q.question_id}",
                                                             bool(truth[q.mask_row])) for q in qs}
