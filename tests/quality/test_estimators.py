"""Aggregation estimators: known answers, EM fixed points, and invariants."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crowdprop.quality import DawidSkene, MajorityVote, OneCoinDawidSkene, aggregate

ESTIMATORS = [MajorityVote, OneCoinDawidSkene, DawidSkene]


def honest_and_adversarial():
    """60 tasks, truth alternating; each task is answered by two of three honest
    workers and by one adversary who is always wrong. On the tasks where
    (i // 3) % 3 == 0 the first honest worker of the pair is wrong too, so two of the
    three answers are wrong there and majority vote fails exactly on them."""
    rows, truth, mv_wrong = [], {}, set()
    pairs = [(0, 1), (1, 2), (0, 2)]
    for i in range(60):
        z = i % 2
        truth[i] = z
        a, b = pairs[i % 3]
        wrong = a if (i // 3) % 3 == 0 else None
        if wrong is not None:
            mv_wrong.add(i)
        for h in (a, b):
            rows.append((i, f"h{h}", 1 - z if h == wrong else z))
        rows.append((i, "adv", 1 - z))
    return pd.DataFrame(rows, columns=["task", "worker", "label"]), pd.Series(truth), mv_wrong


def test_mv_fails_where_two_of_three_answers_are_wrong():
    df, truth, mv_wrong = honest_and_adversarial()
    labels = MajorityVote().fit(df).labels_
    assert set(labels.index[labels != truth]) == mv_wrong
    assert len(mv_wrong) == 21


@pytest.mark.parametrize("cls", [OneCoinDawidSkene, DawidSkene])
def test_em_recovers_truth_and_finds_the_adversary(cls):
    df, truth, _ = honest_and_adversarial()
    m = cls().fit(df)
    assert m.converged_
    assert (m.labels_ == truth).all()
    assert m.skills_["adv"] < 0.1
    assert m.skills_[["h0", "h1", "h2"]].min() > 0.6
    # the adversary's error rate: honest h2 is never wrong, h0 is wrong on 7 of its 40 answers
    assert m.skills_["h2"] > m.skills_["h1"] > m.skills_["h0"]


def test_mv_hand_computed():
    df = pd.DataFrame({
        "task": ["a", "a", "a", "b", "b", "c", "c", "c", "c"],
        "worker": ["x", "y", "z", "x", "y", "x", "y", "z", "w"],
        "label": [1, 1, 0, 0, 0, 1, 0, 1, 0],
    })
    m = MajorityVote().fit(df)
    assert m.probas_.to_dict() == {"a": 2 / 3, "b": 0.0, "c": 0.5}
    assert m.labels_.to_dict() == {"a": 1, "b": 0, "c": 0}  # tie -> "no" by default
    # agreement with the labels, plus one pseudo-count each way
    assert m.skills_.to_dict() == pytest.approx({"x": (2 + 1) / (3 + 2), "y": (3 + 1) / (3 + 2),
                                                  "z": (0 + 1) / (2 + 2), "w": (1 + 1) / (1 + 2)})
    assert MajorityVote(on_tie="yes").fit(df).labels_["c"] == 1


def test_mv_random_ties_are_seeded():
    df = pd.DataFrame({"task": np.repeat(np.arange(200), 2), "worker": ["x", "y"] * 200,
                       "label": [1, 0] * 200})
    a = MajorityVote(on_tie="random", random_state=3).fit(df).labels_
    b = MajorityVote(on_tie="random", random_state=3).fit(df.iloc[::-1]).labels_
    assert (a == b).all()
    assert 60 < a.sum() < 140  # a fair coin, not a constant


def naive_onecoin_step(df, q, prior, a0=1.0, b0=1.0):
    """The docstring's M-step and E-step written with plain loops."""
    acc = {}
    for w, g in df.groupby("worker"):
        c = sum(q[t] if y == 1 else 1 - q[t] for t, y in zip(g.task, g.label))
        acc[w] = (c + a0) / (len(g) + a0 + b0)
    new_q = {}
    for t, g in df.groupby("task"):
        s = math.log(prior / (1 - prior))
        for w, y in zip(g.worker, g.label):
            s += (2 * y - 1) * math.log(acc[w] / (1 - acc[w]))
        new_q[t] = 1 / (1 + math.exp(-s))
    return acc, new_q


def naive_ds_step(df, q, prior, a0=1.0, b0=1.0):
    sens, spec = {}, {}
    for w, g in df.groupby("worker"):
        qs = [q[t] for t in g.task]
        sens[w] = (sum(qq * y for qq, y in zip(qs, g.label)) + a0) / (sum(qs) + a0 + b0)
        spec[w] = (sum((1 - qq) * (1 - y) for qq, y in zip(qs, g.label)) + a0) / (sum(1 - qq for qq in qs) + a0 + b0)
    new_q = {}
    for t, g in df.groupby("task"):
        s = math.log(prior / (1 - prior))
        for w, y in zip(g.worker, g.label):
            s += math.log(sens[w] / (1 - spec[w])) if y == 1 else math.log((1 - sens[w]) / spec[w])
        new_q[t] = 1 / (1 + math.exp(-s))
    return sens, spec, new_q


def random_answers(seed, n_tasks=40, n_workers=6, k=3):
    rng = np.random.default_rng(seed)
    z = rng.integers(0, 2, n_tasks)
    acc = rng.uniform(0.55, 0.95, n_workers)
    rows = []
    for t in range(n_tasks):
        for w in rng.choice(n_workers, size=k, replace=False):
            rows.append((f"t{t}", f"w{w}", int(z[t] if rng.random() < acc[w] else 1 - z[t])))
    return pd.DataFrame(rows, columns=["task", "worker", "label"]), z


def test_onecoin_is_a_fixed_point_of_the_stated_equations():
    df, _ = random_answers(1)
    m = OneCoinDawidSkene(tol=1e-12, max_iter=5000).fit(df)
    assert m.converged_
    q = m.probas_.to_dict()
    assert m.prior_ == pytest.approx((1 + sum(q.values())) / (2 + len(q)), abs=1e-9)
    acc, new_q = naive_onecoin_step(df, q, m.prior_)
    assert m.skills_.to_dict() == pytest.approx(acc, abs=1e-8)
    assert m.probas_.to_dict() == pytest.approx(new_q, abs=1e-8)


def test_ds_is_a_fixed_point_of_the_stated_equations():
    df, _ = random_answers(2)
    m = DawidSkene(tol=1e-12, max_iter=5000).fit(df)
    assert m.converged_
    q = m.probas_.to_dict()
    sens, spec, new_q = naive_ds_step(df, q, m.prior_)
    assert m.sensitivity_.to_dict() == pytest.approx(sens, abs=1e-8)
    assert m.specificity_.to_dict() == pytest.approx(spec, abs=1e-8)
    assert m.probas_.to_dict() == pytest.approx(new_q, abs=1e-8)
    expect_skill = {w: m.prior_ * sens[w] + (1 - m.prior_) * spec[w] for w in sens}
    assert m.skills_.to_dict() == pytest.approx(expect_skill, abs=1e-8)


def test_em_log_likelihood_matches_direct_sum():
    df, _ = random_answers(3)
    m = OneCoinDawidSkene().fit(df)
    acc, prior = m.skills_.to_dict(), m.prior_
    total = 0.0
    for _, g in df.groupby("task"):
        p1, p0 = prior, 1 - prior
        for w, y in zip(g.worker, g.label):
            p1 *= acc[w] if y == 1 else 1 - acc[w]
            p0 *= acc[w] if y == 0 else 1 - acc[w]
        total += math.log(p1 + p0)
    assert m.log_likelihood_ == pytest.approx(total, rel=1e-9)


@pytest.mark.parametrize("cls", [OneCoinDawidSkene, DawidSkene])
def test_gold_anchors_em_when_most_workers_are_adversarial(cls):
    # one honest worker and two who always answer wrong: without gold the flipped
    # labeling explains the data as well, and MV initialisation picks it
    rng = np.random.default_rng(0)
    z = rng.integers(0, 2, 50)
    rows = [(t, w, int(z[t] if w == "honest" else 1 - z[t])) for t in range(50) for w in ("honest", "bad1", "bad2")]
    df = pd.DataFrame(rows, columns=["task", "worker", "label"])
    truth = pd.Series(z, index=range(50))
    blind = cls().fit(df)
    assert (blind.labels_ != truth).all()
    gold = pd.DataFrame({"task": [0, 1, 2, 3, 4, 5], "label": z[:6]})
    m = cls().fit(df, gold=gold)
    assert (m.labels_ == truth).all()
    assert m.skills_["honest"] > 0.9 and m.skills_["bad1"] < 0.1
    assert (m.probas_.loc[gold.task].to_numpy() == gold.label.to_numpy()).all()


def test_gold_not_answered_is_ignored_and_prior_excludes_golds():
    df = pd.DataFrame({"task": [1, 1, 2, 2], "worker": ["a", "b", "a", "b"], "label": [1, 1, 1, 1]})
    m = OneCoinDawidSkene().fit(df, gold=pd.DataFrame({"task": [2, 99], "label": [1, 0]}))
    assert list(m.labels_.index) == [1, 2]
    assert m.probas_[2] == 1.0
    assert m.prior_ == pytest.approx((1 + m.probas_[1]) / 3)


def test_bad_inputs_raise_valueerror():
    ok = pd.DataFrame({"task": [1], "worker": ["a"], "label": [1]})
    with pytest.raises(ValueError, match="missing column"):
        OneCoinDawidSkene().fit(ok.drop(columns="worker"))
    with pytest.raises(ValueError, match="0 or 1"):
        DawidSkene().fit(ok.assign(label=[2]))
    with pytest.raises(ValueError, match="empty"):
        MajorityVote().fit(ok.iloc[:0])
    with pytest.raises(ValueError, match="two different labels"):
        OneCoinDawidSkene().fit(ok, gold=pd.DataFrame({"task": [1, 1], "label": [0, 1]}))
    with pytest.raises(ValueError, match="skill_prior"):
        OneCoinDawidSkene(skill_prior=(0, 1)).fit(ok)
    with pytest.raises(ValueError, match="on_tie"):
        MajorityVote(on_tie="maybe").fit(ok)


def test_aggregate_returns_one_row_per_task_sorted():
    df, truth, _ = honest_and_adversarial()
    out = aggregate(df.sample(frac=1, random_state=1), method="ds")
    assert list(out.columns) == ["task", "label", "probability"]
    assert out.task.tolist() == list(range(60))
    assert (out.label.to_numpy() == truth.to_numpy()).all()
    with pytest.raises(ValueError, match="unknown method"):
        aggregate(df, method="wawa")


# --- invariants on random tables --------------------------------------------------

@st.composite
def answer_tables(draw):
    n_tasks = draw(st.integers(1, 8))
    n_workers = draw(st.integers(1, 5))
    pairs = draw(st.lists(st.tuples(st.integers(0, n_tasks - 1), st.integers(0, n_workers - 1)),
                          min_size=1, max_size=30, unique=True))
    labels = draw(st.lists(st.integers(0, 1), min_size=len(pairs), max_size=len(pairs)))
    return pd.DataFrame({"task": [t for t, _ in pairs], "worker": [f"w{w}" for _, w in pairs],
                         "label": labels})


PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decided(p):
    return np.abs(p - 0.5) > 1e-6


@PROPS
@given(answer_tables(), st.sampled_from(ESTIMATORS))
def test_outputs_in_range_and_labels_follow_probas(df, cls):
    m = cls().fit(df)
    assert ((m.skills_ > 0) & (m.skills_ < 1)).all()
    assert ((m.probas_ >= 0) & (m.probas_ <= 1)).all()
    p = m.probas_.to_numpy()
    assert (m.labels_.to_numpy()[p > 0.5 + 1e-12] == 1).all()
    assert (m.labels_.to_numpy()[p < 0.5 - 1e-12] == 0).all()
    assert sorted(m.labels_.index) == sorted(df.task.unique())
    assert sorted(m.skills_.index) == sorted(df.worker.unique())


@PROPS
@given(answer_tables(), st.sampled_from(ESTIMATORS), st.randoms(use_true_random=False))
def test_invariant_to_row_order(df, cls, rnd):
    perm = list(range(len(df)))
    rnd.shuffle(perm)
    a = cls().fit(df)
    b = cls().fit(df.iloc[perm].reset_index(drop=True))
    np.testing.assert_allclose(b.probas_.loc[a.probas_.index], a.probas_, atol=1e-7)
    np.testing.assert_allclose(b.skills_.loc[a.skills_.index], a.skills_, atol=1e-7)
    p = a.probas_.to_numpy()
    assert (a.labels_[decided(p)] == b.labels_.loc[a.labels_.index][decided(p)]).all()


@PROPS
@given(answer_tables(), st.sampled_from(ESTIMATORS))
def test_invariant_to_renaming_workers(df, cls):
    # reversed sort order: w0 -> zz9, w4 -> zz5
    rename = {f"w{i}": f"zz{9 - i}" for i in range(5)}
    a = cls().fit(df)
    b = cls().fit(df.assign(worker=df.worker.map(rename)))
    np.testing.assert_allclose(b.probas_.loc[a.probas_.index], a.probas_, atol=1e-7)
    np.testing.assert_allclose(b.skills_.loc[[rename[w] for w in a.skills_.index]].to_numpy(),
                               a.skills_.to_numpy(), atol=1e-7)


@PROPS
@given(answer_tables(), st.sampled_from(ESTIMATORS), st.data())
def test_golds_are_clamped(df, cls, data):
    tasks = sorted(df.task.unique())
    gold_tasks = data.draw(st.lists(st.sampled_from(tasks), unique=True, min_size=1))
    gold_labels = data.draw(st.lists(st.integers(0, 1), min_size=len(gold_tasks), max_size=len(gold_tasks)))
    m = cls().fit(df, gold=pd.DataFrame({"task": gold_tasks, "label": gold_labels}))
    assert m.probas_.loc[gold_tasks].tolist() == [float(x) for x in gold_labels]
    assert m.labels_.loc[gold_tasks].tolist() == gold_labels
    assert ((m.skills_ > 0) & (m.skills_ < 1)).all()
