"""Beta posterior intervals and gold scores."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import beta

from crowdprop.quality import beta_interval, gold_scores


def test_uniform_prior_without_data_is_the_uniform_interval():
    mean, lo, hi = beta_interval(0, 0)
    assert (mean, lo, hi) == pytest.approx((0.5, 0.025, 0.975))


@pytest.mark.parametrize("n", [1, 4, 19])
def test_all_successes_closed_form(n):
    # Beta(n + 1, 1) has CDF x ** (n + 1)
    mean, lo, hi = beta_interval(n, 0, credible=0.9)
    assert mean == pytest.approx((n + 1) / (n + 2))
    assert lo == pytest.approx(0.05 ** (1 / (n + 1)))
    assert hi == pytest.approx(0.95 ** (1 / (n + 1)))


def test_vectorized_against_scipy_quantiles():
    yes = np.array([0, 3, 8, 40])
    no = np.array([5, 3, 2, 1])
    mean, lo, hi = beta_interval(yes, no, prior_a=2.0, prior_b=0.5, credible=0.8)
    a, b = yes + 2.0, no + 0.5
    np.testing.assert_allclose(mean, a / (a + b))
    np.testing.assert_allclose(lo, beta.ppf(0.1, a, b))
    np.testing.assert_allclose(hi, beta.ppf(0.9, a, b))
    assert mean.shape == lo.shape == hi.shape == (4,)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 200), st.integers(0, 200), st.floats(0.5, 0.99))
def test_interval_contains_mean_and_narrows_with_more_data(yes, no, c):
    mean, lo, hi = beta_interval(yes, no, credible=c)
    assert 0 <= lo <= mean <= hi <= 1
    _, lo2, hi2 = beta_interval(2 * yes + 1, 2 * no + 1, credible=c)
    assert hi2 - lo2 < hi - lo


def test_bad_arguments():
    with pytest.raises(ValueError):
        beta_interval(1, 1, credible=1.0)
    with pytest.raises(ValueError):
        beta_interval(-1, 1)
    with pytest.raises(ValueError):
        beta_interval(1, 1, prior_a=0)


def test_gold_scores_hand_computed():
    answers = pd.DataFrame({
        "task": ["g1", "g2", "g3", "m1", "g1", "g2", "m1", "m2"],
        "worker": ["ann", "ann", "ann", "ann", "bob", "bob", "bob", "cy"],
        "label": [1, 0, 1, 1, 0, 0, 1, 1],
    })
    gold = pd.DataFrame({"task": ["g1", "g2", "g3"], "label": [1, 0, 0]})
    s = gold_scores(answers, gold)
    assert list(s.columns) == ["worker", "n_gold", "n_correct", "accuracy_mean", "accuracy_lo", "accuracy_hi"]
    assert s.worker.tolist() == ["ann", "bob", "cy"]
    assert s.n_gold.tolist() == [3, 2, 0]
    assert s.n_correct.tolist() == [2, 1, 0]
    assert s.accuracy_mean.tolist() == pytest.approx([3 / 5, 2 / 4, 1 / 2])
    assert s.accuracy_lo.tolist() == pytest.approx([beta.ppf(0.025, 3, 2), beta.ppf(0.025, 2, 2), 0.025])
    assert s.accuracy_hi.tolist() == pytest.approx([beta.ppf(0.975, 3, 2), beta.ppf(0.975, 2, 2), 0.975])
